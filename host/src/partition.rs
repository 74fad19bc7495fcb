//! Spreading a run's profiles over CI machines, with cargo-nextest's conventions:
//! `hash:M/N` takes the profiles whose name hashes to bucket M (stable whatever else is in
//! the list), `slice:M/N` takes every N-th profile of the list starting at the M-th. M counts
//! from 1. The shares of one list are disjoint and together hold every profile once; each
//! share's report says which share it is and of what list, so that `nixtest report merge`
//! can check that nothing is missing or doubled.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hash,
    Slice,
}

/// This machine's share of the profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub kind: Kind,
    /// 1-based.
    pub shard: u32,
    pub total: u32,
}

#[derive(Debug, Error, PartialEq)]
pub enum PartitionError {
    #[error("{0:?} is not a partition: use hash:M/N or slice:M/N with 1 ≤ M ≤ N (e.g. hash:1/3)")]
    Syntax(String),
    #[error("count:M/N is deprecated (as in cargo-nextest); use slice:M/N, which is the same")]
    Count,
}

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PartitionError::Syntax(s.to_string());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "hash" => Kind::Hash,
            "slice" => Kind::Slice,
            "count" => return Err(PartitionError::Count),
            _ => return Err(bad()),
        };
        let (m, n) = rest.split_once('/').ok_or_else(bad)?;
        let shard: u32 = m.parse().map_err(|_| bad())?;
        let total: u32 = n.parse().map_err(|_| bad())?;
        if shard == 0 || total == 0 || shard > total {
            return Err(bad());
        }
        Ok(Partition { kind, shard, total })
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Hash => "hash",
            Kind::Slice => "slice",
        };
        write!(f, "{kind}:{}/{}", self.shard, self.total)
    }
}

/// A name's bucket: the first 8 bytes of its SHA-256, so the same on every machine and
/// with every build.
fn bucket(name: &str, total: u32) -> u32 {
    let d = Sha256::digest(name.as_bytes());
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (n % u64::from(total)) as u32
}

impl Partition {
    /// Whether the `index`-th profile of the list, named `name`, is this machine's.
    pub fn takes(&self, index: usize, name: &str) -> bool {
        let b = match self.kind {
            Kind::Hash => bucket(name, self.total),
            Kind::Slice => (index % self.total as usize) as u32,
        };
        b == self.shard - 1
    }

    /// This machine's share of `names`, in their order (as indices into `names`).
    pub fn select(&self, names: &[&str]) -> Vec<usize> {
        (0..names.len())
            .filter(|&i| self.takes(i, names[i]))
            .collect()
    }
}

/// What a share's report says about the run it is part of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// `hash:M/N` or `slice:M/N`.
    pub partition: String,
    /// Every profile of the whole run, in its order.
    pub of: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("profile-{i}")).collect()
    }

    #[test]
    fn every_profile_is_in_exactly_one_share() {
        for total in 1..=5u32 {
            for kind in ["hash", "slice"] {
                let list = names(17);
                let refs: Vec<&str> = list.iter().map(String::as_str).collect();
                let mut seen = vec![0; list.len()];
                for shard in 1..=total {
                    let p: Partition = format!("{kind}:{shard}/{total}").parse().unwrap();
                    for i in p.select(&refs) {
                        seen[i] += 1;
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "{kind} /{total}: {seen:?}");
            }
        }
    }

    #[test]
    fn shares_are_stable_and_hash_ignores_the_rest_of_the_list() {
        let p: Partition = "hash:2/3".parse().unwrap();
        let a = ["vm", "workstation", "server", "laptop"];
        let b = ["laptop", "server", "new-one", "vm", "workstation"];
        let pick = |l: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = p.select(l).iter().map(|&i| l[i].to_string()).collect();
            v.sort();
            v
        };
        let mut from_b = pick(&b);
        from_b.retain(|n| n != "new-one");
        assert_eq!(pick(&a), from_b);
        // Pinned: a change of hash would move profiles between CI machines.
        assert_eq!(
            [
                bucket("vm", 3),
                bucket("workstation", 3),
                bucket("server", 3)
            ],
            [2, 1, 2]
        );
        let s: Partition = "slice:1/2".parse().unwrap();
        assert_eq!(s.select(&a), vec![0, 2]);
        assert_eq!(s.to_string(), "slice:1/2");
    }

    #[test]
    fn bad_partitions_say_what_is_expected() {
        for bad in [
            "hash",
            "hash:0/2",
            "hash:3/2",
            "slice:1/0",
            "mod:1/2",
            "hash:a/b",
            "hash:1",
        ] {
            let e = bad.parse::<Partition>().unwrap_err();
            assert!(
                e.to_string().contains("hash:M/N or slice:M/N"),
                "{bad}: {e}"
            );
        }
        assert_eq!("count:1/2".parse::<Partition>(), Err(PartitionError::Count));
    }
}
