//! Which guest commands a `probe` may run: read-only by construction.
//!
//! A probe is parsed into a program and its arguments and checked against an allow-list of
//! exact command shapes: the program, the options it may take (with or without a value) and
//! what its other arguments may be. Anything not on the list is refused; there is no list of
//! forbidden verbs to get around. The command the guest runs is rebuilt from the checked words,
//! each quoted, under `timeout`, so no shell syntax in a word can do anything.

use crate::ssh::shell_quote;

/// A probe command that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCommand {
    pub argv: Vec<String>,
}

impl ProbeCommand {
    /// The shell command for the guest: every word quoted, under a time limit of its own.
    pub fn shell(&self, seconds: u64) -> String {
        let words: Vec<String> = self.argv.iter().map(|w| shell_quote(w)).collect();
        format!("exec timeout -k 2 {seconds} {}", words.join(" "))
    }
}

/// What a program's arguments other than options may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operand {
    /// None at all.
    Nothing,
    /// Files whose contents are read: absolute, and never a device, the kernel's message
    /// queue or a tracing pipe (reading those has effects or never ends).
    ReadPath,
    /// Paths that are looked at, not opened for their contents (devices allowed).
    AnyPath,
    /// Plain words (names, store paths, patterns).
    Word,
}

/// One allowed program: its options without a value, its options with one, its operands.
struct Shape {
    program: &'static str,
    flags: &'static [&'static str],
    valued: &'static [&'static str],
    operands: Operand,
    max_operands: usize,
    /// At least one operand is required (a reader with none would read stdin).
    needs_operand: bool,
}

