//! The user's installer ISO as the VM's source. The ISO is only ever read (xorriso with an
//! input drive and no output drive, and a read-only CD-ROM in the VM); what is taken from it
//! (its kernel, initrd and default boot entry) is cached under its SHA-256, so a changed ISO
//! is a new entry and an unchanged one is read once.

use super::bootcfg::{BootConfig, BootEntry};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;

/// Where each boot loader's configuration sits on NixOS's ISO (and on most others'), in the
/// order they are tried: isolinux first, since its default entry is the installer.
const BOOT_CONFIGS: &[(&str, Loader)] = &[
    ("/isolinux/isolinux.cfg", Loader::Isolinux),
    ("/syslinux/syslinux.cfg", Loader::Isolinux),
    ("/EFI/BOOT/grub.cfg", Loader::Grub),
    ("/EFI/boot/grub.cfg", Loader::Grub),
    ("/boot/grub/grub.cfg", Loader::Grub),
];

#[derive(Debug, Clone, Copy)]
enum Loader {
    Isolinux,
    Grub,
}

#[derive(Debug, Error)]
pub enum IsoError {
    #[error("the installer ISO {0} does not exist or cannot be read: {1}")]
    Missing(PathBuf, std::io::Error),
    #[error("reading the ISO needs xorriso (`apt-get install xorriso`): {0}")]
    Xorriso(std::io::Error),
    #[error("{iso} is not an ISO 9660 image (xorriso: {seen}); give --iso an installer ISO")]
    NotAnIso { iso: PathBuf, seen: String },
    #[error(
        "{iso} has no boot configuration nixtest can read (looked for {}); is it an installer \
         ISO?",
        looked.join(", ")
    )]
    NoBootConfig { iso: PathBuf, looked: Vec<String> },
    #[error("{iso}: {file} has no boot entry with a kernel")]
    NoEntry { iso: PathBuf, file: String },
    #[error("{iso}: the boot entry {entry} names {file}, which the ISO does not have")]
    MissingFile {
        iso: PathBuf,
        entry: String,
        file: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IsoError {
    let what = what.into();
    move |source| IsoError::Io { what, source }
}

/// What a run boots from an installer ISO.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PreparedIso {
    /// The ISO itself, attached read-only as a CD-ROM.
    pub iso: PathBuf,
    pub sha256: String,
    pub volume_id: String,
    /// Where the boot entry was read (`/isolinux/isolinux.cfg`, …).
    pub boot_file: String,
    pub entry_label: String,
    pub entry_kernel: String,
    pub entry_initrd: Option<String>,
    /// The entry's command line with the serial console added.
    pub cmdline: String,
    /// The kernel and initrd taken from the ISO, in the cache.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
}

/// The SHA-256 of a file, read in blocks (an installer ISO is a gigabyte or more).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn xorriso(iso: &Path) -> Command {
    let mut c = Command::new("xorriso");
    // An input drive only: xorriso never writes to it.
    c.args(["-abort_on", "FAILURE", "-osirrox", "on", "-indev"])
        .arg(iso);
    c
}

