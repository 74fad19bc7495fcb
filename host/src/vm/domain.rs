//! The libvirt domain of a VM, built as a typed value and written as XML with escaping.
//!
//! Networking is QEMU user networking with `restrict=on`: the guest reaches nothing. SSH is
//! forwarded from 127.0.0.1 on the host, and nothing else (a host service the guest had to
//! reach would go through `guestfwd` to 127.0.0.1). No libvirt network is used.

use quick_xml::Writer;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use std::io::Cursor;
use std::path::PathBuf;

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A kernel and initrd given directly, with their command line.
    Direct {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// The firmware boots the first disk (what an installed system does).
    FirstDisk,
}

/// A disk of the VM, as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    /// The disk's serial number: `/dev/disk/by-id/virtio-SERIAL` in the guest, as on hardware.
    pub serial: Option<String>,
}

impl From<PathBuf> for DiskSpec {
    fn from(path: PathBuf) -> Self {
        DiskSpec { path, serial: None }
    }
}

#[derive(Debug, Clone)]
pub struct DomainSpec {
    pub name: String,
    /// Set when redefining an existing domain (libvirt matches definitions by UUID).
    pub uuid: Option<String>,
    /// `kvm` or `qemu`.
    pub domain_type: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub boot: Boot,
    /// qcow2 disks in order: vda, vdb, ...
    pub disks: Vec<DiskSpec>,
    /// An installer ISO, attached read-only as an IDE CD-ROM (what its initrd finds by label).
    pub cdrom: Option<PathBuf>,
    pub console_log: PathBuf,
    pub ssh_port: u16,
    /// QEMU user networking without `restrict=on` (VM_NETWORK=open): the guest reaches what
    /// the host reaches. Off unless a user asks for it.
    pub open_network: bool,
}

impl DomainSpec {
    /// The `-netdev` value: user networking, restricted, SSH forwarded on loopback.
    pub fn netdev(&self) -> String {
        format!(
            "user,id=nixtest0,{}hostfwd=tcp:127.0.0.1:{}-:22",
            if self.open_network {
                ""
            } else {
                "restrict=on,"
            },
            self.ssh_port
        )
    }

    pub fn to_xml(&self) -> String {
        let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
        let mut root = BytesStart::new("domain");
        root.push_attribute(("type", self.domain_type.as_str()));
        root.push_attribute(("xmlns:qemu", "http://libvirt.org/schemas/domain/qemu/1.0"));
        w.write_event(Event::Start(root)).unwrap();
        text(&mut w, "name", &[], &self.name);
        if let Some(uuid) = &self.uuid {
            text(&mut w, "uuid", &[], uuid);
        }
        text(
            &mut w,
            "memory",
            &[("unit", "MiB")],
            &self.memory_mib.to_string(),
        );
        text(&mut w, "vcpu", &[], &self.vcpus.to_string());
        open(&mut w, "os", &[]);
        text(
            &mut w,
            "type",
            &[("arch", "x86_64"), ("machine", "pc")],
            "hvm",
        );
        match &self.boot {
            Boot::Direct {
                kernel,
                initrd,
                cmdline,
            } => {
                text(&mut w, "kernel", &[], &kernel.display().to_string());
                if let Some(i) = initrd {
                    text(&mut w, "initrd", &[], &i.display().to_string());
                }
                text(&mut w, "cmdline", &[], cmdline);
            }
            Boot::FirstDisk => empty(&mut w, "boot", &[("dev", "hd")]),
        }
        close(&mut w, "os");
        open(&mut w, "features", &[]);
        empty(&mut w, "acpi", &[]);
        close(&mut w, "features");
        text(&mut w, "on_poweroff", &[], "destroy");
        text(&mut w, "on_reboot", &[], "restart");
        text(&mut w, "on_crash", &[], "destroy");
        open(&mut w, "devices", &[]);
        for (i, disk) in self.disks.iter().enumerate() {
            let dev = format!("vd{}", (b'a' + i as u8) as char);
            open(&mut w, "disk", &[("type", "file"), ("device", "disk")]);
            empty(
                &mut w,
                "driver",
                &[("name", "qemu"), ("type", "qcow2"), ("cache", "unsafe")],
            );
            empty(
                &mut w,
                "source",
                &[("file", &disk.path.display().to_string())],
            );
            empty(&mut w, "target", &[("dev", &dev), ("bus", "virtio")]);
            if let Some(serial) = &disk.serial {
                text(&mut w, "serial", &[], serial);
            }
            close(&mut w, "disk");
        }
        if let Some(iso) = &self.cdrom {
            open(&mut w, "disk", &[("type", "file"), ("device", "cdrom")]);
            empty(&mut w, "driver", &[("name", "qemu"), ("type", "raw")]);
            empty(&mut w, "source", &[("file", &iso.display().to_string())]);
            empty(&mut w, "target", &[("dev", "hdc"), ("bus", "ide")]);
            empty(&mut w, "readonly", &[]);
            close(&mut w, "disk");
        }
        open(&mut w, "serial", &[("type", "pty")]);
        empty(
            &mut w,
            "log",
            &[
                ("file", &self.console_log.display().to_string()),
                ("append", "on"),
            ],
        );
        empty(&mut w, "target", &[("port", "0")]);
        close(&mut w, "serial");
        open(&mut w, "console", &[("type", "pty")]);
        empty(&mut w, "target", &[("type", "serial"), ("port", "0")]);
        close(&mut w, "console");
        empty(&mut w, "memballoon", &[("model", "none")]);
        close(&mut w, "devices");
        open(&mut w, "qemu:commandline", &[]);
        let netdev = self.netdev();
        // An explicit slot: libvirt places its own devices from slot 2 up and knows nothing of this one.
        for arg in [
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=nixtest0,bus=pci.0,addr=0x1e",
        ] {
            empty(&mut w, "qemu:arg", &[("value", arg)]);
        }
        close(&mut w, "qemu:commandline");
        w.write_event(Event::End(BytesEnd::new("domain"))).unwrap();
        String::from_utf8(w.into_inner().into_inner()).expect("the writer writes UTF-8")
    }
}

