//! nix-errors: the failures of Nix and of the installer's own steps that no healer can fix
//! by itself, reported so that a run fails with the right cause.
//!
//! Rules anchor on the tool that speaks and on its wording (Nix's several generations of
//! messages, GRUB, systemd-boot, mount, ssh), never on a bare phrase: `No such file or
//! directory` alone is harmless, `Failed to create EFI Boot variable entry` is not.

use nixtest_plugin_sdk::prelude::*;
use nixtest_plugin_sdk::regex::Regex;
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
        concat!(r"^\s*error: attribute ", q!("a"), r" missing"),
        "attribute $a missing",
    ),
    Rule::error(
        "eval-error",
        concat!(r"^\s*error: undefined variable ", q!("v")),
        "undefined variable $v",
    ),
    Rule::error(
        "eval-error",
        concat!(r"^\s*error: The option ", q!("o"), r" does not exist"),
        "option $o does not exist",
    ),
    Rule::error(
        "eval-error",
        r"^\s*error: syntax error, unexpected",
        "syntax error in a Nix expression",
    ),
    Rule::error(
        "eval-error",
        r"^\s*error: (?:value is .* while .* was expected|cannot coerce |expected a set but found|function .* called (?:without required|with unexpected) argument|A definition for option .* is not of type)",
        "type error during evaluation",
    ),
    Rule::error(
        "eval-error",
        r"^\s*error: assertion .* failed",
        "assertion failed during evaluation",
    ),
    Rule::error(
        "eval-error",
        concat!(
            r"^\s*error: file ",
            q!("f"),
            r" was not found in the Nix search path"
        ),
        "$f not found in the Nix search path",
    ),
    Rule::error(
        "eval-error",
        r"^\s*error: flake .* does not provide attribute",
        "flake does not provide the attribute",
    ),
    Rule::error(
        "eval-error",
        r"^error: (?:… )?while evaluating\b",
        "evaluation error",
    ),
    Rule::error(
        "eval-error",
        r"^\s*error: (?:The option |evaluation aborted with the following error message: |stack overflow|maximum call depth|(?:dynamic )?attribute .* already defined|access to (?:absolute )?path .* is forbidden|cannot look up '<[^>]+>' in pure evaluation mode|cannot find flake|getting status of '[^']*\.nix'|opening file '[^']*\.nix'|path '[^']*' does not exist|unsupported argument|anonymous function at .* called|expected a \w+ but found|list index \d+ is out of bounds|string '.*' cannot refer to other paths|experimental Nix feature '\S+' is disabled)",
        "evaluation error",
    ),
    Rule::error(
        "eval-error",
        r"(?:is marked as (?:broken|insecure)|has an unfree license|is not available on the requested hostPlatform).*refusing to evaluate|refusing to evaluate",
        "a package is refused by the configuration (broken, insecure or unfree)",
    ),
    // A Nix error with a source position: only evaluation prints those.
    Rule::error(
        "eval-error",
        r"^\s*error: .*,? at (?:/|«)[^:\s]*:\d+:\d+|^\s*at (?:/|«)\S*\.nix:\d+:\d+:\s*$",
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
        concat!(r"builder for ", q!("d"), r" failed\b"),
        "build of $d failed",
    ),
    Rule::error(
        "build-failure",
        r"ninja: build stopped: subcommand failed|collect2: error: ld returned \d+ exit status|error: linker command failed|CMake Error at |error: could not compile|^\s*npm ERR! |Hunk #\d+ FAILED|patch: \*\*\*\* |error: a '\S+' with features \{.*\} is required",
        "a build step failed",
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
        r#"File "[^"]*(?:systemd-boot|install-grub|grub-install|limine|refind|bootloader)[^"]*", line \d+"#,
        "installing the boot loader failed",
    ),
    Rule::error(
        "bootloader",
        r"File system .* is not a FAT EFI System Partition",
        "/boot is not an EFI System Partition",
    ),
    Rule::error(
        "bootloader",
        r#"efiSysMountPoint = ['‘"](?P<p>[^'’"]+)['’"] is not a mounted partition"#,
        "the EFI system partition $p is not mounted",
    ),
    Rule::error(
        "bootloader",
        r"Failed to install bootloader|systemd-boot not installed in ESP|Failed to (?:write|set|read|remove) .*EFI (?:variable|Boot)|[Cc]ould(?:n't| not) find (?:an? |the )?EFI [Ss]ystem [Pp]artition|EFI variables are not supported on this system|Could not prepare Boot variable|(?:^|\s)error: (?:no such device|unknown filesystem|no such partition)\b.*|grub rescue>",
        "the boot loader could not be installed",
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
        r"mount: mounting (?P<w>\S+) on (?P<m>\S+) failed|mount: .*(?:fsconfig\(\) failed|not mount point or bad option|already mounted or mount point busy|Structure needs cleaning|can't find in /etc/fstab)|umount: .*target is busy",
        "mount failed",
    ),
    Rule::error(
        "mount-fs",
        r"An error occurred in stage 1 of the boot process",
        "stage 1 could not mount the root filesystem",
    ),
    Rule::error(
        "mount-fs",
        r"cannot mount '(?P<d>[^']+)': (?P<w>.*)|cannot import '(?P<p>[^']+)': (?P<w2>(?:pool (?:was|may be) |one or more|I/O error|insufficient replicas|no pools available).*)",
        "ZFS cannot mount or import $d$p",
    ),
    Rule::warning(
        "mount-fs",
        r"cannot import '(?P<p>[^']+)': no such pool available",
        "ZFS pool $p is not there (yet)",
    ),
    Rule::error(
        "mount-fs",
        r"No key available with this passphrase|Failed to open (?:the )?(?:LUKS|encrypted) device|cryptsetup: .*(?:failed|error)",
        "the encrypted volume could not be opened",
    ),
    Rule::error(
        "mount-fs",
        r"(?:EXT4-fs|BTRFS|XFS \(\w+\)|F2FS-fs).{0,20}(?:error|corrupt)",
        "the kernel reports filesystem corruption",
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
        r"(?i)remounting filesystem read-only|\bEROFS\b",
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
    Rule::error(
        "ssh",
        r"Too many authentication failures|Unable to negotiate with \S+ port \d+|no matching (?:host key type|key exchange method|cipher|MAC) found|Bad owner or permissions on|ssh_dispatch_run_fatal|Connection timed out during banner exchange|banner exchange: Connection|Exceeded MaxStartups|sign_and_send_pubkey: signing failed|Permission denied, please try again",
        "ssh could not log in",
    ),
    Rule::error(
        "ssh",
        r"(?:cannot open connection to remote store|failed to start SSH (?:master )?connection to|cannot connect to) ['‘](?P<s>ssh(?:-ng)?://[^'’]+)['’]",
        "cannot reach the remote store $s",
    ),
    Rule::error(
        "ssh",
        r"Connection (?:reset|closed) by (?:authenticating user \S+ )?(?P<h>\S+) port \d+|Connection to (?P<h2>\S+) closed by remote host|client_loop: send disconnect|packet_write_wait: Connection to|Write failed: Broken pipe|read: Connection reset by peer",
        "the ssh connection broke off",
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
    Rule::error(
        "other",
        r"lacks a valid signature|is not a trusted user|not signed by a trusted key",
        "a store path is not trusted by the receiving store",
    ),
    Rule::error(
        "other",
        r"Job for (?P<u>\S+) failed|the following units failed: (?P<us>.*)|^Failed to (?:re)?start (?P<u2>\S+\.service)",
        "systemd unit $u$us$u2 failed",
    ),
    Rule::warning(
        "other",
        r"(?:\[FAILED\]|systemd\[\d+\]:) Failed to start (?P<u>.*?)\.?$",
        "systemd could not start $u",
    ),
    Rule::error(
        "other",
        r"error\(s\) occurred while switching to the new configuration",
        "switching to the new configuration failed",
    ),
];

/// Reboot and shutdown cues: ssh trouble soon after one is the machine going away, expected.
const REBOOT_CUE: &str = r"(?i-u)\b(?:reboot(?:ing)?|restarting (?:the )?(?:machine|host|system)|kexec|system is going down|shutting down|power(?:ing)? off|waiting for (?:the )?(?:machine|host|ssh|server) to)\b";
/// How many lines after a reboot cue ssh noise stays expected.
const REBOOT_WINDOW: u32 = 40;
/// A Nix error line that no specific rule claimed: Nix itself gave up.
const NIX_ERROR: &str = r"^\s*error: (?P<m>\S.{3,})";
/// The lines the detector's state follows besides its rules (the host sends it nothing but
/// what its patterns match): the head of a `Failed assertions:` list, the list's items about
/// the boot loader, and systemd-boot's `Failed to ...` lines (evidence for what follows).
const FAILED_ASSERTIONS: &str = r"^\s*Failed assertions:\s*$";
const ASSERTION_ITEM: &str = r"^\s*- .*boot\.loader";
const FAILED_TO: &str = r"^Failed to ";

static RULE_SET: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::new(RULES));
static REBOOT: LazyLock<Regex> = LazyLock::new(|| Regex::new(REBOOT_CUE).unwrap());
/// What a machine going away looks like to ssh: refused, reset, closed or timed-out
/// connections and broken pipes (never a refused login or a bad key).
const CONNECTION_NOISE_PATTERN: &str = r"Connection refused|Connection timed out|No route to host|Connection (?:reset|closed)|closed by remote host|Broken pipe|client_loop|packet_write_wait";
static CONNECTION_NOISE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(CONNECTION_NOISE_PATTERN).unwrap());
static NIX_ERROR_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(NIX_ERROR).unwrap());
/// Nix errors that other built-in detectors own (downloads, space, memory): not `other`.
static OWNED_ELSEWHERE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)unable to download|cannot download|download of|no space left|cannot allocate memory|out of memory|bad_alloc|disk quota|/dev/|unable to fork|No device passed")
        .unwrap()
});

