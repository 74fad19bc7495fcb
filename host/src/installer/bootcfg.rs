//! An installer ISO's own boot configuration: which kernel, initrd and command line its
//! default entry boots. NixOS writes `isolinux/isolinux.cfg` (BIOS) and `EFI/BOOT/grub.cfg`
//! (UEFI) in `nixos/modules/installer/cd-dvd/iso-image.nix`; the paths inside changed between
//! releases (`/boot/bzImage`, later `/boot/nix/store/…-linux-…/bzImage`), so they are read,
//! never assumed.

use std::fmt;

/// One boot entry: what a boot loader would load for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The entry's label (isolinux) or title (GRUB).
    pub label: String,
    /// Path of the kernel inside the ISO, absolute.
    pub kernel: String,
    pub initrd: Option<String>,
    /// The kernel command line, without the boot loader's own words (`initrd=`, `${…}`).
    pub cmdline: String,
}

/// The entries of one boot configuration file, with the one it boots by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootConfig {
    pub entries: Vec<BootEntry>,
    /// Index into `entries` of the default entry.
    pub default: Option<usize>,
}

/// The serial console nixtest drives; the NixOS ISO's `boot-serial` entry adds the same.
pub const SERIAL_CONSOLE: &str = "console=ttyS0,115200n8";

impl BootConfig {
    /// The default entry, else the first.
    pub fn default_entry(&self) -> Option<&BootEntry> {
        self.default
            .and_then(|i| self.entries.get(i))
            .or_else(|| self.entries.first())
    }

    /// isolinux/syslinux syntax: keywords are case-insensitive; `LINUX` or `KERNEL` names the
    /// kernel; the initrd is `INITRD` or an `initrd=` word of `APPEND`.
    pub fn parse_isolinux(text: &str) -> BootConfig {
        let mut cfg = BootConfig::default();
        let mut default_label: Option<String> = None;
        let mut current: Option<BootEntry> = None;
        let finish = |cfg: &mut BootConfig, e: Option<BootEntry>| {
            if let Some(e) = e.filter(|e| !e.kernel.is_empty()) {
                cfg.entries.push(e);
            }
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = split_word(line);
            match word.to_ascii_lowercase().as_str() {
                "default" => default_label = Some(rest.trim().to_string()),
                "label" => {
                    finish(&mut cfg, current.take());
                    current = Some(BootEntry {
                        label: rest.trim().to_string(),
                        kernel: String::new(),
                        initrd: None,
                        cmdline: String::new(),
                    });
                }
                "linux" | "kernel" => {
                    if let Some(e) = current.as_mut() {
                        e.kernel = absolute(rest.trim());
                    }
                }
                "initrd" => {
                    if let Some(e) = current.as_mut() {
                        // `INITRD a,b` loads several; the first is the one that boots.
                        e.initrd = rest.split(',').next().map(|s| absolute(s.trim()));
                    }
                }
                "append" => {
                    if let Some(e) = current.as_mut() {
                        let mut words = Vec::new();
                        for w in rest.split_whitespace() {
                            match w.strip_prefix("initrd=") {
                                Some(i) if e.initrd.is_none() => {
                                    e.initrd = i.split(',').next().map(absolute)
                                }
                                Some(_) => {}
                                None => words.push(w),
                            }
                        }
                        e.cmdline = words.join(" ");
                    }
                }
                _ => {}
            }
        }
        finish(&mut cfg, current.take());
        cfg.default = default_label.and_then(|d| {
            cfg.entries
                .iter()
                .position(|e| e.label.eq_ignore_ascii_case(&d))
        });
        cfg
    }

