//! nix-errors: the failures of Nix and of the installer's own steps that no healer can fix
//! by itself, reported so that a run fails with the right cause.
//!
//! Rules anchor on the tool that speaks and on its wording (Nix's several generations of
//! messages, GRUB, systemd-boot, mount, ssh), never on a bare phrase: `No such file or
//! directory` alone is harmless, `Failed to create EFI Boot variable entry` is not.

use nixtest_plugin_sdk::prelude::*;
use std::sync::LazyLock;

/// Quotes as Nix prints them: ASCII, or the typographic ones of older versions.
macro_rules! q {
    ($name:literal) => {
        concat!("['‘`](?P<", $name, ">[^'’`]+)['’`]")
    };
}

const RULES: &[Rule] = &[
    // hash-mismatch, every Nix generation's wording
    Rule::error(
        "hash-mismatch",
        concat!(r"hash mismatch in fixed-output derivation ", q!("p")),
        "hash mismatch in fixed-output derivation $p",
    ),
    Rule::error(
        "hash-mismatch",
        concat!(r"hash mismatch importing path ", q!("p")),
        "hash mismatch importing $p",
    ),
    Rule::error(
        "hash-mismatch",
        concat!(
            r"fixed-output derivation produced path ",
            q!("p"),
            r" with \S+ hash .*instead of the expected hash"
        ),
        "fixed-output derivation $p has an unexpected hash",
    ),
    Rule::error(
        "hash-mismatch",
        r"(?i)\bNAR hash mismatch\b|\bhash mismatch\b.*\b(?:path|derivation|input|file)\b",
        "hash mismatch",
    ),
    // eval-error
    Rule::error(
        "eval-error",
        r"infinite recursion encountered",
        "infinite recursion during evaluation",
    ),
    Rule::error(
        "eval-error",
        concat!(r"^error: attribute ", q!("a"), r" missing"),
        "attribute $a missing",
    ),
    Rule::error(
        "eval-error",
        concat!(r"^error: undefined variable ", q!("v")),
        "undefined variable $v",
    ),
    Rule::error(
        "eval-error",
        concat!(r"^error: The option ", q!("o"), r" does not exist"),
        "option $o does not exist",
    ),
    Rule::error(
        "eval-error",
        r"^error: syntax error, unexpected",
        "syntax error in a Nix expression",
    ),
    Rule::error(
        "eval-error",
        r"^error: (?:value is .* while .* was expected|cannot coerce |expected a set but found|function .* called (?:without required|with unexpected) argument|A definition for option .* is not of type)",
        "type error during evaluation",
    ),
    Rule::error(
        "eval-error",
        r"^error: assertion .* failed",
        "assertion failed during evaluation",
    ),
    Rule::error(
        "eval-error",
        concat!(
            r"^error: file ",
            q!("f"),
            r" was not found in the Nix search path"
        ),
        "$f not found in the Nix search path",
    ),
    Rule::error(
        "eval-error",
        r"^error: flake .* does not provide attribute",
        "flake does not provide the attribute",
    ),
    Rule::error(
        "eval-error",
        r"^error: (?:… )?while evaluating\b",
        "evaluation error",
    ),
    Rule::error(
        "eval-error",
        r"^\s*… while (?:evaluating|calling)\b",
        "evaluation error",
    ),
    // build-failure
    Rule::error(
        "build-failure",
        concat!(
            r"builder for ",
            q!("d"),
            r" failed with exit code (?P<c>\d+)"
        ),
        "build of $d failed with exit code $c",
    ),
    Rule::error(
        "build-failure",
        concat!(r"Cannot build ", q!("d")),
        "build of $d failed",
    ),
    Rule::error(
        "build-failure",
        concat!(r"^error: build of ", q!("d"), r".* failed"),
        "build of $d failed",
    ),
    Rule::error(
        "build-failure",
        r"do not know how to unpack source archive (?P<s>\S+)",
        "cannot unpack source archive $s",
    ),
    Rule::error(
        "build-failure",
        concat!(
            r"\d+ dependencies of derivation ",
            q!("d"),
            r" failed to build"
        ),
        "dependencies of $d failed to build",
    ),
    Rule::error(
        "build-failure",
        concat!(
            r"cannot build derivation ",
            q!("d"),
            r": \d+ dependencies couldn't be built"
        ),
        "dependencies of $d could not be built",
    ),
    Rule::error(
        "build-failure",
        r"^\s*For full logs, run:",
        "a derivation failed to build",
    ),
    Rule::error(
        "build-failure",
        r"^\s*(?:>\s*)?make(?:\[\d+\])?: \*\*\* .*Error \d+\s*$",
        "make failed inside a build",
    ),
    // bootloader
    Rule::error(
        "bootloader",
        r"Failed to create EFI Boot variable entry",
        "cannot create the EFI boot entry (EFI variables unavailable?)",
    ),
    Rule::error(
        "bootloader",
        r"^Died at \S*install-grub\.pl line \d+",
        "the GRUB install script died",
    ),
    Rule::error(
        "bootloader",
        r"(?:grub-install|grub-probe|grub-mkconfig|grub2-install)(?:\.\w+)?: error: (?P<m>.*)",
        "GRUB: $m",
    ),
    Rule::error(
        "bootloader",
        r"installation of GRUB on (?P<d>\S+) failed",
        "installing GRUB on $d failed",
    ),
    Rule::error(
        "bootloader",
        r"(?:efibootmgr|bootctl): (?:error|[Ff]ailed|cannot)",
        "the boot loader tool failed",
    ),
    Rule::error(
        "bootloader",
        r"CalledProcessError: Command .*(?:bootctl|install-grub|efibootmgr|systemd-boot)",
        "installing the boot loader failed",
    ),
    // A Python traceback through the boot loader installer: it failed, whatever the last line.
    Rule::error(
        "bootloader",
        r#"File "[^"]*(?:systemd-boot-builder|install-grub|install-systemd-boot)[^"]*", line \d+"#,
        "installing the boot loader failed",
    ),
    Rule::error(
        "bootloader",
        r"File system .* is not a FAT EFI System Partition",
        "/boot is not an EFI System Partition",
    ),
    // mount-fs
    Rule::error(
        "mount-fs",
        concat!(r"mount: .*unknown filesystem type ", q!("fs")),
        "unknown filesystem type $fs",
    ),
    Rule::error(
        "mount-fs",
        r"mount: .*(?:wrong fs type, bad option, bad superblock|can't read superblock|mount point does not exist|mount\(2\) system call failed)",
        "mount failed",
    ),
    Rule::error(
        "mount-fs",
        r"modprobe: FATAL: Module (?P<m>bcachefs|zfs|btrfs|xfs|ext[234]|vfat|fat|f2fs|ntfs3?|exfat|nilfs2|jfs|squashfs|overlay|nfs|cifs|fuse) not found",
        "filesystem module $m not found",
    ),
    Rule::error(
        "mount-fs",
        r"Failed to mount (?P<w>\S.*?)\.?$",
        "failed to mount $w",
    ),
    Rule::error(
        "mount-fs",
        r"VFS: Can't find (?P<fs>\w+) filesystem",
        "no $fs filesystem where one was expected",
    ),
    Rule::error(
        "mount-fs",
        r"(?:fsck|e2fsck)\S*: .*(?:Bad magic number|Superblock invalid|bad superblock)",
        "filesystem check found no valid superblock",
    ),
    // readonly-fs
    Rule::error(
        "readonly-fs",
        r"(?i)read-only file ?system",
        "a filesystem the install writes to is read-only",
    ),
    Rule::error(
        "readonly-fs",
        r"remounting filesystem read-only",
        "the kernel remounted a filesystem read-only",
    ),
    // ssh
    Rule::error(
        "ssh",
        r"ssh: connect to host (?P<h>\S+) port (?P<p>\d+): (?P<w>Connection refused|Connection timed out|No route to host|Network is unreachable|Operation timed out)",
        "ssh to $h port $p: $w",
    ),
    Rule::error(
        "ssh",
        r"Permission denied \((?:publickey|password|keyboard-interactive)",
        "ssh authentication was refused",
    ),
    Rule::error(
        "ssh",
        r"Host key verification failed",
        "ssh host key verification failed",
    ),
    Rule::error(
        "ssh",
        r"REMOTE HOST IDENTIFICATION HAS CHANGED",
        "the ssh host key has changed",
    ),
    Rule::error(
        "ssh",
        r"UNPROTECTED PRIVATE KEY FILE",
        "the ssh private key file is readable by others",
    ),
    Rule::error(
        "ssh",
        r#"Load key ["'‘](?P<k>[^"'’]+)["'’]: (?P<w>bad permissions|invalid format|error in libcrypto)"#,
        "ssh cannot load key $k: $w",
    ),
    Rule::error(
        "ssh",
        r"(?:kex_exchange_identification|ssh_exchange_identification): .*Connection (?:closed|reset)",
        "the ssh server closed the connection",
    ),
    Rule::error(
        "ssh",
        r"ssh: Could not resolve hostname (?P<h>[^:\s]+)",
        "ssh cannot resolve $h",
    ),
    // other: a tool that crashed or is missing
    Rule::error(
        "other",
        r"\b(?P<s>Bus error|Segmentation fault|Illegal instruction|Floating point exception)(?: \(core dumped\))?\s{2,}(?P<c>\S+)",
        "$c crashed ($s)",
    ),
    Rule::error(
        "other",
        r":\s*(?P<c>[\w.+-]+): command not found\s*$",
        "$c: command not found",
    ),
];

