//! Facts about the guest (disks, memory, swap, free space, DNS, reachability), gathered by the
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
pub struct Reachability {
    pub target: String,
    pub reachable: bool,
    pub detail: String,
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
    pub reachability: Vec<Reachability>,
    pub substituters: Vec<String>,
}
