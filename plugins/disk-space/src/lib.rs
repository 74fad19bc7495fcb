//! disk-space: the install ran out of disk space or inodes.
//!
//! `No space left on device` in all its forms (ENOSPC from Nix, the kernel, compilers, xz,
//! cp), Nix's own note that a build may have failed for lack of space, and quota errors.
//! Heals by freeing space where the facts say it is short: garbage collection, clearing
//! temporary build directories, and store optimisation (hard-linking identical files). It
//! declares `probe` to look for leftover build directories before proposing to clear them.

use nixtest_plugin_sdk::prelude::*;
use std::sync::LazyLock;

const CATEGORY: &str = "disk-full";
const MIB: u64 = 1 << 20;

const RULES: &[Rule] = &[
    Rule::error(
        CATEGORY,
        r#"(?:['‘"](?P<p>/[^'’"]+)['’"]:?\s*)?(?:No space left on device|ENOSPC)"#,
        "no space left on device",
    ),
    Rule::error(
        CATEGORY,
        r"build failure may have been caused by lack of free disk space",
        "no space left on device",
    ),
    Rule::error(CATEGORY, r"Disk quota exceeded", "disk quota exceeded"),
    Rule::error(
        CATEGORY,
        r"(?i)\bnot enough (?:free )?(?:disk )?space\b",
        "not enough disk space",
    ),
    Rule::error(
        CATEGORY,
        r"(?i)\b(?:database or disk is full|SQLITE_FULL|out of (?:disk )?space|(?:file ?system|disk|partition|device) (?:is )?full|insufficient (?:disk )?space|write error: no space)\b",
        "no space left on device",
    ),
];

static RULE_SET: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::new(RULES));

/// The detection patterns, for native baselines and documentation.
pub fn patterns() -> Vec<String> {
    RULES.iter().map(|r| r.pattern.to_string()).collect()
}

#[derive(Default)]
pub struct DiskSpace;

impl Plugin for DiskSpace {
    fn metadata() -> Metadata {
        Metadata::new("disk-space", env!("CARGO_PKG_VERSION"))
            .description("ENOSPC and inode exhaustion: garbage collection, temporary files, store optimisation")
            .categories([CATEGORY])
            .capability(Capability::Probe)
            .rule_patterns(RULES)
    }
}

impl Detector for DiskSpace {
    fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
        events.iter().filter_map(|e| RULE_SET.check(e)).collect()
    }
}

/// The filesystem that is short: out of inodes first, then the least free space among the
/// real, writable ones.
fn shortest(facts: &GuestFacts) -> Option<&Mount> {
    let real = facts.mounts.iter().filter(|m| {
        !m.read_only
            && !matches!(
                m.fs_type.as_str(),
                "proc" | "sysfs" | "devtmpfs" | "squashfs" | "iso9660"
            )
    });
    real.clone()
        .find(|m| m.free_inodes == 0)
        .or_else(|| real.min_by_key(|m| m.free_bytes * 1000 / m.size_bytes.max(1)))
}