static RULE_SET: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::new(RULES));

/// The detection patterns, for native baselines and documentation.
pub fn patterns() -> Vec<String> {
    RULES.iter().map(|r| r.pattern.to_string()).collect()
}

#[derive(Default)]
pub struct NixErrors {
    /// Inside a `Failed assertions:` list.
    in_assertions: Option<u32>,
    /// The last systemd-boot `Failed to ...` line, evidence for a bootloader failure after it.
    boot_failed_line: Option<u32>,
}

impl Plugin for NixErrors {
    fn metadata() -> Metadata {
        Metadata::new("nix-errors", env!("CARGO_PKG_VERSION"))
            .description("Nix and installer failures: hashes, evaluation, builds, boot loader, mounts, read-only filesystems, ssh")
            .categories([
                "hash-mismatch", "eval-error", "build-failure", "bootloader", "mount-fs",
                "readonly-fs", "ssh", "other",
            ])
            .literals([
                "hash", "recursion", "error:", "while evaluating", "while calling", "builder for",
                "Cannot build", "dependencies", "unpack source", "full logs", "***", "EFI",
                "Died at", "grub", "GRUB", "bootctl", "systemd-boot", "install-grub", "efibootmgr", "CalledProcessError",
                "Failed", "mount", "modprobe", "VFS:", "fsck", "ead-only", "ssh", "Permission denied",
                "Host key", "HOST IDENTIFICATION", "PRIVATE KEY", "Load key", "_identification",
                "Bus error", "Segmentation fault", "Illegal instruction", "Floating point",
                "command not found", "boot.loader", "Failed assertions",
            ])
    }
}

