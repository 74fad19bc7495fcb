//! VM costs on this machine: start to SSH-ready (run VM on an overlay), revert to pristine,
//! the guest image build cold and cached, and the image's size. Needs root and libvirtd, like
//! `nixtest setup`. `cargo bench -p nixtest --bench vm` (`-- --cold` also times a cold build).

mod common;

use nixtest::ssh::{SshSession, SshTarget};
use nixtest::vm::manager::RunOverrides;
use nixtest::vm::{GuestImage, VmManager};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64
}

fn main() {
    let cold = std::env::args().any(|a| a == "--cold");
    let (settings, key, public) = common::bench_vm();
    let image = GuestImage::locate(&settings.dir, &public);
    if cold || !image.exists() {
        let t = Instant::now();
        image.build(&public, |_| {}).unwrap();
        println!(
            "image build (cold):      {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let cached = GuestImage::locate(&settings.dir, &public);
    assert!(cached.exists());
    cached.verify().unwrap();
    println!(
        "image lookup (cached):   {:.0} ms (key + verify)",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "image size:              root.qcow2 {:.0} MiB, vmlinuz {:.1} MiB, initrd {:.1} MiB",
        mib(&image.root()),
        mib(&image.kernel()),
        mib(&image.initrd())
    );

    let m = VmManager::connect(settings).unwrap();
    println!(
        "accelerator:             {} ({})",
        m.accel.accel.domain_type(),
        m.accel.reason
    );
    m.define_base(&image).unwrap();
    if !m.has_pristine() {
        m.snapshot_pristine().unwrap();
    }
    let reverts: Vec<Duration> = (0..10).map(|_| m.revert_pristine().unwrap()).collect();
    println!(
        "revert to pristine:      {:.0} ms (median of 10, shut-off base)",
        median(reverts).as_secs_f64() * 1e3
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut boots = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let vm = m
            .create_run_vm(&image, &format!("boot{i}"), &RunOverrides::default())
            .unwrap();
        m.start(&vm.name).unwrap();
        let target = SshTarget {
            addr: vm.ssh_addr(),
            user: "root".into(),
            key: key.clone(),
            unresponsive: nixtest::deadlines::Deadlines::default().unresponsive,
        };
        rt.block_on(async {
            let mut s = SshSession::wait_ready(&target, Duration::from_secs(120))
                .await
                .unwrap();
            s.exec("true").await.unwrap();
            s.close().await;
        });
        boots.push(t.elapsed());
        vm.remove();
    }
    println!(
        "start to SSH-ready:      {:.1} s median of 3 ({}), overlay + define + boot + first command",
        median(boots.clone()).as_secs_f64(),
        boots
            .iter()
            .map(|b| format!("{:.1}", b.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
