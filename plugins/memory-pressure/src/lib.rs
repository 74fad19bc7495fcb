//! memory-pressure: the install ran out of memory.
//!
//! The kernel's OOM killer, a bare `Killed` from the shell, SIGKILL as nixos-rebuild-ng
//! reports it, `std::bad_alloc`, the Boehm GC's `Out of Memory`, and compilers that cannot
//! allocate. Heals with a swap file sized from the guest's free disk space and memory, or with
//! fewer parallel build jobs.

use nixtest_plugin_sdk::prelude::*;
use nixtest_plugin_sdk::shell;
use std::sync::LazyLock;

const CATEGORY: &str = "oom";
const MIB: u64 = 1 << 20;

const RULES: &[Rule] = &[
    Rule::error(
        CATEGORY,
        r"Out of memory: Kill(?:ed)? process \d+ \((?P<p>[^)]+)\)",
        "the OOM killer ended $p",
    ),
    Rule::error(
        CATEGORY,
        r"Memory cgroup out of memory: Kill(?:ed)? process \d+ \((?P<p>[^)]+)\)",
        "the memory cgroup limit ended $p",
    ),
    Rule::error(
        CATEGORY,
        r"(?P<p>\S+) invoked oom-killer",
        "$p invoked the OOM killer",
    ),
    Rule::error(
        CATEGORY,
        r"oom-kill:.*task=(?P<p>[^,\s]+)",
        "the OOM killer ended $p",
    ),
    Rule::error(
        CATEGORY,
        r"oom_reaper: reaped process \d+ \((?P<p>[^)]+)\)",
        "the OOM killer ended $p",
    ),
    Rule::error(
        CATEGORY,
        r"^\s*Killed\s*$",
        "a process was killed (out of memory?)",
    ),
    Rule::error(
        CATEGORY,
        r"line \d+:\s+\d+ Killed\s+(?P<c>\S+)",
        "$c was killed (out of memory?)",
    ),
    Rule::error(
        CATEGORY,
        r"failed due to signal 9 \(Killed\)",
        "a build was killed with SIGKILL (out of memory?)",
    ),
    Rule::error(
        CATEGORY,
        r"died with <Signals\.SIGKILL: 9>",
        "the build was killed with SIGKILL (out of memory)",
    ),
    Rule::error(
        CATEGORY,
        r"std::bad_alloc",
        "an allocation failed (std::bad_alloc)",
    ),
    Rule::error(
        CATEGORY,
        r"GC Warning: (?:Out of Memory|Failed to expand heap)",
        "the Nix evaluator's heap is out of memory",
    ),
    Rule::error(
        CATEGORY,
        r"(?:virtual memory exhausted|out of memory allocating \d+ bytes|memory allocation of \d+ bytes failed|fatal error: Killed signal terminated program)",
        "a compiler ran out of memory",
    ),
    Rule::error(
        CATEGORY,
        r"^error: (?:.*: )?(?:Cannot allocate memory|out of memory)\s*$",
        "Nix cannot allocate memory",
    ),
    Rule::error(
        CATEGORY,
        r"(?i)(?:unable to|cannot|can't|failed to) (?:fork|allocate|create (?:a )?(?:thread|process))\b.*(?:Cannot allocate memory|out of memory|ENOMEM)",
        "a process could not be started (out of memory)",
    ),
    Rule::error(
        CATEGORY,
        r"internal compiler error: Killed|(?:killed|terminated) by signal (?:9|SIGKILL|KILL)\b|\bsignal: killed\b|exit(?:ed with)? (?:code|status) 137\b",
        "a process was killed with SIGKILL (out of memory?)",
    ),
    Rule::error(
        CATEGORY,
        r"java\.lang\.OutOfMemoryError|JavaScript heap out of memory|^MemoryError\b|runtime: out of memory|fatal error: out of memory|Out of memory!?\s*$|memory exhausted",
        "a program ran out of memory",
    ),
    Rule::error(
        CATEGORY,
        r"(?i)\boom[-_ ]kill(?:er|ed)?\b.*(?:pid|process|task)",
        "the OOM killer ended a process",
    ),
];

static RULE_SET: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::new(RULES));

/// The detection patterns, for native baselines and documentation.
pub fn patterns() -> Vec<String> {
    RULES.iter().map(|r| r.pattern.to_string()).collect()
}

#[derive(Default)]
pub struct MemoryPressure;