const SHAPES: &[Shape] = &[
    Shape {
        program: "lsblk",
        flags: &[
            "-a",
            "--all",
            "-b",
            "--bytes",
            "-d",
            "--nodeps",
            "-f",
            "--fs",
            "-J",
            "--json",
            "-l",
            "--list",
            "-n",
            "--noheadings",
            "-p",
            "--paths",
            "-P",
            "--pairs",
            "-r",
            "--raw",
            "-S",
            "--scsi",
            "-t",
            "--topology",
        ],
        valued: &[
            "-o",
            "--output",
            "-e",
            "--exclude",
            "-I",
            "--include",
            "-x",
            "--sort",
        ],
        operands: Operand::AnyPath,
        max_operands: 16,
        needs_operand: false,
    },
    Shape {
        program: "blkid",
        flags: &["-p", "--probe", "-i", "--info"],
        valued: &["-o", "--output", "-s", "--match-tag", "-t", "--match-token"],
        operands: Operand::AnyPath,
        max_operands: 16,
        needs_operand: false,
    },
    Shape {
        program: "df",
        flags: &[
            "-a",
            "--all",
            "-h",
            "--human-readable",
            "-H",
            "--si",
            "-i",
            "--inodes",
            "-k",
            "-l",
            "--local",
            "-P",
            "--portability",
            "-T",
            "--print-type",
            "--total",
        ],
        valued: &[
            "-B",
            "--block-size",
            "-t",
            "--type",
            "-x",
            "--exclude-type",
            "--output",
        ],
        operands: Operand::AnyPath,
        max_operands: 16,
        needs_operand: false,
    },
    Shape {
        program: "free",
        flags: &[
            "-b", "--bytes", "-k", "--kibi", "-m", "--mebi", "-g", "--gibi", "-h", "--human", "-w",
            "--wide", "-t", "--total", "-l", "--lohi", "--si",
        ],
        valued: &[],
        operands: Operand::Nothing,
        max_operands: 0,
        needs_operand: false,
    },
    Shape {
        program: "findmnt",
        flags: &[
            "-J",
            "--json",
            "-n",
            "--noheadings",
            "-r",
            "--raw",
            "-l",
            "--list",
            "-a",
            "--ascii",
            "-b",
            "--bytes",
            "-D",
            "--df",
            "-e",
            "--evaluate",
            "-f",
            "--first-only",
            "-k",
            "--kernel",
            "-m",
            "--mtab",
            "-s",
            "--fstab",
            "-u",
            "--notruncate",
            "-v",
            "--nofsroot",
            "-A",
            "--all",
        ],
        valued: &[
            "-o",
            "--output",
            "-t",
            "--types",
            "-T",
            "--target",
            "-S",
            "--source",
            "-M",
            "--mountpoint",
            "-O",
            "--options",
        ],
        operands: Operand::AnyPath,
        max_operands: 2,
        needs_operand: false,
    },
    Shape {
        program: "cat",
        flags: &["-A", "-b", "-e", "-E", "-n", "-s", "-t", "-T", "-v"],
        valued: &[],
        operands: Operand::ReadPath,
        max_operands: 16,
        needs_operand: true,
    },
    Shape {
        program: "head",
        flags: &["-q", "-v"],
        valued: &["-n", "--lines", "-c", "--bytes"],
        operands: Operand::ReadPath,
        max_operands: 16,
        needs_operand: true,
    },
    Shape {
        program: "tail",
        flags: &["-q", "-v"],
        valued: &["-n", "--lines", "-c", "--bytes"],
        operands: Operand::ReadPath,
        max_operands: 16,
        needs_operand: true,
    },
    Shape {
        program: "wc",
        flags: &[
            "-c", "-l", "-w", "-m", "-L", "--bytes", "--lines", "--words", "--chars",
        ],
        valued: &[],
        operands: Operand::ReadPath,
        max_operands: 16,
        needs_operand: true,
    },
    Shape {
        program: "ls",
        flags: &[
            "-l",
            "-a",
            "-A",
            "-h",
            "-d",
            "-1",
            "-i",
            "-n",
            "-s",
            "-S",
            "-t",
            "-r",
            "-F",
            "--full-time",
        ],
        valued: &[],
        operands: Operand::AnyPath,
        max_operands: 16,
        needs_operand: false,
    },
    Shape {
        program: "stat",
        flags: &[
            "-L",
            "--dereference",
            "-f",
            "--file-system",
            "-t",
            "--terse",
        ],
        valued: &["-c", "--format"],
        operands: Operand::AnyPath,
        max_operands: 16,
        needs_operand: true,
    },
    Shape {
        program: "du",
        flags: &[
            "-s",
            "--summarize",
            "-b",
            "--bytes",
            "-h",
            "--human-readable",
            "-k",
            "-m",
            "-x",
            "--one-file-system",
            "-a",
            "--all",
            "-c",
            "--total",
            "--apparent-size",
        ],
        valued: &[
            "-d",
            "--max-depth",
            "-B",
            "--block-size",
            "-t",
            "--threshold",
        ],
        operands: Operand::AnyPath,
        max_operands: 16,
        needs_operand: true,
    },
    Shape {
        program: "grep",
        flags: &[
            "-c",
            "--count",
            "-i",
            "--ignore-case",
            "-n",
            "--line-number",
            "-E",
            "--extended-regexp",
            "-F",
            "--fixed-strings",
            "-l",
            "--files-with-matches",
            "-L",
            "--files-without-match",
            "-q",
            "--quiet",
            "-v",
            "--invert-match",
            "-w",
            "--word-regexp",
            "-x",
            "--line-regexp",
            "-h",
            "--no-filename",
            "-H",
            "--with-filename",
            "-s",
            "--no-messages",
            "-o",
            "--only-matching",
            "-a",
            "--text",
            "-I",
        ],
        valued: &["-m", "--max-count", "-e", "--regexp", "-A", "-B", "-C"],
        // The pattern, then files: checked below.
        operands: Operand::ReadPath,
        max_operands: 17,
        needs_operand: true,
    },
    Shape {
        program: "uname",
        flags: &["-a", "-s", "-n", "-r", "-v", "-m", "-p", "-i", "-o"],
        valued: &[],
        operands: Operand::Nothing,
        max_operands: 0,
        needs_operand: false,
    },
    Shape {
        program: "id",
        flags: &["-u", "-g", "-G", "-n", "-r"],
        valued: &[],
        operands: Operand::Word,
        max_operands: 1,
        needs_operand: false,
    },
    Shape {
        program: "dmesg",
        flags: &[
            "-T",
            "--ctime",
            "-t",
            "--notime",
            "-x",
            "--decode",
            "-k",
            "--kernel",
            "-u",
            "--userspace",
            "-r",
            "--raw",
            "-S",
            "--syslog",
            "--nopager",
        ],
        valued: &[
            "-l",
            "--level",
            "-f",
            "--facility",
            "--time-format",
            "--since",
            "--until",
        ],
        operands: Operand::Nothing,
        max_operands: 0,
        needs_operand: false,
    },
    Shape {
        program: "journalctl",
        flags: &[
            "-k",
            "--dmesg",
            "-q",
            "--quiet",
            "--no-pager",
            "-r",
            "--reverse",
            "-a",
            "--all",
            "-x",
            "--catalog",
            "-m",
            "--merge",
            "--utc",
            "--no-hostname",
            "-b",
            "--list-boots",
        ],
        valued: &[
            "-n",
            "--lines",
            "-u",
            "--unit",
            "-t",
            "--identifier",
            "-p",
            "--priority",
            "-o",
            "--output",
            "-S",
            "--since",
            "-U",
            "--until",
            "-g",
            "--grep",
            "--facility",
            "--boot",
        ],
        // Journal matches, FIELD=VALUE: checked below.
        operands: Operand::Word,
        max_operands: 8,
        needs_operand: false,
    },
    Shape {
        program: "swapon",
        flags: &[
            "--show",
            "-s",
            "--summary",
            "--noheadings",
            "--bytes",
            "--raw",
        ],
        valued: &[],
        operands: Operand::Nothing,
        max_operands: 0,
        needs_operand: false,
    },
    Shape {
        program: "mount",
        flags: &[],
        valued: &[],
        operands: Operand::Nothing,
        max_operands: 0,
        needs_operand: false,
    },
];