impl Healer for DiskSpace {
    fn heal(&mut self, finding: &Finding, cx: &HealContext) -> Vec<HealingAction> {
        if finding.category != CATEGORY {
            return Vec::new();
        }
        let phase = cx.phase.as_str();
        let short = shortest(&cx.facts);
        let path = short.map_or("/", |m| m.path.as_str());
        let inodes = short.is_some_and(|m| m.free_inodes == 0);
        let on_target = path.starts_with("/mnt");
        // The store that fills up: the target's while installing, the installer's otherwise.
        let store = if on_target { " --store /mnt" } else { "" };
        let free = short.map_or(String::new(), |m| {
            format!(" ({} MiB free)", m.free_bytes / MIB)
        });
        let mut actions = vec![
            HealingAction::new(
                "optimise-store",
                format!("hard-link identical files in the Nix store on {path}{free}"),
                // A fresh install target holds nothing old to deduplicate or collect.
                if inodes || on_target { 0.3 } else { 0.7 },
            )
            .command(format!("nix-store{store} --optimise"))
            .retry(phase),
            HealingAction::new(
                "collect-garbage",
                format!("delete unreachable store paths on {path}{free}"),
                if on_target {
                    0.25
                } else if inodes {
                    0.5
                } else {
                    0.6
                },
            )
            .command(format!("nix-store{store} --gc"))
            .retry(phase),
        ];
        // An installer's live store is in RAM: a build bigger than half the RAM fills it, and
        // the cure is to build in the target's store, which has the disk behind it.
        if let Some(action) = build_in_target_store(cx) {
            actions.push(action);
        }
        // A small target disk: a generous ESP leaves the system too little room.
        if on_target && let Some(action) = shrink_esp(cx) {
            actions.push(action);
        }
        let tmp = if on_target { "/mnt/tmp" } else { "/tmp" };
        if leftover_builds(tmp) != Some(0) {
            actions.push(
                HealingAction::new(
                    "clear-temporary-files",
                    format!("remove leftover build directories under {tmp}"),
                    if inodes { 0.75 } else { 0.4 },
                )
                .command(format!(
                    "find {tmp} -mindepth 1 -maxdepth 1 -name 'nix-build-*' -exec rm -rf {{}} +"
                ))
                .retry(phase),
            );
        }
        actions
    }
}

/// Filesystems that live in memory.
fn in_memory(m: &Mount) -> bool {
    matches!(m.fs_type.as_str(), "tmpfs" | "ramfs" | "overlay" | "rootfs")
}

/// The live store is in memory (an installer: the store's overlay over a tmpfs, or a tmpfs
/// itself), the target is mounted on /mnt, and it has more room than the live store has in
/// all: the build goes to the target's store (`store = /mnt`, what `nix … --store /mnt` does).
fn build_in_target_store(cx: &HealContext) -> Option<HealingAction> {
    let facts = &cx.facts;
    let store = facts.mount_for("/nix/store")?;
    // An overlay's room is its upper layer's: NixOS's /nix/.rw-store.
    let room = facts
        .mounts
        .iter()
        .find(|m| m.path == "/nix/.rw-store")
        .unwrap_or(store);
    // The room itself must be RAM: an overlay may well sit on a disk.
    if !in_memory(store)
        || !matches!(room.fs_type.as_str(), "tmpfs" | "ramfs")
        || store.path.starts_with("/mnt")
    {
        return None;
    }
    let target = facts.mounts.iter().find(|m| m.path == "/mnt")?;
    if in_memory(target) || target.free_bytes <= room.size_bytes {
        return None;
    }
    Some(
        HealingAction::new(
            "build-in-target-store",
            format!(
                "the live Nix store ({} MiB, in memory) fills up: build in the target's store \
                 on /mnt ({} MiB free) instead",
                room.size_bytes / MIB,
                target.free_bytes / MIB
            ),
            0.75,
        )
        .command(
            // NixOS's nix.conf is a link into its store: a copy takes the line.
            "f=/etc/nix/nix.conf; mkdir -p /mnt/nix/store /etc/nix && \
             if [ -L $f ]; then cp --remove-destination \"$(readlink -f $f)\" $f; fi && \
             { grep -qs '^store *= */mnt *$' $f || echo 'store = /mnt' >> $f; }",
        )
        .retry(if cx.phase.is_empty() {
            "install"
        } else {
            cx.phase.as_str()
        }),
    )
}

/// How many `nix-build-*` directories the guest has under `dir`: `None` when it cannot be
/// asked (a replay has no guest), `Some(0)` when the folder is missing or has none.
fn leftover_builds(dir: &str) -> Option<usize> {
    let out = nixtest_plugin_sdk::probe(&format!("ls -A {dir}")).ok()?;
    if out.status != 0 {
        return Some(0);
    }
    Some(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("nix-build-"))
            .count(),
    )
}

