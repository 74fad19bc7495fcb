//! disk-fix: the install targets a disk that is not there.
//!
//! Detects a partitioning or formatting tool that cannot find its device, disko's
//! `No device passed for disk`, an installer naming a nonexistent disk, and a boot or install
//! waiting for a device that never appears. Heals by pointing the disko config at the disk a
//! person would pick: the largest empty disk that is not the boot medium.

use nixtest_plugin_sdk::Gate;
use nixtest_plugin_sdk::prelude::*;
use nixtest_plugin_sdk::regex::{self, Regex};
use nixtest_plugin_sdk::shell;
use std::sync::LazyLock;

const CATEGORY: &str = "disk-device";
const DISKO_CONFIG: &str = "disko-config.nix";
const PARTITION_PHASE: &str = "disk_partitioning";

/// Tools that open a block device; their complaint about a missing `/dev/...` is this plugin's.
const DISK_TOOL: &str = r"(?:mkfs(?:\.\w+)?|mke2fs|mkswap|swapon|sgdisk|sfdisk|gdisk|fdisk|parted|partprobe|partx|wipefs|blkdiscard|blockdev|blkid|cryptsetup|zpool|mdadm|pvcreate|vgcreate|lvcreate|losetup|disko(?:-install)?|dd|mount|udevadm)";

struct Rules {
    /// `tool: ... /dev/x ...: No such file or directory` and the like.
    tool_missing: Regex,
    /// sgdisk's own wording, on a line that names no tool.
    sgdisk_problem: Regex,
    /// parted: `Error: Could not stat device /dev/x - No such file or directory.`
    could_not_stat: Regex,
    /// mount: `special device /dev/x does not exist`.
    special_device: Regex,
    no_device_passed: Regex,
    nonexistent_disk: Regex,
    waiting: Regex,
    timed_out: Regex,
    /// The rules' literals, in the order [`Rules::each`] gives them: one pass tells which of
    /// them can match, so a line that holds none (most of those that reach this plugin) runs
    /// no regex at all.
    any: Gate,
}

impl Rules {
    fn each(&self) -> [&Regex; 8] {
        [
            &self.no_device_passed,
            &self.nonexistent_disk,
            &self.timed_out,
            &self.waiting,
            &self.sgdisk_problem,
            &self.could_not_stat,
            &self.special_device,
            &self.tool_missing,
        ]
    }
}

static RULES: LazyLock<Rules> = LazyLock::new(|| {
    let missing = r"(?:No such file or directory|No such device(?: or address)?|does not exist|doesn't exist|not found|cannot find|can't find)";
    let mut rules = Rules {
        tool_missing: Regex::new(&format!(
            r"(?i)^\s*(?:[\w./-]*/)?{DISK_TOOL}(?:\[\d+\])?:.*?(?P<dev>/dev/[\w./:+-]+).*{missing}|^\s*(?:[\w./-]*/)?{DISK_TOOL}:.*(?:unable to open|cannot open|can't open|failed to open|could not open|cannot stat|could not stat)\s+'?(?P<dev2>/dev/[\w./:+-]+)"
        ))
        .unwrap(),
        sgdisk_problem: Regex::new(r"Problem opening (?P<dev>/dev/\S+?)!? for reading").unwrap(),
        could_not_stat: Regex::new(r"(?i)could not stat device (?P<dev>/dev/\S+?)\s*-\s*No such file").unwrap(),
        special_device: Regex::new(r"special device (?P<dev>/dev/\S+) does not exist").unwrap(),
        no_device_passed: Regex::new(r"No device passed for disk '(?P<disk>[^']+)'").unwrap(),
        nonexistent_disk: Regex::new(r"(?i)(?:Specified )?nonexistent disk (?P<dev>\S+)").unwrap(),
        waiting: Regex::new(r"^waiting for device (?P<dev>\S+) to appear").unwrap(),
        timed_out: Regex::new(r"Timed out waiting for device (?P<dev>\S+?)\.?$").unwrap(),
        any: Gate::new([]),
    };
    rules.any = Gate::new(rules.each().map(|r| r.as_str()));
    rules
});