/// `ip`'s objects that have a listing form, and the words a listing may carry.
const IP_OBJECTS: &[&str] = &[
    "addr",
    "address",
    "a",
    "link",
    "l",
    "route",
    "r",
    "ro",
    "neigh",
    "neighbour",
    "neighbor",
    "n",
    "rule",
    "ru",
    "maddr",
    "maddress",
];
const IP_OPTIONS: &[&str] = &[
    "-j",
    "-json",
    "-p",
    "-pretty",
    "-4",
    "-6",
    "-s",
    "-stats",
    "-d",
    "-details",
    "-o",
    "-oneline",
    "-br",
    "-brief",
    "-c=never",
    "-color=never",
];
const IP_LIST_VERBS: &[&str] = &["show", "list", "ls", "lst"];
/// Selectors a listing may take (`dev eth0`, `table main`, `up`...), as key words.
const IP_SELECTORS: &[&str] = &[
    "dev",
    "table",
    "scope",
    "up",
    "type",
    "proto",
    "label",
    "to",
    "from",
    "via",
    "master",
    "vrf",
    "primary",
    "secondary",
    "permanent",
    "dynamic",
    "all",
];

const GETENT_DATABASES: &[&str] = &[
    "hosts",
    "ahosts",
    "ahostsv4",
    "ahostsv6",
    "passwd",
    "group",
    "services",
    "protocols",
    "networks",
];

const NIX_STORE_QUERY_FLAGS: &[&str] = &[
    "--outputs",
    "--requisites",
    "-R",
    "--references",
    "--referrers",
    "--referrers-closure",
    "--deriver",
    "-d",
    "--tree",
    "--graph",
    "--hash",
    "--size",
    "--roots",
    "--valid-derivers",
    "--include-outputs",
    "--binding",
];

const MAX_COMMAND: usize = 4096;
const MAX_WORDS: usize = 40;

/// Parses and checks a probe command.
pub fn parse(command: &str) -> Result<ProbeCommand, String> {
    if command.len() > MAX_COMMAND {
        return Err(format!("probe command is longer than {MAX_COMMAND} bytes"));
    }
    if let Some(c) = command.chars().find(|c| c.is_control() && *c != ' ') {
        return Err(format!(
            "probe command may not contain the control character {c:?}"
        ));
    }
    let words: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
    if words.len() > MAX_WORDS {
        return Err(format!("probe command has more than {MAX_WORDS} words"));
    }
    let (&program, args) = words.split_first().ok_or("empty probe command")?;
    match program {
        "ip" => check_ip(args)?,
        "getent" => check_getent(args)?,
        "nix-store" => check_nix_store(args)?,
        "nix" => check_nix(args)?,
        "test" => check_test(args)?,
        _ => {
            let shape = SHAPES
                .iter()
                .find(|s| s.program == program)
                .ok_or_else(|| format!("{program} is not a read-only probe program"))?;
            check_shape(shape, args)?;
        }
    }
    let mut argv: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    if program == "blkid" {
        // blkid keeps a cache file unless told not to: a probe writes nothing.
        argv.splice(1..1, ["-c".to_string(), "/dev/null".to_string()]);
    }
    Ok(ProbeCommand { argv })
}

