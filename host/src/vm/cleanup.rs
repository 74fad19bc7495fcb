//! What a run must remove when it ends, however it ends: a registry of live VMs that the
//! signal handler (SIGINT, SIGTERM, SIGHUP) tears down before the process exits.

use std::path::PathBuf;
use std::sync::{Mutex, Once};

#[derive(Debug, Clone)]
pub struct Resource {
    pub uri: String,
    pub domain: String,
    pub dir: PathBuf,
}

static LIVE: Mutex<Vec<Resource>> = Mutex::new(Vec::new());

pub fn register(r: Resource) {
    install_signal_handler();
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(r);
}

pub fn unregister(domain: &str) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|r| r.domain != domain);
}

/// Destroys and undefines the domain and removes its folder; errors are only logged (the
/// domain may already be gone).
pub fn remove(r: &Resource) {
    match virt::connect::Connect::open(Some(&r.uri)) {
        Ok(conn) => {
            if let Ok(dom) = virt::domain::Domain::lookup_by_name(&conn, &r.domain) {
                if dom.is_active().unwrap_or(false) {
                    let _ = dom.destroy();
                }
                let _ = dom.undefine_flags(
                    virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                        | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM,
                );
            }
        }
        Err(e) => tracing::warn!("cannot reach libvirt to remove {}: {e}", r.domain),
    }
    if let Err(e) = std::fs::remove_dir_all(&r.dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", r.dir.display());
    }
}

fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            tracing::warn!(
                "cannot install the signal handler; an interrupted run may leave VMs behind"
            );
            return;
        };
        std::thread::Builder::new()
            .name("nixtest-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let live: Vec<Resource> =
                        std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
                    if !live.is_empty() {
                        eprintln!("nixtest: interrupted; removing {} VM(s)", live.len());
                    }
                    for r in &live {
                        remove(r);
                    }
                    std::process::exit(128 + sig);
                }
            })
            .ok();
    });
}
