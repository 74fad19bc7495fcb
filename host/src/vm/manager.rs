//! Domains on libvirt: the base VM with its `pristine` snapshot, and run VMs on overlays.

use super::cleanup::{self, Resource};
use super::domain::{Boot, DiskSpec, DomainSpec};
use super::image::GuestImage;
use super::kvm::{self, AccelChoice};
use super::{VmError, VmSettings};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;

pub const PRISTINE: &str = "pristine";
/// The root disk's file name, in the base's folder and (as an overlay on it) in each run's.
const ROOT_DISK: &str = "root.qcow2";
const CMDLINE: &str = "console=ttyS0 nixtest.root=/dev/vda quiet";
/// The serial of an installer VM's target disk: `/dev/disk/by-id/virtio-nixtest-target`.
pub const TARGET_SERIAL: &str = "nixtest-target";

fn lv(action: &str) -> impl FnOnce(virt::error::Error) -> VmError + '_ {
    move |e| VmError::Libvirt {
        action: action.to_string(),
        reason: e.message().to_string(),
    }
}

/// What `nixtest vm status` shows.
#[derive(Debug, Clone)]
pub struct BaseStatus {
    pub defined: bool,
    pub active: bool,
    pub snapshots: Vec<String>,
    pub ssh_port: Option<u16>,
    pub image_key: Option<String>,
    pub runs: Vec<String>,
}

/// Per-run changes to the VM (a profile's overrides, or a fault to make real).
#[derive(Debug, Clone, Default)]
pub struct RunOverrides {
    pub memory_mib: Option<u64>,
    pub disk_bytes: Option<u64>,
}

pub struct VmManager {
    conn: Connect,
    pub settings: VmSettings,
    pub accel: AccelChoice,
}

