//! What the VM benches share: their own VM prefix, key and settings, apart from a user's.

use nixtest::ssh;
use nixtest::vm::VmSettings;
use russh::keys::PrivateKey;
use std::sync::Arc;

/// Settings for VMs named `nixtest-bench-*`, with a key kept in /var/cache/nixtest-bench.
pub fn bench_vm() -> (VmSettings, Arc<PrivateKey>, String) {
    let home = std::path::PathBuf::from("/var/cache/nixtest-bench");
    let (key, public) = ssh::load_or_create_key(&home.join("ssh")).unwrap();
    let settings = VmSettings {
        uri: std::env::var("NIXTEST_LIBVIRT_URI").unwrap_or_else(|_| "qemu:///system".into()),
        memory_mib: 512,
        disk_bytes: 4 << 30,
        vcpus: 1,
        dir: "/var/lib/nixtest".into(),
        prefix: "nixtest-bench".into(),
        open_network: false,
    };
    (settings, Arc::new(key), public)
}