impl Plugin for MemoryPressure {
    fn metadata() -> Metadata {
        Metadata::new("memory-pressure", env!("CARGO_PKG_VERSION"))
            .description(
                "OOM killer and allocation failures: swap sized from the facts, fewer build jobs",
            )
            .categories([CATEGORY])
            .rule_patterns(RULES)
    }
}

impl Detector for MemoryPressure {
    fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
        events.iter().filter_map(|e| RULE_SET.check(e)).collect()
    }
}

/// The filesystem to put a swap file on: a real (not tmpfs), writable one with the most free
/// space; the install target under /mnt wins ties because it outlives the installer.
fn swap_home(facts: &GuestFacts) -> Option<&Mount> {
    facts
        .mounts
        .iter()
        .filter(|m| {
            !m.read_only
                && !matches!(
                    m.fs_type.as_str(),
                    "tmpfs"
                        | "ramfs"
                        | "devtmpfs"
                        | "squashfs"
                        | "overlay"
                        | "vfat"
                        | "iso9660"
                        | "proc"
                        | "sysfs"
                )
        })
        .max_by_key(|m| (m.free_bytes, m.path.starts_with("/mnt")))
}

impl Healer for MemoryPressure {
    fn heal(&mut self, finding: &Finding, cx: &HealContext) -> Vec<HealingAction> {
        if finding.category != CATEGORY {
            return Vec::new();
        }
        let facts = &cx.facts;
        let phase = cx.phase.as_str();
        let mut actions = Vec::new();
        // As much swap as there is memory, at least 1 GiB, at most 4 GiB: the build step that
        // was killed needed more than the guest had.
        let wanted = (facts.memory_total_bytes / MIB).clamp(1024, 4096);
        if let Some(home) = swap_home(facts)
            && let Some(mib) = facts.swap_size_mib_at(&home.path, wanted)
        {
            let dir = home.path.trim_end_matches('/');
            // The mount point is what the guest reports: it goes into the commands quoted.
            let file = shell::quote(&format!("{dir}/.nixtest-swap"));
            let confidence = if facts.swap_total_bytes == 0 {
                0.85
            } else {
                0.6
            };
            actions.push(
                HealingAction::new(
                    "add-swap-file",
                    format!(
                        "add a {mib} MiB swap file at {file} ({} MiB free there)",
                        home.free_bytes / MIB
                    ),
                    confidence,
                )
                .command(format!("swapoff {file} 2>/dev/null; rm -f {file}"))
                // Writing a GiB of zeros takes seconds (16 s under TCG) while the install
                // waits; ext4 takes an allocated file as swap at once. Where the filesystem
                // refuses one (some take no file with unwritten extents), the zeros.
                .command(format!(
                    "fallocate -l {mib}MiB {file} && chmod 600 {file} && mkswap {file} \
                     && swapon {file} || {{ swapoff {file} 2>/dev/null; rm -f {file}; \
                     dd if=/dev/zero of={file} bs=1M count={mib} status=none \
                     && chmod 600 {file} && mkswap {file} && swapon {file}; }}"
                ))
                .retry(phase),
            );
        }
        if facts.cpus > 1 || cx.attempt > 0 {
            actions.push(
                HealingAction::new("fewer-build-jobs", "build one derivation at a time with one core", 0.5)
                    .command("mkdir -p /etc/nix && touch /etc/nix/nix.conf && sed -i '/^max-jobs *=/d;/^cores *=/d' /etc/nix/nix.conf && printf 'max-jobs = 1\\ncores = 1\\n' >> /etc/nix/nix.conf")
                    .retry(phase),
            );
        }
        actions.push(HealingAction::new("retry", "retry the phase as it is", 0.1).retry(phase));
        actions
    }
}

nixtest_plugin_sdk::export_plugin!(MemoryPressure);

#[cfg(test)]
mod tests {
    use super::*;
    use nixtest_plugin_sdk::testing::{self, FactsBuilder};

    #[test]
    fn the_rule_set_finds_what_each_rule_finds_on_recorded_logs() {
        testing::assert_rule_set_agrees_on_recorded_logs(RULES, env!("CARGO_MANIFEST_DIR"));
    }