/// `ESP = { size = "64M"; ...` in a disko config.
static ESP_SIZE: LazyLock<nixtest_plugin_sdk::regex::Regex> = LazyLock::new(|| {
    nixtest_plugin_sdk::regex::Regex::new(r#"(ESP\s*=\s*\{[^}]*?size\s*=\s*")(\d+)M(")"#).unwrap()
});
const SMALL_ESP_MIB: u64 = 16;

fn shrink_esp(cx: &HealContext) -> Option<HealingAction> {
    let config = cx.config("disko-config.nix")?;
    let caps = ESP_SIZE.captures(config)?;
    let size: u64 = caps[2].parse().ok()?;
    if size <= SMALL_ESP_MIB * 2 {
        return None;
    }
    let rewritten = ESP_SIZE.replace(config, |c: &nixtest_plugin_sdk::regex::Captures<'_>| {
        format!("{}{SMALL_ESP_MIB}M{}", &c[1], &c[3])
    });
    Some(
        HealingAction::new(
            "shrink-esp",
            format!(
                "give the system {} MiB more of the target disk: ESP {size}M -> {SMALL_ESP_MIB}M",
                size - SMALL_ESP_MIB
            ),
            0.65,
        )
        .config_change("disko-config.nix", rewritten.into_owned())
        .retry("disk_partitioning"),
    )
}

nixtest_plugin_sdk::export_plugin!(DiskSpace);

#[cfg(test)]
mod tests {
    use super::*;
    use nixtest_plugin_sdk::testing::{self, FactsBuilder};

    #[test]
    fn the_rule_set_finds_what_each_rule_finds_on_recorded_logs() {
        testing::assert_rule_set_agrees_on_recorded_logs(RULES, env!("CARGO_MANIFEST_DIR"));
    }

    #[test]
    fn a_live_store_in_memory_builds_in_the_target_store() {
        let mount = |path: &str, fs: &str, size: u64, free: u64| Mount {
            path: path.into(),
            device: fs.into(),
            fs_type: fs.into(),
            size_bytes: size,
            free_bytes: free,
            free_inodes: 1000,
            read_only: false,
        };
        let mut facts = FactsBuilder::new().build();
        facts.mounts = vec![
            mount("/", "overlay", 512 * MIB, 500 * MIB),
            mount("/nix/.rw-store", "tmpfs", 256 * MIB, 250 * MIB),
            mount("/nix/store", "overlay", 256 * MIB, 250 * MIB),
            mount("/mnt", "ext4", 3000 * MIB, 2900 * MIB),
            mount("/mnt/boot", "vfat", 64 * MIB, 60 * MIB),
        ];
        let cx = testing::context(facts.clone(), "install", &[]);
        let finding = Finding::new(CATEGORY, Severity::Error, "no space left on device");
        let actions = testing::heal::<DiskSpace>(&finding, &cx);
        let best = actions
            .iter()
            .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
            .unwrap();
        assert_eq!(best.name, "build-in-target-store", "{actions:?}");
        assert!(best.commands[0].contains("store = /mnt"));
        assert_eq!(best.retry_phase.as_deref(), Some("install"));
        // A store on a disk (the test guest, an installed system) is not moved.
        facts.mounts[2].fs_type = "ext4".into();
        facts.mounts.remove(1);
        let cx = testing::context(facts, "install", &[]);
        assert!(
            testing::heal::<DiskSpace>(&finding, &cx)
                .iter()
                .all(|a| a.name != "build-in-target-store")
        );
    }

    #[test]
    fn every_form_of_enospc() {
        for line in [
            "error: preallocating file of 18368 bytes: No space left on device",
            "error: creating directory '/nix/var/nix/temproots': No space left on device",
            "fatal error: error writing to /build/cc.s: No space left on device",
            "note: build failure may have been caused by lack of free disk space",
            "cp: error writing '/mnt/nix/store/x': No space left on device",
            "xz: (stdout): Write error: No space left on device",
        ] {
            let f = testing::detect_str::<DiskSpace>(line);
            assert_eq!(testing::errors(&f).len(), 1, "{line}");
        }
    }