fn refuse(program: &str, word: &str) -> String {
    format!("`{word}` is not an option or argument a read-only {program} probe may use")
}

fn check_shape(shape: &Shape, args: &[&str]) -> Result<(), String> {
    let p = shape.program;
    let mut operands = Vec::new();
    let mut explicit_pattern = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a.starts_with('-') && a.len() > 1 {
            if shape.flags.contains(&a) {
                i += 1;
                continue;
            }
            // `--opt=value` or `-o value`.
            if let Some((name, value)) = a.split_once('=')
                && name.starts_with("--")
                && shape.valued.contains(&name)
            {
                check_value(p, value)?;
                explicit_pattern |= p == "grep" && name == "--regexp";
                i += 1;
                continue;
            }
            // `-la`: short flags together.
            if !a.starts_with("--")
                && a.len() > 2
                && a[1..]
                    .chars()
                    .all(|c| shape.flags.iter().any(|f| f.len() == 2 && f.ends_with(c)))
            {
                i += 1;
                continue;
            }
            // `-B1`: a short option with its value attached.
            if !a.starts_with("--")
                && a.len() > 2
                && a.is_char_boundary(2)
                && shape.valued.contains(&&a[..2])
            {
                check_value(p, &a[2..])?;
                explicit_pattern |= p == "grep" && &a[..2] == "-e";
                i += 1;
                continue;
            }
            if shape.valued.contains(&a) {
                let value = args
                    .get(i + 1)
                    .ok_or_else(|| format!("{a} needs a value"))?;
                check_value(p, value)?;
                explicit_pattern |= p == "grep" && (a == "-e" || a == "--regexp");
                i += 2;
                continue;
            }
            return Err(refuse(p, a));
        }
        operands.push(a);
        i += 1;
    }
    let mut files: &[&str] = &operands;
    if p == "grep" && !explicit_pattern {
        // The first operand is the pattern, any text; the rest are files.
        let (_, rest) = files
            .split_first()
            .ok_or("grep needs a pattern and a file")?;
        files = rest;
    }
    if p == "journalctl" {
        for m in files {
            let ok = match m.split_once('=') {
                Some((field, _)) => {
                    !field.is_empty()
                        && field
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                }
                None => false,
            };
            if !ok {
                return Err(refuse(p, m));
            }
        }
        return Ok(());
    }
    if files.len() > shape.max_operands {
        return Err(format!(
            "{p} probe takes at most {} operands",
            shape.max_operands
        ));
    }
    if shape.needs_operand && files.is_empty() {
        return Err(format!(
            "{p} probe needs a file to read (it would read nothing else)"
        ));
    }
    for f in files {
        match shape.operands {
            Operand::Nothing => return Err(refuse(p, f)),
            Operand::ReadPath => check_read_path(p, f)?,
            Operand::AnyPath => check_path(p, f)?,
            Operand::Word => check_value(p, f)?,
        }
    }
    Ok(())
}

/// A value of an option: any text but one that could be read as another option.
fn check_value(program: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 256 {
        return Err(format!("{program} probe: an empty or overlong value"));
    }
    Ok(())
}

