//! Does KVM really work? `/dev/kvm` can exist and hang (as on these machines), so the answer
//! comes from the CPU flags and a probe with a deadline, never from the device node alone.

use std::sync::mpsc;
use std::time::Duration;

/// How the VMs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation: libvirt domain type `kvm`.
    Kvm,
    /// QEMU's software emulation (TCG): domain type `qemu`.
    Tcg,
}

impl Accel {
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

/// Why KVM is not used, or that it is.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;

/// Checks the CPU flags, then opens `/dev/kvm` and creates a VM in a thread that must answer
/// within `deadline`. `NIXTEST_ACCEL=tcg|kvm` forces the answer.
pub fn detect(deadline: Duration) -> AccelChoice {
    match std::env::var("NIXTEST_ACCEL").as_deref() {
        Ok("tcg") => return choice(Accel::Tcg, "NIXTEST_ACCEL=tcg"),
        Ok("kvm") => return choice(Accel::Kvm, "NIXTEST_ACCEL=kvm"),
        _ => {}
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags_ok = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !flags_ok {
        return choice(Accel::Tcg, "the CPU shows no vmx/svm flag");
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        return choice(Accel::Tcg, "/dev/kvm does not exist");
    }
    let (tx, rx) = mpsc::channel();
    // The probe may block forever in the kernel; the thread is left behind if it does.
    let spawned = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(probe());
        });
    if spawned.is_err() {
        return choice(Accel::Tcg, "cannot start the KVM probe thread");
    }
    match rx.recv_timeout(deadline) {
        Ok(Ok(())) => choice(Accel::Kvm, "KVM answered the probe"),
        Ok(Err(e)) => choice(Accel::Tcg, &format!("KVM probe failed: {e}")),
        Err(_) => choice(
            Accel::Tcg,
            &format!("/dev/kvm did not answer within {deadline:?}"),
        ),
    }
}

fn choice(accel: Accel, reason: &str) -> AccelChoice {
    AccelChoice {
        accel,
        reason: reason.to_string(),
    }
}

fn probe() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    // SAFETY: plain ioctls on a file descriptor we own; no memory is passed.
    let version = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != 12 {
        return Err(format!("unexpected KVM API version {version}"));
    }
    // SAFETY: as above; the returned descriptor is closed right away.
    let vm = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "KVM_CREATE_VM failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vm` is a descriptor the kernel just gave us.
    unsafe { libc::close(vm) };
    Ok(())
}
