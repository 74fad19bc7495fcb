//! Facts about the guest (disks, memory, swap, free space, DNS, binary caches), gathered by the
//! host and handed to healers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub partitions: u32,
    pub mountpoints: Vec<String>,
    pub boot_medium: bool,
    pub removable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub path: String,
    pub device: String,
    pub fs_type: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub free_inodes: u64,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFacts {
    pub disks: Vec<Disk>,
    pub mounts: Vec<Mount>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub cpus: u32,
    pub resolvers: Vec<String>,
    pub substituters: Vec<String>,
}

/// One guest command that prints everything the facts need, in sections.
pub const GATHER_COMMAND: &str = "echo '## lsblk'; lsblk -b -J -o NAME,PATH,SIZE,TYPE,RM,MOUNTPOINTS; \
echo '## df'; df -B1 --output=target,source,fstype,size,avail,iavail 2>/dev/null; \
echo '## mounts'; cat /proc/mounts; \
echo '## meminfo'; cat /proc/meminfo; \
echo '## nproc'; nproc; \
echo '## resolv'; cat /etc/resolv.conf 2>/dev/null; \
echo '## nixconf'; cat /etc/nix/nix.conf 2>/dev/null; echo '## end'";

fn section<'a>(text: &'a str, name: &str) -> &'a str {
    let marker = format!("## {name}\n");
    let Some(start) = text.find(&marker) else {
        return "";
    };
    let rest = &text[start + marker.len()..];
    rest.find("\n## ").map_or(rest, |end| &rest[..end + 1])
}

/// Parses the output of [`GATHER_COMMAND`]; `substituters` are the profile's.
pub fn parse_gathered(text: &str, substituters: &[String]) -> GuestFacts {
    let mut facts = GuestFacts {
        cpus: section(text, "nproc").trim().parse().unwrap_or(1),
        ..Default::default()
    };
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(section(text, "lsblk")) {
        for dev in v["blockdevices"].as_array().into_iter().flatten() {
            if dev["type"] != "disk" {
                continue;
            }
            let children = dev["children"].as_array().cloned().unwrap_or_default();
            let mut mountpoints: Vec<String> = Vec::new();
            for d in std::iter::once(dev).chain(children.iter()) {
                for m in d["mountpoints"].as_array().into_iter().flatten() {
                    if let Some(m) = m.as_str() {
                        mountpoints.push(m.to_string());
                    }
                }
            }
            let num = |v: &serde_json::Value| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            };
            facts.disks.push(Disk {
                name: dev["name"].as_str().unwrap_or("").to_string(),
                path: dev["path"].as_str().unwrap_or("").to_string(),
                size_bytes: num(&dev["size"]).unwrap_or(0),
                partitions: children.len() as u32,
                boot_medium: mountpoints.iter().any(|m| m == "/"),
                removable: dev["rm"].as_bool().unwrap_or(false) || dev["rm"] == "1",
                mountpoints,
            });
        }
    }
    let read_only: Vec<&str> = section(text, "mounts")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[3].split(',').any(|o| o == "ro")).then(|| f[1])
        })
        .collect();
    for line in section(text, "df").lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        facts.mounts.push(Mount {
            path: f[0].to_string(),
            device: f[1].to_string(),
            fs_type: f[2].to_string(),
            size_bytes: f[3].parse().unwrap_or(0),
            free_bytes: f[4].parse().unwrap_or(0),
            // Filesystems without inodes (vfat) print "-": never "out of inodes".
            free_inodes: f[5].parse().unwrap_or(u64::MAX),
            read_only: read_only.contains(&f[0]),
        });
    }
    let kib = |key: &str| -> u64 {
        section(text, "meminfo")
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    facts.memory_total_bytes = kib("MemTotal:");
    facts.memory_available_bytes = kib("MemAvailable:");
    facts.swap_total_bytes = kib("SwapTotal:");
    facts.swap_free_bytes = kib("SwapFree:");
    facts.resolvers = section(text, "resolv")
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .collect();
    let mut subs: Vec<String> = section(text, "nixconf")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("substituters"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for s in substituters {
        if !subs.contains(s) {
            subs.push(s.clone());
        }
    }
    facts.substituters = subs;
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"## lsblk
{"blockdevices": [
  {"name":"vda", "path":"/dev/vda", "size":1258291200, "type":"disk", "rm":false, "mountpoints":["/"]},
  {"name":"vdb", "path":"/dev/vdb", "size":4294967296, "type":"disk", "rm":false, "mountpoints":[null]}
]}
## df
Mounted on Filesystem Type 1B-blocks Avail IFree
/ /dev/vda ext4 1200000000 800000000 70000
/mnt /dev/vdb2 ext4 4000000000 3000000000 250000
## mounts
/dev/vda / ext4 rw,relatime 0 0
/dev/vdb2 /mnt ext4 rw,relatime 0 0
## meminfo
MemTotal:         468000 kB
MemAvailable:     400000 kB
SwapTotal:             0 kB
SwapFree:              0 kB
## nproc
1
## resolv
## nixconf
substituters = http://cache.nixtest.internal:8080
## end
"#;

    #[test]
    fn parses_what_the_guest_prints() {
        let f = parse_gathered(SAMPLE, &["http://10.0.2.100:8080".to_string()]);
        assert_eq!(f.disks.len(), 2);
        assert!(f.disks[0].boot_medium);
        assert_eq!(f.disks[1].path, "/dev/vdb");
        assert!(!f.disks[1].boot_medium && f.disks[1].mountpoints.is_empty());
        assert_eq!(f.mounts[1].path, "/mnt");
        assert_eq!(f.mounts[1].free_bytes, 3_000_000_000);
        assert_eq!(f.memory_total_bytes, 468_000 * 1024);
        assert_eq!(f.cpus, 1);
        assert_eq!(
            f.substituters,
            vec![
                "http://cache.nixtest.internal:8080",
                "http://10.0.2.100:8080"
            ]
        );
    }
}