fn check_path(program: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() > 1024 {
        return Err(format!("{program} probe: {path:?} is not an absolute path"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("{program} probe: {path:?} climbs out with .."));
    }
    Ok(())
}

/// Files whose reading has effects or never ends: devices (a watchdog starts when opened),
/// the kernel's message queue (reading consumes it), tracing pipes.
fn check_read_path(program: &str, path: &str) -> Result<(), String> {
    check_path(program, path)?;
    let normal: String = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/");
    let denied = normal == "dev"
        || normal.starts_with("dev/")
        || normal == "proc/kmsg"
        || normal.starts_with("sys/kernel/debug")
        || normal.starts_with("sys/kernel/tracing")
        || normal.contains("trace_pipe")
        || normal.ends_with("/fd/0");
    if denied {
        return Err(format!(
            "{program} probe: reading {path} has effects or never ends; probes read files only"
        ));
    }
    Ok(())
}

fn check_ip(args: &[&str]) -> Result<(), String> {
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        if !IP_OPTIONS.contains(&args[i]) {
            return Err(refuse("ip", args[i]));
        }
        i += 1;
    }
    let object = args
        .get(i)
        .ok_or("ip probe needs an object (addr, link, route...)")?;
    if !IP_OBJECTS.contains(object) {
        return Err(refuse("ip", object));
    }
    i += 1;
    if let Some(verb) = args.get(i) {
        let route_get = matches!(*object, "route" | "r" | "ro") && *verb == "get";
        if IP_LIST_VERBS.contains(verb) || route_get {
            i += 1;
        }
    }
    // Selectors and their values: a key word, then a plain value (an interface, a table).
    let mut expect_value = false;
    for w in &args[i..] {
        if expect_value {
            if w.starts_with('-') || w.len() > 64 {
                return Err(refuse("ip", w));
            }
            expect_value = false;
            continue;
        }
        // An address or prefix (`ip route get 10.0.2.2`, `ip route show 10.0.0.0/8`).
        let address = (w.contains('.') || w.contains(':'))
            && w.chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'));
        if address {
            continue;
        }
        if !IP_SELECTORS.contains(w) {
            return Err(refuse("ip", w));
        }
        expect_value = !matches!(
            *w,
            "up" | "primary" | "secondary" | "permanent" | "dynamic" | "all"
        );
    }
    Ok(())
}

fn check_getent(args: &[&str]) -> Result<(), String> {
    let (db, keys) = args.split_first().ok_or("getent probe needs a database")?;
    if !GETENT_DATABASES.contains(db) {
        return Err(refuse("getent", db));
    }
    if keys.len() > 4 || keys.iter().any(|k| k.starts_with('-')) {
        return Err("getent probe takes at most four keys, no options".into());
    }
    Ok(())
}

fn check_nix_store(args: &[&str]) -> Result<(), String> {
    match args.first() {
        Some(&"-q" | &"--query") => {
            let mut paths = 0;
            for a in &args[1..] {
                if a.starts_with('-') {
                    if !NIX_STORE_QUERY_FLAGS.contains(a) {
                        return Err(refuse("nix-store", a));
                    }
                } else {
                    check_path("nix-store", a)?;
                    paths += 1;
                }
            }
            if paths == 0 || paths > 16 {
                return Err("nix-store --query probe takes one to sixteen store paths".into());
            }
            Ok(())
        }
        // --verify without --repair only reads.
        Some(&"--verify") => match &args[1..] {
            [] | ["--check-contents"] => Ok(()),
            _ => Err("nix-store --verify probe takes only --check-contents".into()),
        },
        Some(other) => Err(refuse("nix-store", other)),
        None => Err("nix-store probe needs --query or --verify".into()),
    }
}

fn check_nix(args: &[&str]) -> Result<(), String> {
    let mut rest = args;
    // `--extra-experimental-features nix-command` may lead, as older Nix needs it.
    if let ["--extra-experimental-features", features, tail @ ..] = rest {
        if !features
            .split(' ')
            .all(|f| matches!(f, "nix-command" | "flakes"))
        {
            return Err(refuse("nix", features));
        }
        rest = tail;
    }
    match rest {
        ["show-config"] | ["config", "show"] => Ok(()),
        ["show-config", "--json"] | ["config", "show", "--json"] => Ok(()),
        ["path-info", tail @ ..] => {
            let mut paths = 0;
            for a in tail {
                if a.starts_with('-') {
                    if !matches!(
                        *a,
                        "--json"
                            | "-r"
                            | "--recursive"
                            | "-S"
                            | "--closure-size"
                            | "-s"
                            | "--size"
                            | "-h"
                            | "--human-readable"
                    ) {
                        return Err(refuse("nix", a));
                    }
                } else {
                    check_path("nix", a)?;
                    paths += 1;
                }
            }
            if paths == 0 || paths > 16 {
                return Err("nix path-info probe takes one to sixteen store paths".into());
            }
            Ok(())
        }
        _ => Err(format!(
            "`nix {}` is not a read-only probe (show-config, config show, path-info)",
            rest.join(" ")
        )),
    }
}

