#!/usr/bin/env bash
# Builds the nixtest test guest from Debian's packages only:
#   OUT/vmlinuz     a Debian kernel (linux-image-amd64 of the running release)
#   OUT/initrd.img  a busybox initramfs that loads the virtio and ext4 modules and mounts root
#   OUT/root.qcow2  the root filesystem: Debian minbase with sshd, disk tools and the stand-ins
#                   for nixos-generate-config, disko and nixos-install (guest/rootfs)
# Usage: build-image.sh OUT AUTHORIZED_KEY_FILE
# Needs root, mmdebstrap, busybox-static, cpio, e2fsprogs, qemu-utils.
set -euo pipefail
out=$1
pubkey=$2
here=$(cd "$(dirname "$0")" && pwd)
release=${NIXTEST_GUEST_RELEASE:-bookworm}
root_size=${NIXTEST_GUEST_ROOT_SIZE:-1200M}
work=$(mktemp -d /var/tmp/nixtest-image.XXXXXX)

trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
step() { echo "::PROGRESS::image::$*"; }

step "root filesystem ($release, minbase)"
packages=openssh-server,iproute2,kmod,busybox,procps,curl,ca-certificates,e2fsprogs,dosfstools,fdisk,gdisk,xz-utils,psmisc
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/{doc,man,locale,info}/*' \
  "$release" "$work/root"

step "kernel"
. "$here/kernel-lib.sh"
fetch_kernel
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
# Modules the guest needs, with their dependencies, in load order.
resolve_modules virtio_pci virtio_blk virtio_net crc32c_generic ext4 vfat nls_cp437 nls_iso8859_1 nls_utf8 nls_ascii loop

step "initramfs ($(wc -l < "$work/modules.order") modules)"
ird="$work/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$ird/bin/busybox"
modules_into_initramfs "$ird"
cp "$here/initramfs-init" "$ird/init"
chmod 755 "$ird/init"
(cd "$ird" && find . | cpio --quiet -o -H newc | gzip -9) > "$out/initrd.img.tmp"

step "guest files"
modules_into_root "$work/root"
cp -a "$here/rootfs/." "$work/root/"
chmod 755 "$work/root/usr/sbin/nixtest-init" "$work/root/usr/local/bin/"*
install -d -m 700 "$work/root/root/.ssh"
install -m 600 "$pubkey" "$work/root/root/.ssh/authorized_keys"
chroot "$work/root" ssh-keygen -A >/dev/null
echo nixtest-guest > "$work/root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nixtest-guest\n' > "$work/root/etc/hosts"
: > "$work/root/etc/fstab"
rm -f "$work/root/etc/machine-id"

step "root image ($root_size)"
mke2fs -q -t ext4 -L nixtest-root -d "$work/root" "$work/root.img" "$root_size"
qemu-img convert -q -f raw -O qcow2 "$work/root.img" "$out/root.qcow2.tmp"

mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/root.qcow2.tmp" "$out/root.qcow2"
echo "$kver" > "$out/kernel-version"
step "done"