    /// GRUB syntax, as far as entries go: `menuentry 'TITLE' … {`, then `linux PATH ARGS` and
    /// `initrd PATH` up to the closing brace. Submenus are walked like the top level; the
    /// first entry is GRUB's default (`set default=` is honoured when it is a number).
    pub fn parse_grub(text: &str) -> BootConfig {
        let mut cfg = BootConfig::default();
        let mut default_index: Option<usize> = None;
        let mut current: Option<BootEntry> = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = split_word(line);
            match word {
                "set" if current.is_none() => {
                    if let Some(v) = rest.trim().strip_prefix("default=") {
                        default_index = v.trim_matches(['"', '\'']).parse().ok();
                    }
                }
                "menuentry" => {
                    current = Some(BootEntry {
                        label: grub_title(rest),
                        kernel: String::new(),
                        initrd: None,
                        cmdline: String::new(),
                    });
                }
                "linux" | "linuxefi" | "linux16" => {
                    if let Some(e) = current.as_mut() {
                        let mut words = rest.split_whitespace();
                        e.kernel = words.next().map(absolute).unwrap_or_default();
                        // `${isoboot}` and the like are GRUB's variables, empty on a CD boot.
                        e.cmdline = words
                            .filter(|w| !w.starts_with("${") && !w.starts_with("$"))
                            .collect::<Vec<_>>()
                            .join(" ");
                    }
                }
                "initrd" | "initrdefi" | "initrd16" => {
                    if let Some(e) = current.as_mut() {
                        e.initrd = rest.split_whitespace().next().map(absolute);
                    }
                }
                "}" => {
                    if let Some(e) = current.take().filter(|e| !e.kernel.is_empty()) {
                        cfg.entries.push(e);
                    }
                }
                _ => {}
            }
        }
        cfg.default = default_index.filter(|&i| i < cfg.entries.len());
        cfg
    }
}

impl BootEntry {
    /// The command line nixtest boots with: the entry's own, with the serial console added
    /// (last, so that it is /dev/console) unless the entry already has it.
    pub fn serial_cmdline(&self) -> String {
        if self
            .cmdline
            .split_whitespace()
            .any(|w| w == "console=ttyS0" || w.starts_with("console=ttyS0,"))
        {
            return self.cmdline.clone();
        }
        if self.cmdline.is_empty() {
            SERIAL_CONSOLE.to_string()
        } else {
            format!("{} {SERIAL_CONSOLE}", self.cmdline)
        }
    }

    /// The volume label the entry's initrd mounts its root by (`root=LABEL=…`), which the ISO
    /// attached as a CD-ROM must carry even when its kernel is booted directly.
    pub fn root_label(&self) -> Option<&str> {
        self.cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root=LABEL="))
    }
}

impl fmt::Display for BootEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: kernel {}", self.label, self.kernel)?;
        if let Some(i) = &self.initrd {
            write!(f, ", initrd {i}")?;
        }
        write!(f, ", command line {:?}", self.cmdline)
    }
}

fn split_word(line: &str) -> (&str, &str) {
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    }
}

