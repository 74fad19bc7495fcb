//! After the phases pass: the guest's writes reach its disk, the VM boots the installed
//! system from the profile's root device, and each of the profile's checks runs there.

use crate::guest::{Guest, GuestError};
use crate::profile::Profile;
use crate::run_event::{Emitter, Status, What};
use crate::vm::VmError;
use std::time::Instant;

/// Restarts the machine into the installed system (the VM manager, or a test's stand-in).
pub trait Reboot {
    fn reboot_into(&mut self, root_device: &str) -> Result<(), VmError>;
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("cannot reboot into the installed system on {root}: {source}")]
    Reboot { root: String, source: VmError },
    #[error("verification: {0}")]
    Check(GuestError),
}

/// Reboots into `profile`'s installed root and runs its checks; true when all pass.
pub async fn reboot_and_verify<G: Guest>(
    guest: &mut G,
    machine: &mut dyn Reboot,
    profile: &Profile,
    emitter: &mut Emitter<'_>,
) -> Result<bool, VerifyError> {
    emitter.emit(What::Reboot);
    let t = Instant::now();
    // The guest's page cache must reach the disk before the power cycle.
    guest.exec("sync; umount -R /mnt 2>/dev/null; sync").await?;
    machine
        .reboot_into(&profile.vm.root)
        .map_err(|source| VerifyError::Reboot {
            root: profile.vm.root.clone(),
            source,
        })?;
    guest.rebooted();
    let mut all = true;
    for c in &profile.checks {
        let out = guest.exec(&c.run).await.map_err(VerifyError::Check)?;
        let status = if out.status == 0 {
            Status::Passed
        } else {
            all = false;
            Status::Failed
        };
        emitter.emit(What::CheckDone {
            check: c.name.clone(),
            status,
            output: format!("{}{}", out.stdout_text(), out.stderr_text())
                .trim()
                .to_string(),
        });
    }
    emitter.emit(What::Metric {
        name: "reboot_to_ssh_ms".into(),
        value: t.elapsed().as_millis() as f64,
    });
    Ok(all)
}