fn check_test(args: &[&str]) -> Result<(), String> {
    match args {
        [op, path]
            if matches!(
                *op,
                "-e" | "-f"
                    | "-d"
                    | "-b"
                    | "-c"
                    | "-L"
                    | "-h"
                    | "-r"
                    | "-s"
                    | "-S"
                    | "-p"
                    | "-w"
                    | "-x"
            ) =>
        {
            check_path("test", path)
        }
        _ => Err("test probe takes one file test and one path, e.g. `test -e /mnt/etc`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_shapes_pass() {
        for ok in [
            "lsblk -b -J",
            "lsblk -o NAME,SIZE /dev/vdb",
            "df -B1 /mnt",
            "df --output=avail,target /mnt",
            "cat /proc/meminfo",
            "head -n 20 /var/log/nixtest/run.log",
            "nix show-config",
            "nix config show",
            "nix path-info -S /nix/store/abc-x",
            "nix-store -q --references /nix/store/abc-x",
            "nix-store --verify",
            "mount",
            "swapon --show",
            "ip -j addr show dev eth0",
            "ip route get 10.0.2.2",
            "ip link",
            "getent hosts cache.nixos.org",
            "dmesg -T --level err,warn",
            "journalctl -b -n 50 --no-pager -u sshd.service",
            "journalctl -k _SYSTEMD_UNIT=nix-daemon.service",
            "grep -c error /var/log/nixtest/run.log",
            "grep -e No /var/log/syslog",
            "test -d /mnt/tmp",
            "ls -la /dev/disk/by-id",
            "stat -c %s /mnt/swapfile",
            "du -sb /mnt/tmp",
            "free -b",
            "findmnt -J /mnt",
            "uname -r",
            "id -u",
            "blkid /dev/vdb1",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok));
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "rm -rf /",
            "lsblk; rm -rf /",
            "cat /etc/passwd > /tmp/x",
            "df $(reboot)",
            "nix build .#x",
            "nix-store --verify --repair",
            "nix-store --delete /nix/store/x",
            "mount /dev/vdb /mnt",
            "ip link set eth0 down",
            "ip link delete eth0",
            "ip netns exec x rm -rf /",
            "ip -n x link",
            "ip -b /tmp/batch",
            "ip -force addr flush dev eth0",
            "ip addr flush dev eth0",
            "ip route add default via 1.2.3.4",
            "dmesg --clear",
            "dmesg -c",
            "dmesg -C",
            "dmesg -n 1",
            "dmesg -w",
            "journalctl --vacuum-size=1K",
            "journalctl --rotate",
            "journalctl --flush",
            "journalctl -f",
            "journalctl --cursor-file=/tmp/x",
            "tail -f /var/log/syslog",
            "tail --follow=name /var/log/syslog",
            "cat /dev/watchdog",
            "cat /dev/vda",
            "cat /proc/kmsg",
            "cat /sys/kernel/debug/tracing/trace_pipe",
            "cat",
            "cat relative/path",
            "cat /etc/../dev/watchdog",
            "grep -r x /",
            "grep -f /etc/patterns /etc/passwd",
            "findmnt --poll",
            "free -s 1",
            "swapon /swapfile",
            "swapon -a",
            "getent -s files hosts x",
            "test -e",
            "sh -c ls",
            "bash",
            "env ls",
            "timeout 1 ls",
            "lsblk\tX",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_guest_command_is_rebuilt_quoted() {
        let c = parse("grep -c a'b;reboot /var/log/x").unwrap();
        assert_eq!(
            c.shell(10),
            "exec timeout -k 2 10 'grep' '-c' 'a'\\''b;reboot' '/var/log/x'"
        );
        let b = parse("blkid /dev/vdb1").unwrap();
        assert_eq!(b.argv, ["blkid", "-c", "/dev/null", "/dev/vdb1"]);
    }
}