/// What partitioners, formatters and the kernel print when a disk is there but cannot be
/// used: a table that does not fit, a device held busy, I/O errors. Written from the tools'
/// own messages (gptfdisk, util-linux, parted, e2fsprogs, zfs, cryptsetup, the block layer).
const DEVICE_RULES: &[Rule] = &[
    Rule::error(
        CATEGORY,
        r"Could not (?:create|change|delete) partition (?P<n>\d+)",
        "sgdisk could not create partition $n",
    ),
    Rule::error(
        CATEGORY,
        r"Error encountered; not saving changes",
        "sgdisk refused to write the partition table",
    ),
    Rule::error(
        CATEGORY,
        r"(?i)\bsfdisk: (?:failed to|cannot|unable to)|Failed to add #?\d+ partition",
        "sfdisk could not write the partition table",
    ),
    Rule::error(
        CATEGORY,
        r"^\s*Error: (?:Can't have (?:a partition outside the disk|overlapping partitions)|The location .* is outside of the device|Partition\(s\) .* have been written, but we have been unable to inform the kernel|Error informing the kernel|.*unrecognised disk label|Invalid partition table|Unable to satisfy all constraints|Can't create any more partitions|You requested a partition from|Error opening /dev/|Input/output error)",
        "parted could not partition the disk",
    ),
    Rule::error(
        CATEGORY,
        r"(?:BLKRRPART|Re-reading the partition table failed|unable to inform the kernel).*(?:Device or resource busy|failed)",
        "the kernel could not re-read the partition table (disk busy)",
    ),
    Rule::error(
        CATEGORY,
        r"(?P<dev>/dev/\S+?):? (?:is apparently in use by the system|contains a mounted file ?system)",
        "$dev is in use",
    ),
    Rule::error(
        CATEGORY,
        r"Cannot use device (?P<dev>/dev/\S+) which is in use|Device (?P<dev2>/dev/\S+) (?:does not exist or access denied|is in use|not found|is too small)|^\s*(?:\S*/)?(?:mkfs\S*|mke2fs|mdadm|wipefs|sgdisk|sfdisk|parted|partprobe|cryptsetup|zpool|losetup|pvcreate|blockdev|blkdiscard|dd):.*Device or resource busy",
        "cannot use the device",
    ),
    Rule::error(
        CATEGORY,
        r"(?:blk_update_request: |\b)(?:critical )?(?:medium |I/O )error, dev (?P<dev>\w+), sector|Buffer I/O error on dev(?:ice)? (?P<dev2>\w+)",
        "I/O errors on the disk",
    ),
    Rule::error(
        CATEGORY,
        r"Can't lookup blockdev|No medium found|not a block device",
        "the block device is missing",
    ),
    Rule::error(
        CATEGORY,
        r"cannot (?:create|add to|open|label) '[^']+': (?:one or more devices? (?:is|are) currently unavailable|no such device|.*is (?:busy|in use)|.*must be a block device|.*is part of (?:active|exported) pool)",
        "ZFS cannot use the device",
    ),
];

static DEVICE_RULE_SET: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::new(DEVICE_RULES));

/// The detection patterns, for native baselines and documentation.
pub fn patterns() -> Vec<String> {
    let r = &*RULES;
    DEVICE_RULES
        .iter()
        .map(|r| r.pattern.to_string())
        .chain(r.each().iter().map(|re| re.as_str().to_string()))
        .collect()
}

#[derive(Default)]
pub struct DiskFix {
    /// Lines of `waiting for device` not yet resolved, and the devices named.
    waits: Vec<(u32, String)>,
    /// The last line number seen, to tell whether a wait was the end of the stream.
    last_line: u32,
    reported: Vec<String>,
}

impl Plugin for DiskFix {
    fn metadata() -> Metadata {
        Metadata::new("disk-fix", env!("CARGO_PKG_VERSION"))
            .description(
                "Install targets a disk that does not exist: retargets disko to the real disk",
            )
            .categories([CATEGORY])
            .patterns(RULES.each().map(Regex::as_str))
            .rule_patterns(DEVICE_RULES)
    }
}

impl DiskFix {
    fn report(&mut self, device: &str, tool: &str, line: u32) -> Option<Finding> {
        let key = format!("{device}|{tool}");
        if self.reported.contains(&key) {
            return None;
        }
        self.reported.push(key);
        Some(
            Finding::new(
                CATEGORY,
                Severity::Error,
                format!("disk {device} not found ({tool})"),
            )
            .line(line),
        )
    }