    #[test]
    fn every_form_of_running_out() {
        for line in [
            "[138162.538415] Out of memory: Killed process 7644 (nix-build) total-vm:6261432kB",
            "Killed",
            "/nix/store/x-stdenv/setup: line 1: 4242 Killed   cc1plus -O2 x.c",
            "Command 'nix build' died with <Signals.SIGKILL: 9>.",
            "error: builder for '/nix/store/x-system.drv' failed due to signal 9 (Killed)",
            "Exception: std::bad_alloc: std::bad_alloc",
            "GC Warning: Out of Memory! Heap size: 3072 MiB. Returning NULL!",
            "virtual memory exhausted: Cannot allocate memory",
            "memory allocation of 1048576 bytes failed",
            "error: unable to fork: Cannot allocate memory",
            "g++: internal compiler error: Killed (program cc1plus)",
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            "Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space",
            "process exited with status 137",
        ] {
            let f = testing::detect_str::<MemoryPressure>(line);
            assert_eq!(testing::errors(&f).len(), 1, "{line}");
        }
    }

    #[test]
    fn the_word_killed_alone_is_not_enough() {
        for line in [
            "killall: cryptsetup: no process killed",
            "killing process 9534",
            "Killed 3 old generations",
            "building 'oom-helper'",
        ] {
            assert!(
                testing::detect_str::<MemoryPressure>(line).is_empty(),
                "{line}"
            );
        }
    }

    #[test]
    fn swap_fits_the_free_space_of_the_target() {
        let facts = FactsBuilder::new()
            .memory(512 << 20, 100 << 20)
            .mount("/", 300 << 20, 200 << 20)
            .mount("/mnt", 4 << 30, 3 << 30)
            .cpus(2)
            .build();
        let cx = testing::context(facts, "install", &[]);
        let f = Finding::new(CATEGORY, Severity::Error, "oom");
        let actions = testing::heal::<MemoryPressure>(&f, &cx);
        let top = &actions[0];
        assert_eq!(top.name, "add-swap-file");
        // 512 MiB of memory -> at least 1 GiB wanted; 3 GiB free -> 1 GiB fits.
        assert!(
            top.commands.iter().any(
                |c| c.starts_with("fallocate -l 1024MiB /mnt/.nixtest-swap ")
                    && c.contains("dd if=/dev/zero of=/mnt/.nixtest-swap bs=1M count=1024 ")
            ),
            "{:?}",
            top.commands
        );
        assert_eq!(top.retry_phase.as_deref(), Some("install"));
        assert_eq!(actions[1].name, "fewer-build-jobs");
    }

    #[test]
    fn a_mount_point_with_shell_characters_is_quoted_into_the_commands() {
        let hostile = "/mnt/$(touch pwned);x y'z";
        let facts = FactsBuilder::new()
            .memory(512 << 20, 100 << 20)
            .mount(hostile, 8 << 30, 6 << 30)
            .mount("/mnt", 4 << 30, 3 << 30)
            .build();
        let cx = testing::context(facts, "install", &[]);
        let f = Finding::new(CATEGORY, Severity::Error, "oom");
        let actions = testing::heal::<MemoryPressure>(&f, &cx);
        let swap = actions.iter().find(|a| a.name == "add-swap-file").unwrap();
        // Run the commands in a real shell with the guest's tools replaced by functions that
        // print their arguments: every path argument must be the swap file, whole.
        let dir = std::env::temp_dir().join(format!("nixtest-mp-quote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stubs = r#"p() { for a in "$@"; do printf '%s\n' "${a#of=}"; done; }
            for t in swapoff rm fallocate chmod mkswap swapon dd; do eval "$t() { p \"\$@\"; }"; done
            "#;
        let want = format!("{hostile}/.nixtest-swap");
        for command in &swap.commands {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{stubs}{command}"))
                .current_dir(&dir)
                .output()
                .unwrap();
            let args = String::from_utf8(out.stdout).unwrap();
            let paths: Vec<&str> = args.lines().filter(|a| a.starts_with('/')).collect();
            assert!(!paths.is_empty(), "{command}: {args}");
            assert!(paths.iter().all(|p| *p == want), "{command}: {paths:?}");
        }
        let pwned = dir.join("pwned").exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!pwned, "{:?}", swap.commands);
    }

    #[test]
    fn swap_never_takes_more_than_half_the_free_space() {
        let facts = FactsBuilder::new()
            .memory(2 << 30, 1 << 30)
            .mount("/mnt", 2 << 30, 600 << 20)
            .build();
        let cx = testing::context(facts, "install", &[]);
        let f = Finding::new(CATEGORY, Severity::Error, "oom");
        let top = &testing::heal::<MemoryPressure>(&f, &cx)[0];
        assert!(
            top.commands
                .iter()
                .any(|c| c.contains("fallocate -l 300MiB ") && c.contains("count=300 ")),
            "{:?}",
            top.commands
        );
    }
}
