//! How long nixtest waits for each thing it waits for. Every wait has a deadline, each can be
//! changed (environment, then nixtest.toml's `[deadlines]`, then these defaults), and a wait
//! that reaches its deadline says what it waited for and which setting sets it.

use crate::settings::{Settings, SettingsError};
use serde::Deserialize;
use std::time::Duration;

/// The `[deadlines]` section of nixtest.toml: durations such as `"90s"`, `"2m"`, `"1h"`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlinesFile {
    pub boot: Option<String>,
    pub reconnect: Option<String>,
    pub hang_after: Option<String>,
    pub phase: Option<String>,
    pub command: Option<String>,
    pub reboot: Option<String>,
    pub unresponsive: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From starting a VM to its SSH answering (NIXTEST_BOOT_TIMEOUT, `deadlines.boot`).
    pub boot: Duration,
    /// For a lost SSH connection to come back (NIXTEST_RECONNECT_TIMEOUT).
    pub reconnect: Duration,
    /// A phase that prints nothing this long is checked in the guest: if none of its
    /// processes uses CPU, disk or network, it hangs (NIXTEST_HANG_AFTER; 0 turns it off).
    pub hang_after: Duration,
    /// The longest a phase may run (NIXTEST_PHASE_TIMEOUT; 0: no limit).
    pub phase: Duration,
    /// The longest a healer's command may run in the guest (NIXTEST_COMMAND_TIMEOUT).
    pub command: Duration,
    /// From rebooting into the installed system to its SSH answering (NIXTEST_REBOOT_TIMEOUT).
    pub reboot: Duration,
    /// How long an open SSH connection may go unanswered before it counts as lost
    /// (NIXTEST_UNRESPONSIVE_TIMEOUT). A guest starved by memory pressure answers nothing
    /// for minutes under TCG and then goes on: dropping the connection then only adds a
    /// reconnect to the time before the host sees the OOM killer act.
    pub unresponsive: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            boot: Duration::from_secs(120),
            reconnect: Duration::from_secs(90),
            // Long enough for a build step that thinks without printing, short enough that
            // an unattended install does not wait all night.
            hang_after: Duration::from_secs(120),
            phase: Duration::from_secs(4 * 3600),
            command: Duration::from_secs(300),
            reboot: Duration::from_secs(120),
            unresponsive: Duration::from_secs(300),
        }
    }
}

/// A deadline's environment variable and nixtest.toml key, for messages.
pub const BOOT: &str = "NIXTEST_BOOT_TIMEOUT (deadlines.boot)";
pub const RECONNECT: &str = "NIXTEST_RECONNECT_TIMEOUT (deadlines.reconnect)";
pub const HANG_AFTER: &str = "NIXTEST_HANG_AFTER (deadlines.hang_after)";
pub const PHASE: &str = "NIXTEST_PHASE_TIMEOUT (deadlines.phase)";
pub const COMMAND: &str = "NIXTEST_COMMAND_TIMEOUT (deadlines.command)";
pub const REBOOT: &str = "NIXTEST_REBOOT_TIMEOUT (deadlines.reboot)";
pub const UNRESPONSIVE: &str = "NIXTEST_UNRESPONSIVE_TIMEOUT (deadlines.unresponsive)";

/// Extra time the host gives a phase past its deadline for the guest to report and stop it,
/// before it stops waiting for the guest.
pub const PHASE_GRACE: Duration = Duration::from_secs(120);

impl Deadlines {
    pub fn resolve(settings: &Settings) -> Result<Self, SettingsError> {
        let f = &settings.file.deadlines;
        let d = Deadlines::default();
        let get = |env: &str, key: &str, v: &Option<String>, default: Duration, zero_ok: bool| {
            match settings.get(env, key, v.clone()) {
                None => Ok(default),
                Some(s) => match parse(&s.value) {
                    Some(t) if zero_ok || !t.is_zero() => Ok(t),
                    _ => Err(s.invalid(if zero_ok {
                        "is not a duration such as 90s, 5m or 0 (off)"
                    } else {
                        "is not a duration above zero such as 90s or 5m"
                    })),
                },
            }
        };
        Ok(Deadlines {
            boot: get(
                "NIXTEST_BOOT_TIMEOUT",
                "deadlines.boot",
                &f.boot,
                d.boot,
                false,
            )?,
            reconnect: get(
                "NIXTEST_RECONNECT_TIMEOUT",
                "deadlines.reconnect",
                &f.reconnect,
                d.reconnect,
                false,
            )?,
            hang_after: get(
                "NIXTEST_HANG_AFTER",
                "deadlines.hang_after",
                &f.hang_after,
                d.hang_after,
                true,
            )?,
            phase: get(
                "NIXTEST_PHASE_TIMEOUT",
                "deadlines.phase",
                &f.phase,
                d.phase,
                true,
            )?,
            command: get(
                "NIXTEST_COMMAND_TIMEOUT",
                "deadlines.command",
                &f.command,
                d.command,
                false,
            )?,
            reboot: get(
                "NIXTEST_REBOOT_TIMEOUT",
                "deadlines.reboot",
                &f.reboot,
                d.reboot,
                false,
            )?,
            unresponsive: get(
                "NIXTEST_UNRESPONSIVE_TIMEOUT",
                "deadlines.unresponsive",
                &f.unresponsive,
                d.unresponsive,
                false,
            )?,
        })
    }
}

/// `90`, `90s`, `2m`, `1h 30m`: whole seconds at least; a bare number is seconds.
fn parse(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn durations_come_from_the_file_with_their_origin_when_wrong() {
        let s = Settings::parse(
            "[deadlines]\nhang_after = \"45s\"\nphase = \"0\"\nboot = \"3m\"\nunresponsive = \"10m\"\n",
            Path::new("/c/nixtest.toml"),
        )
        .unwrap();
        let d = Deadlines::resolve(&s).unwrap();
        assert_eq!(d.hang_after, Duration::from_secs(45));
        assert_eq!(d.phase, Duration::ZERO);
        assert_eq!(d.boot, Duration::from_secs(180));
        assert_eq!(d.unresponsive, Duration::from_secs(600));
        assert_eq!(d.command, Deadlines::default().command);
        let bad = Settings::parse("[deadlines]\nboot = \"0\"\n", Path::new("/c/n.toml")).unwrap();
        let e = Deadlines::resolve(&bad).unwrap_err().to_string();
        assert!(e.contains("deadlines.boot in /c/n.toml"), "{e}");
        let bad = Settings::parse("[deadlines]\nphase = \"soon\"\n", Path::new("n.toml")).unwrap();
        assert!(Deadlines::resolve(&bad).is_err());
        assert!(Settings::parse("[deadlines]\nforever = \"1s\"\n", Path::new("n.toml")).is_err());
    }
}
