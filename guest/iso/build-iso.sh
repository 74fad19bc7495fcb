#!/usr/bin/env bash
# Builds nixtest's stand-in installer ISO from Debian's packages only. It has the shape of
# NixOS's installer ISO in each respect nixtest relies on (docs/real-nixos.md):
#   /isolinux/isolinux.cfg   DEFAULT boot; LABEL boot without a serial console and a
#                            boot-serial entry with console=ttyS0,115200n8; LINUX and INITRD
#                            under /boot/nix/store/…; APPEND init=… root=LABEL=<volume id>
#   /EFI/BOOT/grub.cfg       the same entries for GRUB (text only: no EFI binary here)
#   /nix-store.squashfs      the live system, mounted read-only with a tmpfs over it
#   the live system          user `nixos` (passwordless sudo) logged in on ttyS0 when the
#                            kernel's console is there; root and nixos with empty passwords;
#                            sshd with no authorized key; the live Nix store on a tmpfs of half
#                            the RAM; udev (by-id links); stand-ins for disko and nixos-install
#                            that take the --flake forms
# Usage: build-iso.sh OUT      (writes OUT/installer.iso; needs root, mmdebstrap, busybox-static,
#                              cpio, squashfs-tools, xorriso, isolinux, syslinux-common)
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
guest=$(cd "$here/.." && pwd)
release=${NIXTEST_GUEST_RELEASE:-bookworm}
label=nixos-minimal-standin-x86_64
work=$(mktemp -d /var/tmp/nixtest-iso.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
step() { echo "::PROGRESS::iso::$*"; }

step "live system ($release, minbase)"
packages=openssh-server,sudo,udev,iproute2,kmod,busybox,procps,curl,ca-certificates,e2fsprogs,dosfstools,fdisk,gdisk,xz-utils,psmisc,extlinux,syslinux-common
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/{doc,man,locale,info}/*' \
  "$release" "$work/root"

step "kernel"
. "$guest/kernel-lib.sh"
fetch_kernel
# The CD (IDE on QEMU's pc machine), squashfs, overlay, virtio disks and network, the
# filesystems the installer makes.
resolve_modules ata_piix ata_generic sr_mod isofs squashfs loop overlay virtio_pci virtio_blk \
  virtio_net crc32c_generic ext4 vfat nls_cp437 nls_iso8859_1 nls_utf8 nls_ascii

step "initrd ($(wc -l < "$work/modules.order") modules)"
ird="$work/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,lib/modules}
cp /bin/busybox "$ird/bin/busybox"
modules_into_initramfs "$ird"
cp "$here/initrd-init" "$ird/init"
chmod 755 "$ird/init"

step "live system files"
root="$work/root"
modules_into_root "$root"
cp -a "$here/rootfs/." "$root/"
for tool in disko nixos-install nixos-generate-config; do
  install -m 755 "$guest/rootfs/usr/local/bin/$tool" "$root/usr/local/bin/$tool"
done
chmod 755 "$root/usr/sbin/nixos-live-init"
chroot "$root" useradd --create-home --shell /bin/bash --groups sudo nixos
chroot "$root" passwd --delete nixos > /dev/null
chroot "$root" passwd --delete root > /dev/null
# NixOS: security.sudo.wheelNeedsPassword = false for the installer's user.
echo 'nixos ALL=(ALL:ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/nixos"
chmod 440 "$root/etc/sudoers.d/nixos"
# NixOS's installer: services.openssh.settings.PermitRootLogin = "yes"; a login still needs
# a key or a password (empty passwords are refused).
echo 'PermitRootLogin yes' > "$root/etc/ssh/sshd_config.d/installer.conf"
rm -f "$root"/etc/ssh/ssh_host_*
echo nixos > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nixos\n' > "$root/etc/hosts"
: > "$root/etc/fstab"
rm -f "$root/etc/machine-id"
mkdir -p "$root/nix/store" "$root/nix/.rw-store" "$root/iso" "$root/mnt" "$root/etc/nix"
# The live Nix store's sticky shell prompt: what NixOS's bash shows.
echo 'PS1="\n\[\033[1;32m\][\u@\h:\w]\$\[\033[0m\] "' > "$root/etc/profile.d/nixos-prompt.sh"
echo '[ -f /etc/profile.d/nixos-prompt.sh ] && . /etc/profile.d/nixos-prompt.sh' >> "$root/home/nixos/.bashrc"
# The system's store path, whose init the boot entry names, as NixOS's does.
system=/nix/store/$(printf '%s' "$label-system" | sha256sum | cut -c1-32)-nixos-system-nixos-24.05
mkdir -p "$root$system"
ln -s /usr/sbin/nixos-live-init "$root$system/init"

step "squashfs"
tree="$work/iso"
kdir=/boot/nix/store/$(printf '%s' "linux-$kver" | sha256sum | cut -c1-32)-linux-$kver
idir=/boot/nix/store/$(printf '%s' "initrd-$kver" | sha256sum | cut -c1-32)-initrd-linux-$kver
mkdir -p "$tree$kdir" "$tree$idir" "$tree/isolinux" "$tree/EFI/BOOT"
mksquashfs "$root" "$tree/nix-store.squashfs" -quiet -no-progress -comp gzip -noappend > /dev/null
cp "$work/kernel/boot/vmlinuz-$kver" "$tree$kdir/bzImage"
(cd "$ird" && find . | cpio --quiet -o -H newc | gzip -9) > "$tree$idir/initrd"

step "boot configuration"
append="init=$system/init root=LABEL=$label boot.shell_on_fail loglevel=4"
entry() {
  printf 'LABEL %s\nMENU LABEL NixOS 24.05 (nixtest stand-in) Installer%s\nLINUX %s/bzImage\nAPPEND %s%s\nINITRD %s/initrd\n\n' \
    "$1" "$2" "$kdir" "$append" "$3" "$idir"
}
{
  printf 'SERIAL 0 115200\nTIMEOUT 10\n\nDEFAULT boot\n\n'
  entry boot "" ""
  entry boot-nomodeset " (nomodeset)" " nomodeset"
  entry boot-serial " (serial console=ttyS0,115200n8)" " console=ttyS0,115200n8"
} > "$tree/isolinux/isolinux.cfg"
cp /usr/lib/ISOLINUX/isolinux.bin "$tree/isolinux/"
cp /usr/lib/syslinux/modules/bios/ldlinux.c32 "$tree/isolinux/"
{
  printf 'set timeout=10\nsearch --set=root --file /EFI/nixos-installer-image\n\n'
  printf "menuentry 'NixOS 24.05 (nixtest stand-in) Installer ' --class installer {\n  linux %s/bzImage \${isoboot} %s\n  initrd %s/initrd\n}\n" "$kdir" "$append" "$idir"
  printf "menuentry 'NixOS 24.05 (nixtest stand-in) Installer (serial console=ttyS0,115200n8)' --class serial {\n  linux %s/bzImage \${isoboot} %s console=ttyS0,115200n8\n  initrd %s/initrd\n}\n" "$kdir" "$append" "$idir"
} > "$tree/EFI/BOOT/grub.cfg"
touch "$tree/EFI/nixos-installer-image"
echo "24.05 (nixtest stand-in, Debian $release, kernel $kver)" > "$tree/version.txt"

step "ISO image"
xorriso -as mkisofs -quiet -R -J -V "$label" \
  -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
  -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
  -o "$out/installer.iso.tmp" "$tree" 2> "$work/xorriso.log" || { cat "$work/xorriso.log" >&2; exit 1; }
mv "$out/installer.iso.tmp" "$out/installer.iso"
step "done"