type W = Writer<Cursor<Vec<u8>>>;

fn start<'a>(name: &'a str, attrs: &[(&str, &str)]) -> BytesStart<'a> {
    let mut e = BytesStart::new(name);
    for a in attrs {
        e.push_attribute(*a);
    }
    e
}

fn open(w: &mut W, name: &str, attrs: &[(&str, &str)]) {
    w.write_event(Event::Start(start(name, attrs))).unwrap();
}

fn close(w: &mut W, name: &str) {
    w.write_event(Event::End(BytesEnd::new(name))).unwrap();
}

fn empty(w: &mut W, name: &str, attrs: &[(&str, &str)]) {
    w.write_event(Event::Empty(start(name, attrs))).unwrap();
}

fn text(w: &mut W, name: &str, attrs: &[(&str, &str)], value: &str) {
    open(w, name, attrs);
    w.write_event(Event::Text(BytesText::new(value))).unwrap();
    close(w, name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "nixtest-run-<&\"x\">".into(),
            uuid: None,
            domain_type: "qemu".into(),
            memory_mib: 512,
            vcpus: 1,
            boot: Boot::Direct {
                kernel: "/v/vmlinuz".into(),
                initrd: Some("/v/initrd.img".into()),
                cmdline: "console=ttyS0 nixtest.root=/dev/vda".into(),
            },
            disks: vec![
                PathBuf::from("/v/root.qcow2").into(),
                PathBuf::from("/v/target.qcow2").into(),
            ],
            cdrom: None,
            console_log: "/v/console.log".into(),
            ssh_port: 2222,
            open_network: false,
        }
    }

    #[test]
    fn names_are_escaped() {
        let xml = spec().to_xml();
        assert!(
            xml.contains("<name>nixtest-run-&lt;&amp;&quot;x&quot;&gt;</name>"),
            "{xml}"
        );
    }

    #[test]
    fn user_networking_is_restricted_and_on_loopback() {
        let xml = spec().to_xml();
        assert!(
            xml.contains("\"user,id=nixtest0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22\""),
            "{xml}"
        );
        assert!(!xml.contains("<interface"), "no libvirt network: {xml}");
        assert!(xml.contains("<target dev=\"vdb\" bus=\"virtio\"/>"));
    }

    #[test]
    fn an_installer_vm_has_its_iso_read_only_and_serial_disks() {
        let mut s = spec();
        s.cdrom = Some("/v/installer.iso".into());
        s.disks = vec![DiskSpec {
            path: "/v/target.qcow2".into(),
            serial: Some("nixtest-target".into()),
        }];
        let xml = s.to_xml();
        let cd = &xml[xml.find("device=\"cdrom\"").unwrap()..];
        let cd = &cd[..cd.find("</disk>").unwrap()];
        assert!(
            cd.contains("<readonly/>") && cd.contains("/v/installer.iso"),
            "{xml}"
        );
        assert!(xml.contains("<serial>nixtest-target</serial>"), "{xml}");
        s.boot = Boot::FirstDisk;
        let xml = s.to_xml();
        assert!(
            xml.contains("<boot dev=\"hd\"/>") && !xml.contains("<kernel>"),
            "{xml}"
        );
    }

    #[test]
    fn open_networking_only_when_asked() {
        let mut s = spec();
        assert!(s.netdev().contains("restrict=on"));
        s.open_network = true;
        assert_eq!(
            s.netdev(),
            "user,id=nixtest0,hostfwd=tcp:127.0.0.1:2222-:22"
        );
    }
}