fn absolute(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// The title of `menuentry 'TITLE' --class x {` (single or double quotes, or one word).
fn grub_title(rest: &str) -> String {
    let rest = rest.trim();
    for q in ['\'', '"'] {
        if let Some(body) = rest.strip_prefix(q)
            && let Some(end) = body.find(q)
        {
            return body[..end].to_string();
        }
    }
    rest.split_whitespace().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape iso-image.nix writes (24.05 and later: kernel under /boot/nix/store).
    const ISOLINUX: &str = "\
SERIAL 0 115200
TIMEOUT 100
UI vesamenu.c32
MENU BACKGROUND /isolinux/background.png

DEFAULT boot

LABEL boot
MENU LABEL NixOS 24.05.1234 Installer
LINUX /boot/nix/store/abc-linux-6.6.30/bzImage
APPEND init=/nix/store/xyz-nixos-system-nixos-24.05/init root=LABEL=nixos-minimal-24.05-x86_64 boot.shell_on_fail loglevel=4
INITRD /boot/nix/store/def-initrd-linux-6.6.30/initrd

LABEL boot-nomodeset
MENU LABEL NixOS 24.05.1234 Installer (nomodeset)
LINUX /boot/nix/store/abc-linux-6.6.30/bzImage
APPEND init=/nix/store/xyz-nixos-system-nixos-24.05/init root=LABEL=nixos-minimal-24.05-x86_64 boot.shell_on_fail loglevel=4 nomodeset
INITRD /boot/nix/store/def-initrd-linux-6.6.30/initrd

LABEL boot-serial
MENU LABEL NixOS 24.05.1234 Installer (serial console=ttyS0,115200n8)
LINUX /boot/nix/store/abc-linux-6.6.30/bzImage
APPEND init=/nix/store/xyz-nixos-system-nixos-24.05/init root=LABEL=nixos-minimal-24.05-x86_64 boot.shell_on_fail loglevel=4 console=ttyS0,115200n8
INITRD /boot/nix/store/def-initrd-linux-6.6.30/initrd
";

    #[test]
    fn isolinux_default_entry_is_read_not_assumed() {
        let cfg = BootConfig::parse_isolinux(ISOLINUX);
        assert_eq!(cfg.entries.len(), 3);
        let e = cfg.default_entry().unwrap();
        assert_eq!(e.label, "boot");
        assert_eq!(e.kernel, "/boot/nix/store/abc-linux-6.6.30/bzImage");
        assert_eq!(
            e.initrd.as_deref(),
            Some("/boot/nix/store/def-initrd-linux-6.6.30/initrd")
        );
        assert_eq!(e.root_label(), Some("nixos-minimal-24.05-x86_64"));
        // The default entry has no serial console: nixtest adds it, once.
        assert!(!e.cmdline.contains("ttyS0"));
        let cmd = e.serial_cmdline();
        assert!(cmd.ends_with(" console=ttyS0,115200n8"), "{cmd}");
        assert!(cmd.starts_with("init=/nix/store/xyz"), "{cmd}");
        let serial = &cfg.entries[2];
        assert_eq!(serial.serial_cmdline(), serial.cmdline);
    }

    #[test]
    fn older_isolinux_forms_are_read() {
        // Older ISOs: /boot/bzImage, lower-case keywords, KERNEL and initrd= in APPEND.
        let text = "default boot\nlabel other\nkernel /boot/memtest.bin\n\
                    label boot\n  kernel boot/bzImage\n  append initrd=/boot/initrd init=/nix/store/q-nixos/init root=LABEL=NIXOS_ISO\n";
        let cfg = BootConfig::parse_isolinux(text);
        let e = cfg.default_entry().unwrap();
        assert_eq!(e.kernel, "/boot/bzImage");
        assert_eq!(e.initrd.as_deref(), Some("/boot/initrd"));
        assert_eq!(
            e.cmdline,
            "init=/nix/store/q-nixos/init root=LABEL=NIXOS_ISO"
        );
    }

    #[test]
    fn grub_entries_drop_grub_variables() {
        let text = r#"
set timeout=10
search --set=root --file /EFI/nixos-installer-image
menuentry 'NixOS 24.05 Installer ' --class installer {
  linux /boot/nix/store/abc-linux/bzImage ${isoboot} init=/nix/store/xyz/init root=LABEL=nixos-minimal-24.05-x86_64 boot.shell_on_fail
  initrd /boot/nix/store/def-initrd/initrd
}
menuentry "NixOS 24.05 Installer (nomodeset)" --class nomodeset {
  linux /boot/nix/store/abc-linux/bzImage ${isoboot} init=/nix/store/xyz/init nomodeset
  initrd /boot/nix/store/def-initrd/initrd
}
"#;
        let cfg = BootConfig::parse_grub(text);
        assert_eq!(cfg.entries.len(), 2);
        let e = cfg.default_entry().unwrap();
        assert_eq!(e.label, "NixOS 24.05 Installer ");
        assert_eq!(
            e.cmdline,
            "init=/nix/store/xyz/init root=LABEL=nixos-minimal-24.05-x86_64 boot.shell_on_fail"
        );
        assert_eq!(cfg.entries[1].label, "NixOS 24.05 Installer (nomodeset)");
    }

    #[test]
    fn a_file_without_entries_has_no_default() {
        assert!(
            BootConfig::parse_isolinux("SERIAL 0\nTIMEOUT 1\n")
                .default_entry()
                .is_none()
        );
        assert!(
            BootConfig::parse_grub("set timeout=1\n")
                .default_entry()
                .is_none()
        );
        // An entry without a kernel is no entry.
        assert!(
            BootConfig::parse_isolinux("LABEL x\nAPPEND a\n")
                .default_entry()
                .is_none()
        );
    }
}