impl Detector for NixErrors {
    fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
        let mut found = Vec::new();
        for e in events {
            let msg = e.message.as_str();
            // The items of a `Failed assertions:` list follow it directly; only the ones about
            // the boot loader reach this plugin (prefilter), so nearness is the test.
            if let Some(start) = self.in_assertions.filter(|s| e.line - s <= 8)
                && let Some(item) = msg
                    .trim_start()
                    .strip_prefix("- ")
                    .filter(|i| i.contains("boot.loader"))
            {
                found.push(
                    Finding::new(
                        "bootloader",
                        Severity::Error,
                        format!("failed assertion: {}", item.trim()),
                    )
                    .lines([start, e.line]),
                );
                continue;
            }
            if msg.trim_end() == "Failed assertions:" {
                self.in_assertions = Some(e.line);
                found.push(
                    Finding::new(
                        "eval-error",
                        Severity::Error,
                        "failed assertions in the configuration",
                    )
                    .line(e.line),
                );
                continue;
            }
            if msg.starts_with("Failed to ") && !msg.starts_with("Failed to mount") {
                self.boot_failed_line = Some(e.line);
            }
            if let Some(mut f) = RULE_SET.check(e) {
                if f.category == "bootloader"
                    && let Some(l) = self.boot_failed_line.take().filter(|l| e.line - l <= 20)
                {
                    f = f.line(l);
                }
                found.push(f);
            }
        }
        found
    }
}

nixtest_plugin_sdk::export_detector!(NixErrors);

#[cfg(test)]
mod tests {
    use super::*;
    use nixtest_plugin_sdk::testing;

    fn categories(log: &str) -> Vec<String> {
        testing::errors(&testing::detect_str::<NixErrors>(log))
            .into_iter()
            .map(|f| f.category.clone())
            .collect()
    }