impl VmManager {
    /// Connects to libvirt and decides between KVM and TCG.
    pub fn connect(settings: VmSettings) -> Result<Self, VmError> {
        // Errors come back as values with their message; libvirt's own printer is noise.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(&settings.uri)).map_err(|e| VmError::Unreachable {
            uri: settings.uri.clone(),
            reason: e.message().to_string(),
        })?;
        let accel = kvm::detect(Duration::from_secs(2));
        tracing::info!("accelerator: {:?} ({})", accel.accel, accel.reason);
        Ok(VmManager {
            conn,
            settings,
            accel,
        })
    }

    /// The base VM's domain name.
    pub fn base_name(&self) -> String {
        format!("{}-base", self.settings.prefix)
    }

    fn run_prefix(&self) -> String {
        format!("{}-run-", self.settings.prefix)
    }

    fn lookup(&self, name: &str) -> Option<Domain> {
        Domain::lookup_by_name(&self.conn, name).ok()
    }

    pub fn base_dir(&self) -> PathBuf {
        self.settings.dir.join(self.base_name())
    }

    fn spec(
        &self,
        name: &str,
        image: &GuestImage,
        disks: Vec<PathBuf>,
        console_log: PathBuf,
        ssh_port: u16,
        memory_mib: u64,
    ) -> DomainSpec {
        DomainSpec {
            name: name.to_string(),
            uuid: None,
            domain_type: self.accel.accel.domain_type().to_string(),
            memory_mib,
            vcpus: self.settings.vcpus,
            boot: Boot::Direct {
                kernel: image.kernel(),
                initrd: Some(image.initrd()),
                cmdline: CMDLINE.to_string(),
            },
            disks: disks.into_iter().map(DiskSpec::from).collect(),
            cdrom: None,
            console_log,
            ssh_port,
            open_network: self.settings.open_network,
        }
    }

    /// Defines the base VM on a copy of the image's root disk. The disks (and the pristine
    /// snapshot) are kept when they were made from this image; the definition is always
    /// written again, so a newer nixtest's domain settings take effect. Returns whether the
    /// disks were made anew.
    pub fn define_base(&self, image: &GuestImage) -> Result<bool, VmError> {
        let dir = self.base_dir();
        let key_file = dir.join("image-key");
        let existing = self.lookup(&self.base_name());
        let current = existing.is_some()
            && std::fs::read_to_string(&key_file).ok().as_deref() == Some(image.key.as_str())
            && dir.join(ROOT_DISK).exists()
            && dir.join("target.qcow2").exists();
        let port = existing.as_ref().and_then(ssh_port_of);
        if !current {
            self.remove_base()?;
            std::fs::create_dir_all(&dir)
                .map_err(VmError::io(format!("creating {}", dir.display())))?;
            std::fs::copy(image.root(), dir.join(ROOT_DISK))
                .map_err(VmError::io("copying the root disk"))?;
            create_disk(&dir.join("target.qcow2"), self.settings.disk_bytes, None)?;
        } else if existing
            .as_ref()
            .is_some_and(|d| d.is_active().unwrap_or(false))
        {
            return Ok(false);
        }
        let port = match port.filter(|_| current) {
            Some(p) => p,
            None => free_port()?,
        };
        let mut spec = self.spec(
            &self.base_name(),
            image,
            vec![dir.join(ROOT_DISK), dir.join("target.qcow2")],
            dir.join("console.log"),
            port,
            self.settings.memory_mib,
        );
        if current {
            spec.uuid = existing.as_ref().and_then(|d| d.get_uuid_string().ok());
        }
        Domain::define_xml(&self.conn, &spec.to_xml()).map_err(lv("defining the base VM"))?;
        std::fs::write(&key_file, &image.key).map_err(VmError::io("writing the image key"))?;
        Ok(!current)
    }

    fn base(&self) -> Result<Domain, VmError> {
        self.lookup(&self.base_name()).ok_or(VmError::NoBase)
    }

    pub fn status(&self) -> BaseStatus {
        let base = self.lookup(&self.base_name());
        BaseStatus {
            defined: base.is_some(),
            active: base
                .as_ref()
                .is_some_and(|d| d.is_active().unwrap_or(false)),
            snapshots: base
                .as_ref()
                .and_then(|d| d.list_all_snapshots(0).ok())
                .map(|s| s.iter().filter_map(|s| s.get_name().ok()).collect())
                .unwrap_or_default(),
            ssh_port: base.as_ref().and_then(ssh_port_of),
            image_key: std::fs::read_to_string(self.base_dir().join("image-key")).ok(),
            runs: self.run_domains(),
        }
    }

    /// The base VM's SSH address on the host's loopback.
    pub fn base_ssh_addr(&self) -> Result<SocketAddr, VmError> {
        let base = self.base()?;
        let port = ssh_port_of(&base).ok_or_else(|| VmError::Libvirt {
            action: "reading the base VM's SSH port".into(),
            reason:
                "its definition has no SSH forward; run `nixtest vm destroy` and `nixtest setup`"
                    .into(),
        })?;
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Boots the base VM (for `nixtest vm ip|ssh`). Its disk is the backing file of every run
    /// VM's overlay, so it stays shut while runs are going.
    pub fn start_base(&self) -> Result<(), VmError> {
        let base = self.base()?;
        if !base.is_active().unwrap_or(false) {
            let runs = self.active_runs();
            if !runs.is_empty() {
                return Err(VmError::BaseInUse { runs });
            }
            base.create().map_err(lv("starting the base VM"))?;
        }
        Ok(())
    }

    /// Run VMs (of any nixtest process with this prefix) that are running now.
    pub fn active_runs(&self) -> Vec<String> {
        self.run_domains()
            .into_iter()
            .filter(|n| {
                self.lookup(n)
                    .is_some_and(|d| d.is_active().unwrap_or(false))
            })
            .collect()
    }

    /// Written after every revert and snapshot: the base disk is pristine while it is newer
    /// than the disk (nothing but booting the base writes to the disk; run VMs only read it).
    fn pristine_stamp(&self) -> PathBuf {
        self.base_dir().join("pristine.stamp")
    }

    fn mark_pristine(&self) -> Result<(), VmError> {
        let stamp = self.pristine_stamp();
        std::fs::write(&stamp, b"").map_err(VmError::io(format!("writing {}", stamp.display())))
    }

    /// Whether the base disk may differ from `pristine`: the base is running, or its disk was
    /// written after the last revert or snapshot.
    pub fn base_touched(&self) -> bool {
        if self
            .lookup(&self.base_name())
            .is_some_and(|b| b.is_active().unwrap_or(false))
        {
            return true;
        }
        let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match (
            mtime(self.base_dir().join(ROOT_DISK)),
            mtime(self.pristine_stamp()),
        ) {
            (Some(disk), Some(stamp)) => disk > stamp,
            _ => true,
        }
    }

    /// Reverts the base to `pristine` when it may have changed since. Runs going on at the same
    /// time share the base disk read-only, so a base that is already pristine is left alone.
    pub fn ensure_pristine(&self) -> Result<(), VmError> {
        if !self.base_touched() {
            return Ok(());
        }
        self.revert_pristine().map(|_| ())
    }

    /// Waits for the domain to power itself off; destroys it after `grace`.
    pub fn wait_shutoff(&self, name: &str, grace: Duration) -> Result<(), VmError> {
        let Some(dom) = self.lookup(name) else {
            return Ok(());
        };
        let start = Instant::now();
        while dom.is_active().unwrap_or(false) {
            if start.elapsed() > grace {
                dom.destroy().map_err(lv("stopping the VM"))?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn destroy_base(&self) -> Result<(), VmError> {
        let base = self.base()?;
        if base.is_active().unwrap_or(false) {
            base.destroy().map_err(lv("stopping the base VM"))?;
        }
        Ok(())
    }

    /// (Re)takes the `pristine` snapshot of the shut-off base VM.
    pub fn snapshot_pristine(&self) -> Result<(), VmError> {
        let base = self.base()?;
        if base.is_active().unwrap_or(false) {
            return Err(VmError::Libvirt {
                action: "taking the pristine snapshot".into(),
                reason: "the base VM is running".into(),
            });
        }
        if let Ok(old) = DomainSnapshot::lookup_by_name(&base, PRISTINE, 0) {
            old.delete(0)
                .map_err(lv("deleting the old pristine snapshot"))?;
        }
        let xml = format!(
            "<domainsnapshot><name>{PRISTINE}</name><description>nixtest: the base VM as `nixtest setup` left it</description></domainsnapshot>"
        );
        DomainSnapshot::create_xml(&base, &xml, 0).map_err(lv("taking the pristine snapshot"))?;
        self.mark_pristine()
    }

    /// Reverts to pristine when there is one; a base without one (first setup) is left as is.
    pub fn revert_or_keep(&self) -> Result<(), VmError> {
        if self.has_pristine() {
            self.revert_pristine()?;
        }
        Ok(())
    }

    pub fn has_pristine(&self) -> bool {
        self.lookup(&self.base_name())
            .is_some_and(|b| DomainSnapshot::lookup_by_name(&b, PRISTINE, 0).is_ok())
    }

    /// Puts the base VM back to `pristine` (stopping it first). Returns how long it took.
    pub fn revert_pristine(&self) -> Result<Duration, VmError> {
        let base = self.base()?;
        let runs = self.active_runs();
        if !runs.is_empty() {
            return Err(VmError::BaseInUse { runs });
        }
        let start = Instant::now();
        if base.is_active().unwrap_or(false) {
            base.destroy().map_err(lv("stopping the base VM"))?;
        }
        let snap =
            DomainSnapshot::lookup_by_name(&base, PRISTINE, 0).map_err(|_| VmError::NoBase)?;
        snap.revert(virt::sys::VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)
            .map_err(lv("reverting to pristine"))?;
        self.mark_pristine()?;
        Ok(start.elapsed())
    }

    /// A VM for one run: overlays on the (reverted) base disk and a fresh target disk, unique
    /// name and port, registered for removal on any exit. Not started.
    pub fn create_run_vm(
        &self,
        image: &GuestImage,
        label: &str,
        overrides: &RunOverrides,
    ) -> Result<RunVm, VmError> {
        self.sweep_stale();
        if !self.has_pristine() {
            return Err(VmError::NoBase);
        }
        self.ensure_pristine()?;
        let mut vm = self.new_run_vm(label)?;
        let root = vm.dir.join(ROOT_DISK);
        create_disk(&root, 0, Some(&self.base_dir().join(ROOT_DISK)))?;
        let target = self.target_disk(&vm, overrides)?;
        vm.ssh_port = free_port()?;
        let spec = self.spec(
            &vm.name,
            image,
            vec![root, target],
            vm.console_log(),
            vm.ssh_port,
            overrides.memory_mib.unwrap_or(self.settings.memory_mib),
        );
        Domain::define_xml(&self.conn, &spec.to_xml()).map_err(lv("defining the run VM"))?;
        Ok(vm)
    }

    /// A run's blank install target, made fresh.
    fn target_disk(&self, vm: &RunVm, overrides: &RunOverrides) -> Result<PathBuf, VmError> {
        let target = vm.dir.join("target.qcow2");
        create_disk(
            &target,
            overrides.disk_bytes.unwrap_or(self.settings.disk_bytes),
            None,
        )?;
        Ok(target)
    }

    /// A run VM's name and folder, registered for removal on any exit.
    fn new_run_vm(&self, label: &str) -> Result<RunVm, VmError> {
        let safe: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = format!(
            "{}{}-{safe}-{:04x}",
            self.run_prefix(),
            std::process::id(),
            rand_u16()
        );
        let dir = self.settings.dir.join("runs").join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(VmError::io(format!("creating {}", dir.display())))?;
        let resource = Resource {
            uri: self.settings.uri.clone(),
            domain: name.clone(),
            dir: dir.clone(),
        };
        cleanup::register(resource.clone());
        Ok(RunVm {
            name,
            dir,
            ssh_port: 0,
            resource,
            removed: false,
            spec: None,
        })
    }

    /// A VM for one run from an installer ISO: the ISO (its cached copy, so libvirt's
    /// relabelling never touches the user's file) as a read-only CD-ROM, its kernel and initrd
    /// booted directly with the command line read from the ISO plus a serial console, and a
    /// blank target disk made fresh, with a serial number so that `/dev/disk/by-id/…` exists.
    /// Not started.
    pub fn create_installer_vm(
        &self,
        iso: &crate::installer::PreparedIso,
        label: &str,
        overrides: &RunOverrides,
    ) -> Result<RunVm, VmError> {
        self.sweep_stale();
        let mut vm = self.new_run_vm(label)?;
        let target = self.target_disk(&vm, overrides)?;
        vm.ssh_port = free_port()?;
        let mut cmdline = iso.cmdline.clone();
        if self.settings.open_network {
            // Read by the stand-in ISO only; NixOS's takes its network (and DNS) from DHCP.
            cmdline.push_str(" nixtest.network=open");
        }
        let spec = DomainSpec {
            name: vm.name.clone(),
            uuid: None,
            domain_type: self.accel.accel.domain_type().to_string(),
            memory_mib: overrides.memory_mib.unwrap_or(self.settings.memory_mib),
            vcpus: self.settings.vcpus,
            boot: Boot::Direct {
                kernel: iso.kernel.clone(),
                initrd: iso.initrd.clone(),
                cmdline,
            },
            disks: vec![DiskSpec {
                path: target,
                serial: Some(TARGET_SERIAL.to_string()),
            }],
            cdrom: Some(iso.cached_iso()),
            console_log: vm.console_log(),
            ssh_port: vm.ssh_port,
            open_network: self.settings.open_network,
        };
        Domain::define_xml(&self.conn, &spec.to_xml()).map_err(lv("defining the run VM"))?;
        vm.spec = Some(spec);
        Ok(vm)
    }

    /// Boots an installer VM again from its target disk, as a machine does after the
    /// install (the CD-ROM stays attached; the firmware boots the disk first).
    pub fn reboot_from_disk(&self, vm: &RunVm) -> Result<(), VmError> {
        let dom = self.lookup(&vm.name).ok_or_else(|| VmError::Libvirt {
            action: format!("rebooting {}", vm.name),
            reason: "no such domain".into(),
        })?;
        let mut spec = vm.spec.clone().ok_or_else(|| VmError::Libvirt {
            action: format!("rebooting {}", vm.name),
            reason: "it is not an installer VM".into(),
        })?;
        spec.boot = Boot::FirstDisk;
        spec.uuid = dom.get_uuid_string().ok();
        if dom.is_active().unwrap_or(false) {
            dom.destroy().map_err(lv("stopping the VM"))?;
        }
        Domain::define_xml(&self.conn, &spec.to_xml()).map_err(lv("redefining the VM"))?;
        dom.create().map(drop).map_err(lv("starting the VM"))
    }

    /// The VM's serial console, through libvirt.
    pub fn console(&self, name: &str) -> Result<crate::installer::console::VirtConsole, VmError> {
        let dom = self.lookup(name).ok_or_else(|| VmError::Libvirt {
            action: format!("opening the console of {name}"),
            reason: "no such domain".into(),
        })?;
        crate::installer::console::VirtConsole::open(&self.conn, &dom).map_err(|reason| {
            VmError::Libvirt {
                action: format!("opening the console of {name}"),
                reason,
            }
        })
    }

    pub fn start(&self, name: &str) -> Result<(), VmError> {
        let dom = self.lookup(name).ok_or_else(|| VmError::Libvirt {
            action: format!("starting {name}"),
            reason: "no such domain".into(),
        })?;
        dom.create().map(drop).map_err(lv("starting the VM"))
    }

    /// Boots the VM again with its root on `root_device` (the installed system): the new
    /// definition takes effect on the power cycle.
    pub fn reboot_into(&self, name: &str, root_device: &str) -> Result<(), VmError> {
        let dom = self.lookup(name).ok_or_else(|| VmError::Libvirt {
            action: format!("rebooting {name}"),
            reason: "no such domain".into(),
        })?;
        let xml = dom
            .get_xml_desc(0)
            .map_err(lv("reading the VM definition"))?;
        let from = "nixtest.root=/dev/vda";
        if !xml.contains(from) {
            return Err(VmError::Libvirt {
                action: format!("rebooting {name}"),
                reason: "its definition does not boot the installer root".into(),
            });
        }
        let xml = xml.replace(from, &format!("nixtest.root={root_device}"));
        if dom.is_active().unwrap_or(false) {
            dom.destroy().map_err(lv("stopping the VM"))?;
        }
        Domain::define_xml(&self.conn, &xml).map_err(lv("redefining the VM"))?;
        dom.create().map(drop).map_err(lv("starting the VM"))
    }

    fn run_domains(&self) -> Vec<String> {
        self.conn
            .list_all_domains(0)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.get_name().ok())
            .filter(|n| n.starts_with(&self.run_prefix()))
            .collect()
    }

    /// Removes run VMs whose nixtest process is gone (killed without a chance to clean up).
    pub fn sweep_stale(&self) -> Vec<String> {
        let mut swept = Vec::new();
        for name in self.run_domains() {
            let pid = name[self.run_prefix().len()..]
                .split('-')
                .next()
                .unwrap_or("");
            let alive = pid
                .parse::<u32>()
                .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                cleanup::remove(&Resource {
                    uri: self.settings.uri.clone(),
                    domain: name.clone(),
                    dir: self.settings.dir.join("runs").join(&name),
                });
                swept.push(name);
            }
        }
        swept
    }

    fn remove_base(&self) -> Result<(), VmError> {
        if let Some(base) = self.lookup(&self.base_name()) {
            if base.is_active().unwrap_or(false) {
                base.destroy().map_err(lv("stopping the base VM"))?;
            }
            base.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
                .map_err(lv("undefining the base VM"))?;
        }
        let dir = self.base_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(VmError::io(format!("removing {}", dir.display())))?;
        }
        Ok(())
    }

    /// Removes every domain and disk nixtest defined (images stay cached).
    pub fn destroy_everything(&self) -> Result<Vec<String>, VmError> {
        let mut removed = Vec::new();
        for name in self.run_domains() {
            cleanup::remove(&Resource {
                uri: self.settings.uri.clone(),
                domain: name.clone(),
                dir: self.settings.dir.join("runs").join(&name),
            });
            removed.push(name);
        }
        if self.lookup(&self.base_name()).is_some() {
            removed.push(self.base_name());
        }
        self.remove_base()?;
        let runs = self.settings.dir.join("runs");
        if runs.exists() {
            std::fs::remove_dir_all(&runs)
                .map_err(VmError::io(format!("removing {}", runs.display())))?;
        }
        Ok(removed)
    }
}