    fn check(&mut self, e: &Event) -> Option<Finding> {
        let msg = e.message.as_str();
        let r = &*RULES;
        // Which of the rules match at all; each is then tried in order, as before.
        let hit = r.any.candidates(msg);
        let [
            no_device_passed,
            nonexistent_disk,
            timed_out,
            waiting,
            sgdisk_problem,
            could_not_stat,
            special_device,
            tool_missing,
        ] = std::array::from_fn(|i| hit.contains(&i));
        if no_device_passed && let Some(c) = r.no_device_passed.captures(msg) {
            return self.report(
                &format!("for disk '{}'", &c["disk"]),
                "disko-install",
                e.line,
            );
        }
        if nonexistent_disk && let Some(c) = r.nonexistent_disk.captures(msg) {
            return self.report(&c["dev"], "partitioner", e.line);
        }
        if timed_out && let Some(c) = r.timed_out.captures(msg) {
            let dev = c["dev"].to_string();
            self.waits.retain(|(_, d)| *d != dev);
            return self.report(&dev, "timed out waiting", e.line);
        }
        if waiting && let Some(c) = r.waiting.captures(msg) {
            self.waits.push((e.line, c["dev"].to_string()));
            return None;
        }
        for (matched, rule, tool) in [
            (sgdisk_problem, &r.sgdisk_problem, "sgdisk"),
            (could_not_stat, &r.could_not_stat, "parted"),
            (special_device, &r.special_device, "mount"),
        ] {
            if matched && let Some(c) = rule.captures(msg) {
                return self.report(&c["dev"], tool, e.line);
            }
        }
        if tool_missing && let Some(c) = r.tool_missing.captures(msg) {
            let dev = c.name("dev").or(c.name("dev2"))?.as_str();
            return self.report(dev.trim_end_matches([':', '.', ',']), tool_of(msg), e.line);
        }
        let f = DEVICE_RULE_SET.check(e)?;
        let key = f.summary.clone();
        if self.reported.contains(&key) {
            return None;
        }
        self.reported.push(key);
        Some(f)
    }
}

fn tool_of(msg: &str) -> &str {
    let head = msg.trim_start().split([':', ' ']).next().unwrap_or("");
    let tool = head.rsplit('/').next().unwrap_or(head);
    if tool.is_empty() { "disk tool" } else { tool }
}

impl Detector for DiskFix {
    fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
        let mut found = Vec::new();
        for e in events {
            self.last_line = self.last_line.max(e.line);
            if let Some(f) = self.check(e) {
                found.push(f);
            }
        }
        // A boot that keeps waiting for several devices will not find them.
        if self.waits.len() >= 3 {
            found.extend(self.unresolved_waits());
        }
        found
    }

    fn finish(&mut self) -> Vec<Finding> {
        self.unresolved_waits().into_iter().collect()
    }
}

impl DiskFix {
    fn unresolved_waits(&mut self) -> Option<Finding> {
        if self.waits.is_empty() {
            return None;
        }
        let waits = std::mem::take(&mut self.waits);
        let first = waits[0].1.clone();
        let finding = self.report(&first, "device never appeared", waits[0].0)?;
        Some(finding.lines(waits.iter().map(|(l, _)| *l)))
    }
}