    #[test]
    fn each_category_from_its_own_wording() {
        for (line, cat) in [
            (
                "error: hash mismatch in fixed-output derivation '/nix/store/x-source.drv':",
                "hash-mismatch",
            ),
            (
                "hash mismatch importing path '/nix/store/abc-foo';",
                "hash-mismatch",
            ),
            (
                "fixed-output derivation produced path '/nix/store/a-b.tar.xz' with sha256 hash '1' instead of the expected hash '2'",
                "hash-mismatch",
            ),
            ("error: infinite recursion encountered", "eval-error"),
            ("error: attribute 'disko' missing", "eval-error"),
            ("error: undefined variable 'pkgs'", "eval-error"),
            (
                "error: The option `services.foo' does not exist. Definition values:",
                "eval-error",
            ),
            (
                "error: builder for '/nix/store/x-hello.drv' failed with exit code 2;",
                "build-failure",
            ),
            (
                "builder for ‘/nix/store/x-hello.drv’ failed with exit code 1",
                "build-failure",
            ),
            (
                "error: Cannot build '/nix/store/x-hello.drv'.",
                "build-failure",
            ),
            (
                "do not know how to unpack source archive /nix/store/abc-src",
                "build-failure",
            ),
            ("make[2]: *** [Makefile:10: all] Error 2", "build-failure"),
            (
                "Failed to create EFI Boot variable entry: No such file or directory",
                "bootloader",
            ),
            (
                "Died at /nix/store/x-install-grub.pl line 586.",
                "bootloader",
            ),
            (
                "grub-install: error: cannot find EFI directory.",
                "bootloader",
            ),
            (
                "mount: /mnt/: unknown filesystem type 'bcachefs'.",
                "mount-fs",
            ),
            (
                "error: opening lock file '/nix/var/nix/db/big-lock': Read-only file system",
                "readonly-fs",
            ),
            (
                "ssh: connect to host machine port 22: Connection refused",
                "ssh",
            ),
            (
                "root@machine: Permission denied (publickey,password).",
                "ssh",
            ),
            (
                "/x/disko: line 82:  1809 Bus error               partprobe /dev/xvda",
                "other",
            ),
            ("/x/disko: line 1: rm: command not found", "other"),
        ] {
            assert_eq!(categories(line), vec![cat.to_string()], "{line}");
        }
    }

    #[test]
    fn noise_stays_quiet() {
        for line in [
            "trace: warning: lxd has been renamed to lxd-lts",
            "evaluation warning: The option `x' defined in `y' has been renamed to `z'.",
            "make[1]: *** [Makefile:5: clean] Error 1 (ignored)",
            "Created EFI boot entry \"Linux Boot Manager\".",
            "cannot import 'zroot': no such pool available",
            "copying path '/nix/store/x-acl' from 'ssh://192.168.1.80'...",
            "Failed to load module \"canberra-gtk-module\"",
            "building '/nix/store/x-mount-helper.drv'...",
            "killall: cryptsetup: no process killed",
        ] {
            assert!(categories(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn failed_assertions_about_the_boot_loader() {
        let log = "error:\nFailed assertions:\n- You must set the option ‘boot.loader.grub.devices’ to make the system bootable.\n";
        assert_eq!(
            categories(log),
            vec!["eval-error".to_string(), "bootloader".to_string()]
        );
        let log = "Failed assertions:\n- services.foo needs bar\n";
        assert_eq!(categories(log), vec!["eval-error".to_string()]);
    }

    #[test]
    fn systemd_boot_failure_carries_the_failed_line() {
        let log = "Failed to test system token validity: No data available\nTraceback (most recent call last):\n\
                   subprocess.CalledProcessError: Command '['/nix/store/x/bin/bootctl', 'install']' returned non-zero exit status 1.\n";
        let f = testing::detect_str::<NixErrors>(log);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].lines, vec![3, 1]);
    }

    #[test]
    fn a_traceback_through_the_boot_loader_installer_is_enough() {
        let log = "Failed to test system token validity: No data available\nTraceback (most recent call last):\n  File \"/nix/store/x-systemd-boot-builder.py\", line 256, in <module>\n    main()\n";
        assert_eq!(categories(log), vec!["bootloader".to_string()]);
    }
}