    #[test]
    fn space_talk_is_not_a_failure() {
        for line in [
            "Filesystem  Size  Used Avail",
            "checking if tmpfs in rescue system is large enough... yes: 32085 MB",
            "copying 12 paths (30 MiB) to free space",
        ] {
            assert!(testing::detect_str::<DiskSpace>(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn heal_targets_the_full_filesystem() {
        let facts = FactsBuilder::new()
            .mount("/", 4 << 30, 2 << 30)
            .mount("/mnt", 1 << 30, 10 << 20)
            .build();
        let cx = testing::context(facts, "install", &[]);
        let f = Finding::new(CATEGORY, Severity::Error, "no space");
        let actions = testing::heal::<DiskSpace>(&f, &cx);
        let by = |n: &str| actions.iter().find(|a| a.name == n).unwrap();
        assert_eq!(
            by("optimise-store").commands,
            vec!["nix-store --store /mnt --optimise"]
        );
        assert_eq!(
            by("collect-garbage").commands,
            vec!["nix-store --store /mnt --gc"]
        );
    }

    #[test]
    fn a_small_target_gets_the_esp_back() {
        let facts = FactsBuilder::new().mount("/mnt", 200 << 20, 0).build();
        let disko = "ESP = { size = \"64M\"; type = \"EF00\"; };\nroot = { size = \"100%\"; };\n";
        let cx = testing::context(facts, "install", &[("disko-config.nix", disko)]);
        let f = Finding::new(CATEGORY, Severity::Error, "no space");
        let actions = testing::heal::<DiskSpace>(&f, &cx);
        let shrink = actions.iter().find(|a| a.name == "shrink-esp").unwrap();
        assert_eq!(
            shrink.config_changes[0].content,
            disko.replace("64M", "16M")
        );
        assert_eq!(shrink.retry_phase.as_deref(), Some("disk_partitioning"));
    }

    fn listing(status: i32, stdout: &str) -> Result<nixtest_plugin_sdk::ProbeOutput, String> {
        Ok(nixtest_plugin_sdk::ProbeOutput {
            status,
            stdout: stdout.to_string(),
            stderr: String::new(),
        })
    }

    #[test]
    fn nothing_to_clear_is_not_proposed() {
        let mut facts = FactsBuilder::new().mount("/mnt", 200 << 20, 0).build();
        facts.mounts[0].free_inodes = 0;
        let cx = testing::context(facts, "install", &[]);
        let f = Finding::new(CATEGORY, Severity::Error, "no space");
        let names = |answer: Result<nixtest_plugin_sdk::ProbeOutput, String>| {
            let mut asked = Vec::new();
            let actions = testing::with_probe(
                move |cmd| {
                    assert_eq!(cmd, "ls -A /mnt/tmp");
                    answer.clone()
                },
                || testing::heal::<DiskSpace>(&f, &cx),
            );
            asked.extend(actions.into_iter().map(|a| a.name));
            asked
        };
        // The folder is missing, or holds no build directories: nothing to clear.
        assert!(!names(listing(2, "")).contains(&"clear-temporary-files".to_string()));
        assert!(!names(listing(0, "x.txt\n")).contains(&"clear-temporary-files".to_string()));
        // Leftover builds: clearing them comes first when inodes ran out.
        assert_eq!(
            names(listing(0, "nix-build-hello-2.12.drv-0\n"))[0],
            "clear-temporary-files"
        );
    }

    #[test]
    fn out_of_inodes_clears_temporary_files_first() {
        let mut facts = FactsBuilder::new().mount("/", 4 << 30, 2 << 30).build();
        facts.mounts[0].free_inodes = 0;
        let cx = testing::context(facts, "install", &[]);
        let f = Finding::new(CATEGORY, Severity::Error, "no space");
        assert_eq!(
            testing::heal::<DiskSpace>(&f, &cx)[0].name,
            "clear-temporary-files"
        );
    }
}