/// The volume ID (the label `root=LABEL=` finds the CD by).
fn volume_id(iso: &Path) -> Result<String, IsoError> {
    let out = xorriso(iso)
        .arg("-pvd_info")
        .output()
        .map_err(IsoError::Xorriso)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("No ISO 9660 image") {
        return Err(IsoError::NotAnIso {
            iso: iso.to_path_buf(),
            seen: last_line(&stderr),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout
        .lines()
        .find_map(|l| l.strip_prefix("Volume Id    :"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default())
}

/// Copies one file out of the ISO; `Ok(false)` when the ISO does not have it.
fn extract(iso: &Path, inside: &str, to: &Path) -> Result<bool, IsoError> {
    let out = xorriso(iso)
        .arg("-extract")
        .arg(inside)
        .arg(to)
        .output()
        .map_err(IsoError::Xorriso)?;
    if out.status.success() && to.is_file() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such file or directory") {
        return Ok(false);
    }
    Err(IsoError::NotAnIso {
        iso: iso.to_path_buf(),
        seen: last_line(&stderr),
    })
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

impl PreparedIso {
    /// Reads the ISO's default boot entry and takes its kernel and initrd into
    /// `cache/isos/HASH/`; a second call for the same bytes only hashes the ISO.
    pub fn prepare(iso: &Path, cache: &Path) -> Result<PreparedIso, IsoError> {
        let iso = std::path::absolute(iso).unwrap_or_else(|_| iso.to_path_buf());
        std::fs::File::open(&iso).map_err(|e| IsoError::Missing(iso.clone(), e))?;
        let sha256 = sha256_file(&iso).map_err(|e| IsoError::Missing(iso.clone(), e))?;
        let dir = cache.join("isos").join(&sha256[..16]);
        let meta = dir.join("boot.json");
        if let Ok(text) = std::fs::read_to_string(&meta)
            && let Ok(mut p) = serde_json::from_str::<PreparedIso>(&text)
            && p.sha256 == sha256
            && p.kernel.is_file()
            && p.initrd.as_ref().is_none_or(|i| i.is_file())
            && p.cached_iso().is_file()
        {
            // The same bytes may sit at another path now.
            p.iso = iso;
            return Ok(p);
        }
        let volume_id = volume_id(&iso)?;
        std::fs::create_dir_all(cache.join("isos")).map_err(io("creating the ISO cache"))?;
        let staging = tempfile::Builder::new()
            .prefix(".reading-")
            .tempdir_in(cache.join("isos"))
            .map_err(io("creating the ISO cache"))?;
        let mut looked = Vec::new();
        let mut found: Option<(String, BootEntry)> = None;
        for (file, loader) in BOOT_CONFIGS {
            looked.push(file.to_string());
            let to = staging.path().join("boot.cfg");
            if !extract(&iso, file, &to)? {
                continue;
            }
            let text = std::fs::read_to_string(&to).map_err(io(format!("reading {file}")))?;
            let cfg = match loader {
                Loader::Isolinux => BootConfig::parse_isolinux(&text),
                Loader::Grub => BootConfig::parse_grub(&text),
            };
            match cfg.default_entry() {
                Some(e) => {
                    found = Some((file.to_string(), e.clone()));
                    break;
                }
                None => {
                    return Err(IsoError::NoEntry {
                        iso,
                        file: file.to_string(),
                    });
                }
            }
        }
        let Some((boot_file, entry)) = found else {
            return Err(IsoError::NoBootConfig { iso, looked });
        };
        let take = |inside: &str, name: &str| -> Result<PathBuf, IsoError> {
            let to = staging.path().join(name);
            if extract(&iso, inside, &to)? {
                Ok(dir.join(name))
            } else {
                Err(IsoError::MissingFile {
                    iso: iso.clone(),
                    entry: entry.label.clone(),
                    file: inside.to_string(),
                })
            }
        };
        let kernel = take(&entry.kernel, "kernel")?;
        let initrd = entry
            .initrd
            .as_deref()
            .map(|i| take(i, "initrd"))
            .transpose()?;
        let _ = std::fs::remove_file(staging.path().join("boot.cfg"));
        // The VM reads a copy: libvirt relabels (chowns) what a VM uses, and the user's file
        // is left as it is, its folder need not be readable by QEMU's user either.
        let copy = staging.path().join("installer.iso");
        std::fs::copy(&iso, &copy).map_err(io("copying the ISO into the cache"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444))
            .map_err(io("copying the ISO into the cache"))?;
        let prepared = PreparedIso {
            iso: iso.clone(),
            sha256,
            volume_id,
            boot_file,
            entry_label: entry.label.clone(),
            entry_kernel: entry.kernel.clone(),
            entry_initrd: entry.initrd.clone(),
            cmdline: entry.serial_cmdline(),
            kernel,
            initrd,
        };
        std::fs::write(
            staging.path().join("boot.json"),
            serde_json::to_vec_pretty(&prepared).expect("serialises"),
        )
        .map_err(io("writing the ISO cache"))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(staging.keep(), &dir).map_err(io("writing the ISO cache"))?;
        // QEMU runs as another user and must reach the files.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io("writing the ISO cache"))?;
        Ok(prepared)
    }

    /// The cache's copy of the ISO, which the VM's CD-ROM reads.
    pub fn cached_iso(&self) -> PathBuf {
        self.kernel.with_file_name("installer.iso")
    }

    /// The label the entry's initrd looks for, when it mounts its root by label.
    pub fn root_label(&self) -> Option<&str> {
        self.cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root=LABEL="))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_iso(dir: &Path, files: &[(&str, &str)], label: &str) -> PathBuf {
        let tree = dir.join("tree");
        for (p, c) in files {
            let path = tree.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        let iso = dir.join("x.iso");
        let ok = Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-R", "-V", label, "-o"])
            .arg(&iso)
            .arg(&tree)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        iso
    }

    fn have_xorriso() -> bool {
        Command::new("xorriso").arg("-version").output().is_ok()
    }

    #[test]
    fn the_default_entry_is_taken_and_cached_by_hash() {
        if !have_xorriso() {
            eprintln!("skipped: no xorriso (scripts/setup.sh installs it)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cfg = "DEFAULT boot\nLABEL boot\nLINUX /boot/nix/store/k/bzImage\n\
                   APPEND init=/nix/store/s/init root=LABEL=nixos-test-iso boot.shell_on_fail\n\
                   INITRD /boot/nix/store/i/initrd\n";
        let iso = make_iso(
            tmp.path(),
            &[
                ("isolinux/isolinux.cfg", cfg),
                ("boot/nix/store/k/bzImage", "KERNEL"),
                ("boot/nix/store/i/initrd", "INITRD"),
            ],
            "nixos-test-iso",
        );
        let before = sha256_file(&iso).unwrap();
        let cache = tmp.path().join("cache");
        let p = PreparedIso::prepare(&iso, &cache).unwrap();
        assert_eq!(p.volume_id, "nixos-test-iso");
        assert_eq!(p.root_label(), Some("nixos-test-iso"));
        assert_eq!(std::fs::read_to_string(&p.kernel).unwrap(), "KERNEL");
        assert_eq!(
            std::fs::read_to_string(p.initrd.as_ref().unwrap()).unwrap(),
            "INITRD"
        );
        assert!(
            p.cmdline.ends_with("console=ttyS0,115200n8"),
            "{}",
            p.cmdline
        );
        assert_eq!(sha256_file(&iso).unwrap(), before, "the ISO was written");
        // Cached: the kernel file is the one taken the first time.
        let again = PreparedIso::prepare(&iso, &cache).unwrap();
        assert_eq!(again.kernel, p.kernel);
    }

    #[test]
    fn wrong_isos_are_named_for_what_they_lack() {
        if !have_xorriso() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let not_iso = tmp.path().join("not.iso");
        std::fs::write(&not_iso, vec![7u8; 100_000]).unwrap();
        let e = PreparedIso::prepare(&not_iso, &cache).unwrap_err();
        assert!(matches!(e, IsoError::NotAnIso { .. }), "{e}");
        let plain = make_iso(tmp.path(), &[("README", "hello")], "DATA");
        let e = PreparedIso::prepare(&plain, &cache).unwrap_err();
        assert!(e.to_string().contains("isolinux.cfg"), "{e}");
        let e = PreparedIso::prepare(&tmp.path().join("nope.iso"), &cache).unwrap_err();
        assert!(matches!(e, IsoError::Missing(..)), "{e}");
    }
}
