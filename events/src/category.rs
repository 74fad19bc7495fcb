//! What kind of problem a finding is. The built-in categories are the ones nixtest's own
//! plugins report and the host orders root causes by; a plugin may report any other short
//! lowercase word (kept as [`Category::Custom`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Category {
    /// The disk layout names a device that is missing, busy or unusable.
    DiskDevice,
    /// A filesystem or the store ran out of space or inodes.
    DiskFull,
    /// Out of memory: the OOM killer, allocation failures.
    Oom,
    /// A download, a binary cache or name resolution failed.
    Network,
    /// A fixed-output derivation's hash did not match.
    HashMismatch,
    /// The Nix expression did not evaluate.
    EvalError,
    /// A derivation's build failed.
    BuildFailure,
    /// The boot loader could not be installed.
    Bootloader,
    /// A filesystem could not be mounted (or unmounted).
    MountFs,
    /// A filesystem is read-only.
    ReadonlyFs,
    /// An SSH connection or login failed.
    Ssh,
    /// A phase stopped making progress.
    Hang,
    /// Something failed and no rule knows what.
    Other,
    /// A plugin's own category.
    Custom(String),
}

impl Category {
    /// Every built-in category, in the host's root-cause order (causes before effects).
    pub const BUILT_IN: [Category; 13] = [
        Category::Oom,
        Category::DiskFull,
        Category::DiskDevice,
        Category::ReadonlyFs,
        Category::HashMismatch,
        Category::Network,
        Category::Ssh,
        Category::MountFs,
        Category::Bootloader,
        Category::EvalError,
        Category::BuildFailure,
        Category::Hang,
        Category::Other,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Category::DiskDevice => "disk-device",
            Category::DiskFull => "disk-full",
            Category::Oom => "oom",
            Category::Network => "network",
            Category::HashMismatch => "hash-mismatch",
            Category::EvalError => "eval-error",
            Category::BuildFailure => "build-failure",
            Category::Bootloader => "bootloader",
            Category::MountFs => "mount-fs",
            Category::ReadonlyFs => "readonly-fs",
            Category::Ssh => "ssh",
            Category::Hang => "hang",
            Category::Other => "other",
            Category::Custom(s) => s,
        }
    }

    /// The category a name stands for: a built-in one, or a custom one.
    pub fn from_name(name: &str) -> Category {
        Category::BUILT_IN
            .into_iter()
            .find(|c| c.as_str() == name)
            .unwrap_or_else(|| Category::Custom(name.to_string()))
    }

    pub fn is_built_in(&self) -> bool {
        !matches!(self, Category::Custom(_))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Category {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Category {
    fn from(s: &str) -> Self {
        Category::from_name(s)
    }
}

impl From<String> for Category {
    fn from(s: String) -> Self {
        match Category::from_name(&s) {
            Category::Custom(_) => Category::Custom(s),
            c => c,
        }
    }
}

impl PartialEq<str> for Category {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Category {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Category {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Category::from(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Category::BUILT_IN {
            assert_eq!(Category::from_name(c.as_str()), c);
            assert!(c.is_built_in());
        }
        let custom = Category::from("zfs-pool");
        assert_eq!(custom, Category::Custom("zfs-pool".into()));
        assert!(!custom.is_built_in());
        assert_eq!(
            serde_json::to_string(&Category::DiskFull).unwrap(),
            "\"disk-full\""
        );
        let back: Category = serde_json::from_str("\"oom\"").unwrap();
        assert_eq!(back, Category::Oom);
    }
}