/// The detection patterns, for native baselines and documentation.
pub fn patterns() -> Vec<String> {
    RULES
        .iter()
        .map(|r| r.pattern)
        .chain([REBOOT_CUE, NIX_ERROR])
        .map(str::to_string)
        .collect()
}

#[derive(Default)]
pub struct NixErrors {
    /// Inside a `Failed assertions:` list.
    in_assertions: Option<u32>,
    /// The last systemd-boot `Failed to ...` line, evidence for a bootloader failure after it.
    boot_failed_line: Option<u32>,
    /// The last line that said the machine is rebooting.
    reboot_line: Option<u32>,
}

impl Plugin for NixErrors {
    fn metadata() -> Metadata {
        Metadata::new("nix-errors", env!("CARGO_PKG_VERSION"))
            .description("Nix and installer failures: hashes, evaluation, builds, boot loader, mounts, read-only filesystems, ssh")
            .categories([
                "hash-mismatch", "eval-error", "build-failure", "bootloader", "mount-fs",
                "readonly-fs", "ssh", "other",
            ])
            .rule_patterns(RULES)
            .patterns([REBOOT_CUE, NIX_ERROR, FAILED_ASSERTIONS, ASSERTION_ITEM, FAILED_TO])
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
            // Nix indents the lines of a multi-line error under its `error:`.
            if msg.trim() == "Failed assertions:" {
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
            if msg.len() < 512 && REBOOT.is_match(msg) {
                self.reboot_line = Some(e.line);
            }
            if let Some(mut f) = RULE_SET.check(e) {
                if f.category == "bootloader"
                    && let Some(l) = self.boot_failed_line.take().filter(|l| e.line - l <= 20)
                {
                    f = f.line(l);
                }
                // Refused or dropped connections while a machine restarts are expected; a
                // refused login is not.
                if f.category == "ssh"
                    && self
                        .reboot_line
                        .is_some_and(|l| e.line - l <= REBOOT_WINDOW)
                    && CONNECTION_NOISE.is_match(msg)
                {
                    f.severity = Severity::Warning;
                    f = f.temporary();
                }
                found.push(f);
            } else if msg.contains("error: ")
                && let Some(c) = NIX_ERROR_RE.captures(msg)
                && !OWNED_ELSEWHERE.is_match(msg)
            {
                found.push(
                    Finding::new(
                        "other",
                        Severity::Error,
                        format!("Nix: {}", truncate(&c["m"], 160)),
                    )
                    .line(e.line),
                );
            }
        }
        found
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
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
    fn the_rule_set_finds_what_each_rule_finds_on_recorded_logs() {
        testing::assert_rule_set_agrees_on_recorded_logs(RULES, env!("CARGO_MANIFEST_DIR"));
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
            (
                "[1/0/3 built] building nixos-systemefiSysMountPoint = '/boot' is not a mounted partition. Is the path configured correctly?",
                "bootloader",
            ),
            ("Failed to install bootloader", "bootloader"),
            (
                "mount: mounting rpool/root on /mnt-root/ failed: No such file or directory",
                "mount-fs",
            ),
            (
                "cannot import 'rpool': pool was previously in use from another system.",
                "mount-fs",
            ),
            ("No key available with this passphrase.", "mount-fs"),
            (
                "       error: The option `boot.loader.grub.device' is used but not defined.",
                "eval-error",
            ),
            (
                "error: Package ‘x-1.0’ in /nix/store/a/pkgs/x.nix:20 is marked as broken, refusing to evaluate.",
                "eval-error",
            ),
            (
                "error: cannot open connection to remote store 'ssh-ng://root@host': error: unexpected end-of-file",
                "ssh",
            ),
            (
                "Received disconnect from 10.0.0.1 port 22:2: Too many authentication failures",
                "ssh",
            ),
            ("ninja: build stopped: subcommand failed.", "build-failure"),
            (
                "error: cannot add path '/nix/store/a-b' because it lacks a valid signature",
                "other",
            ),
            (
                "warning: the following units failed: nginx.service",
                "other",
            ),
            ("error: some failure nobody wrote a rule for", "other"),
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
            "cannot import 'zroot': no such pool available",
            "warning: error: unable to download 'https://x/y': HTTP error 502; retrying in 300 ms",
            "error: writing to file: No space left on device",
            "[FAILED] Failed to start Load Kernel Modules.",
            "Failed to stop -.slice.",
            "tests: 12 passed, 0 failed",
        ] {
            assert!(categories(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn ssh_trouble_while_the_machine_reboots_is_expected() {
        let log = "installation finished!\nRebooting the machine...\n\
                   Connection to 10.0.2.15 closed by remote host.\n\
                   ssh: connect to host 10.0.2.15 port 22: Connection refused\n";
        assert!(categories(log).is_empty());
        // Without a reboot it is a failure; a refused login is one even during a reboot.
        assert_eq!(
            categories("ssh: connect to host 10.0.2.15 port 22: Connection refused\n"),
            vec!["ssh".to_string()]
        );
        let log = "reboot\nroot@host: Permission denied (publickey).\n";
        assert_eq!(categories(log), vec!["ssh".to_string()]);
    }

    #[test]
    fn failed_assertions_indented_as_nix_prints_them() {
        let log = "error:\n       Failed assertions:\n       - You must set the option \u{2018}boot.loader.grub.devices\u{2019} or 'boot.loader.grub.mirroredBoots' to make the system bootable.\n";
        assert_eq!(
            categories(log),
            vec!["eval-error".to_string(), "bootloader".to_string()]
        );
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