/// A run's VM; removed (domain, disks, folder) when dropped.
pub struct RunVm {
    pub name: String,
    pub dir: PathBuf,
    pub ssh_port: u16,
    resource: Resource,
    removed: bool,
    /// An installer VM's definition, kept to boot it again from its disk.
    spec: Option<DomainSpec>,
}

impl RunVm {
    pub fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ssh_port))
    }

    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Removes everything now.
    pub fn remove(mut self) {
        self.remove_now();
    }

    fn remove_now(&mut self) {
        if !self.removed {
            self.removed = true;
            cleanup::remove(&self.resource);
            cleanup::unregister(&self.name);
        }
    }
}

impl Drop for RunVm {
    fn drop(&mut self) {
        self.remove_now();
    }
}

fn ssh_port_of(dom: &Domain) -> Option<u16> {
    let xml = dom.get_xml_desc(0).ok()?;
    let at = xml.find("hostfwd=tcp:127.0.0.1:")? + "hostfwd=tcp:127.0.0.1:".len();
    xml[at..].split('-').next()?.parse().ok()
}

/// A port on the host's loopback that is free now.
pub fn free_port() -> Result<u16, VmError> {
    let l =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(VmError::io("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(VmError::io("finding a free port"))?
        .port())
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u16::from_le_bytes(b)
}

/// A qcow2 disk: empty of `size` bytes, or an overlay on `backing`.
fn create_disk(path: &Path, size: u64, backing: Option<&Path>) -> Result<(), VmError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        cmd.args(["-F", "qcow2", "-b"]).arg(b);
    }
    cmd.arg(path);
    if backing.is_none() {
        cmd.arg(size.to_string());
    }
    let out = cmd
        .output()
        .map_err(VmError::io("running qemu-img (install qemu-utils)"))?;
    if !out.status.success() {
        return Err(VmError::Libvirt {
            action: format!("creating {}", path.display()),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