/// `device = "/dev/...";` in a disko config.
static DEVICE_ASSIGNMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(\bdevice\s*=\s*")(/dev/[^"]+)(")"#).unwrap());

impl Healer for DiskFix {
    fn heal(&mut self, finding: &Finding, cx: &HealContext) -> Vec<HealingAction> {
        if finding.category != CATEGORY {
            return Vec::new();
        }
        // The profile's disko-config.nix, else the file of a flake that declares disko's
        // devices (a flake names its files as it likes: hosts/web/disko.nix, …).
        let Some((file, config)) =
            cx.config(DISKO_CONFIG)
                .map(|c| (DISKO_CONFIG, c))
                .or_else(|| {
                    cx.config
                        .iter()
                        .find(|f| {
                            f.path.ends_with(".nix")
                                && f.content.contains("disko.devices")
                                && DEVICE_ASSIGNMENT.is_match(&f.content)
                        })
                        .map(|f| (f.path.as_str(), f.content.as_str()))
                })
        else {
            return Vec::new();
        };
        // The guest names its disks: a path that is not plain would become Nix code in the
        // config it is written into.
        let Some(target) = cx
            .facts
            .largest_empty_disk()
            .filter(|d| shell::is_plain_device(&d.path))
        else {
            return Vec::new();
        };
        // The devices the config names that the guest does not have.
        let missing: Vec<&str> = DEVICE_ASSIGNMENT
            .captures_iter(config)
            .map(|c| c.get(2).unwrap().as_str())
            .filter(|dev| cx.facts.disk(dev).is_none())
            // The facts list disks by kernel name: a /dev/disk/by-* link is only missing when
            // the failure says so.
            .filter(|dev| {
                !dev.starts_with("/dev/disk/")
                    || finding.summary.contains(dev)
                    || finding.details.iter().any(|d| d.value.contains(dev))
            })
            .collect();
        if missing.is_empty() {
            return Vec::new();
        }
        let rewritten = DEVICE_ASSIGNMENT.replace_all(config, |c: &regex::Captures<'_>| {
            let dev = &c[2];
            if missing.contains(&dev) {
                format!("{}{}{}", &c[1], target.path, &c[3])
            } else {
                c[0].to_string()
            }
        });
        let mut distinct = missing.clone();
        distinct.dedup();
        // One missing disk and one obvious target: high confidence. Several disks folded onto
        // one target is a guess.
        let confidence = if distinct.len() == 1 { 0.9 } else { 0.5 };
        let phase = if cx.phase.is_empty() {
            PARTITION_PHASE
        } else {
            cx.phase.as_str()
        };
        vec![
            HealingAction::new(
                "retarget-disko-device",
                format!(
                    "{} does not exist; use {} ({} GiB, empty) in {file}",
                    distinct.join(", "),
                    target.path,
                    target.size_bytes >> 30
                ),
                confidence,
            )
            .config_change(file, rewritten.into_owned())
            .retry(phase),
        ]
    }
}

nixtest_plugin_sdk::export_plugin!(DiskFix);

#[cfg(test)]
mod tests {
    use super::*;
    use nixtest_plugin_sdk::testing::{self, FactsBuilder};

    fn errors(log: &str) -> Vec<Finding> {
        testing::errors(&testing::detect_str::<DiskFix>(log))
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn the_rule_set_finds_what_each_rule_finds_on_recorded_logs() {
        let lines = testing::assert_rule_set_agrees_on_recorded_logs(
            DEVICE_RULES,
            env!("CARGO_MANIFEST_DIR"),
        );
        let own: Vec<&str> = RULES.each().iter().map(|r| r.as_str()).collect();
        let matched = testing::assert_gate_admits(&own, &lines);
        eprintln!("{matched} (line, rule) pairs matched the device rules");
        assert!(
            matched >= 10,
            "only {matched} lines matched the device rules"
        );
    }

    #[test]
    fn tools_that_cannot_open_their_device() {
        for line in [
            "mkfs.fat: unable to open /dev/nvme0n11: No such file or directory",
            "sfdisk: cannot open /dev/sdz: No such file or directory",
            "wipefs: error: /dev/vdz: probing initialization failed: No such file or directory",
            "mkfs.ext4: The file /dev/sdb does not exist and no size was specified.",
            "Problem opening /dev/vdz for reading! Error is 2.",
            "Error: Could not stat device /dev/sdx - No such file or directory.",
            "mount: /mnt: special device /dev/disk/by-label/nixos does not exist.",
            "error: No device passed for disk 'NVME'. Pass `--disk NVME /dev/name` via commandline",
            "Mar 04 23:01:39 localhost systemd[1]: Timed out waiting for device /dev/gpt-auto-root.",
            "Could not create partition 2 from 1050624 to 2099199",
            "Error encountered; not saving changes.",
            "Error: Can't have a partition outside the disk!",
            "Error: Partition(s) 1 on /dev/sda have been written, but we have been unable to inform the kernel of the change, probably because it/they are in use.",
            "sfdisk: Failed to add #2 partition: Numerical result out of range",
            "/dev/sda1 is apparently in use by the system; will not make a filesystem here!",
            "[  12.3] blk_update_request: I/O error, dev vda, sector 2048 op 0x1:(WRITE)",
            "mount: /mnt-root/iso: fsconfig() failed: /dev/root: Can't lookup blockdev.",
            "cannot create 'zroot': one or more devices is currently unavailable",
            "Device /dev/sdz does not exist or access denied.",
        ] {
            let found = errors(line);
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!(found[0].lines, vec![1]);
        }
    }

    #[test]
    fn harmless_missing_files_are_not_disks() {
        for line in [
            "rmdir: failed to remove '/lib': No such file or directory",
            "sshd[601]: lastlog_openseek: Couldn't stat /var/log/lastlog: No such file or directory",
            "ls: cannot access '/dev/disk/by-label': No such file or directory",
            "sgdisk --new=1:0:+100M /dev/vda",
            "The operation has completed successfully.",
        ] {
            assert!(errors(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn waiting_that_never_ends_is_an_error() {
        let log = "waiting for device /dev/disk/by-label/nixos to appear....\n";
        assert_eq!(errors(log).len(), 1);
    }

    #[test]
    fn same_device_reported_once() {
        let log = "sfdisk: cannot open /dev/sdz: No such file or directory\n\
                   sfdisk: cannot open /dev/sdz: No such file or directory\n";
        assert_eq!(errors(log).len(), 1);
    }

    const CONFIG: &str = r#"{
  disko.devices.disk.main = {
    type = "disk";
    device = "/dev/sdz";
    content = { type = "gpt"; };
  };
}
"#;

    #[test]
    fn a_flake_s_disko_file_is_healed_and_its_links_kept() {
        let facts = FactsBuilder::new()
            .disk("/dev/vda", 8 << 30, false, &[])
            .build();
        let config = "{ disko.devices.disk.main = { device = \"/dev/sdz\"; };\n  \
                      disko.devices.disk.data = { device = \"/dev/disk/by-id/virtio-data\"; }; }\n";
        let cx = testing::context(
            facts,
            "disk_partitioning",
            &[
                ("flake.nix", "{ outputs = _: { }; }"),
                ("hosts/web/disko.nix", config),
            ],
        );
        let finding = Finding::new(CATEGORY, Severity::Error, "disk /dev/sdz not found");
        let actions = testing::heal::<DiskFix>(&finding, &cx);
        assert_eq!(actions.len(), 1);
        let change = &actions[0].config_changes[0];
        assert_eq!(change.path, "hosts/web/disko.nix");
        assert_eq!(change.content, config.replace("/dev/sdz", "/dev/vda"));
    }

    #[test]
    fn a_disk_the_guest_names_with_nix_code_is_never_written_into_the_config() {
        let facts = FactsBuilder::new()
            .disk("/dev/vda", 1 << 30, true, &["/"])
            .disk(
                "/dev/vdb\"; imports = [ /tmp/pwned ]; x = \"",
                8 << 30,
                false,
                &[],
            )
            .build();
        let cx = testing::context(facts, "disk_partitioning", &[(DISKO_CONFIG, CONFIG)]);
        let finding = Finding::new(CATEGORY, Severity::Error, "disk /dev/sdz not found");
        let actions = testing::heal::<DiskFix>(&finding, &cx);
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn heal_rewrites_only_the_missing_device() {
        let facts = FactsBuilder::new()
            .disk("/dev/vda", 1 << 30, true, &["/"])
            .disk("/dev/vdb", 8 << 30, false, &[])
            .disk("/dev/vdc", 2 << 30, false, &[])
            .build();
        let cx = testing::context(facts, "disk_partitioning", &[(DISKO_CONFIG, CONFIG)]);
        let finding = Finding::new(CATEGORY, Severity::Error, "disk /dev/sdz not found");
        let actions = testing::heal::<DiskFix>(&finding, &cx);
        assert_eq!(actions.len(), 1);
        let a = &actions[0];
        assert_eq!(a.name, "retarget-disko-device");
        assert_eq!(a.retry_phase.as_deref(), Some("disk_partitioning"));
        assert_eq!(a.config_changes.len(), 1);
        assert_eq!(a.config_changes[0].path, DISKO_CONFIG);
        assert_eq!(
            a.config_changes[0].content,
            CONFIG.replace("/dev/sdz", "/dev/vdb")
        );
        assert!((a.confidence - 0.9).abs() < 1e-6);
    }

    #[test]
    fn no_action_when_every_device_exists() {
        let facts = FactsBuilder::new()
            .disk("/dev/sdz", 8 << 30, false, &[])
            .build();
        let cx = testing::context(facts, "disk_partitioning", &[(DISKO_CONFIG, CONFIG)]);
        let finding = Finding::new(CATEGORY, Severity::Error, "x");
        assert!(testing::heal::<DiskFix>(&finding, &cx).is_empty());
    }
}
