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
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
(cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null)
dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
depmod -b "$work/kernel" "$kver"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"

# Modules the guest needs, with their dependencies, in load order.
moddir="$work/kernel/lib/modules/$kver"
want="virtio_pci virtio_blk virtio_net crc32c_generic ext4 vfat nls_cp437 nls_iso8859_1 nls_utf8 nls_ascii loop"
resolve() {
  local m=$1 path deps
  path=$(awk -F: -v m="/$m.ko" 'index($1, m) && substr($1, length($1) - length(m) + 1) == m {print $1; exit}' "$moddir/modules.dep")
  path=${path:-$(awk -F: -v m="/$m.ko.xz" 'index($1, m) {print $1; exit}' "$moddir/modules.dep")}
  [ -n "$path" ] || return 0   # built into the kernel
  deps=$(awk -F: -v p="$path" '$1 == p {print $2; exit}' "$moddir/modules.dep")
  for d in $deps; do resolve "$(basename "$d" | sed 's/\.ko.*//')"; done
  grep -qxF "$path" "$work/modules.order" 2>/dev/null || echo "$path" >> "$work/modules.order"
}
: > "$work/modules.order"
for m in $want; do resolve "$m"; done

step "initramfs ($(wc -l < "$work/modules.order") modules)"
ird="$work/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$ird/bin/busybox"
while read -r path; do
  cp "$moddir/$path" "$ird/lib/modules/"
  basename "$path" >> "$ird/modules"
done < "$work/modules.order"
cp "$here/initramfs-init" "$ird/init"
chmod 755 "$ird/init"
(cd "$ird" && find . | cpio --quiet -o -H newc | gzip -9) > "$out/initrd.img.tmp"

step "guest files"
mkdir -p "$work/root/lib/modules/$kver"
while read -r path; do
  mkdir -p "$work/root/lib/modules/$kver/$(dirname "$path")"
  cp "$moddir/$path" "$work/root/lib/modules/$kver/$path"
done < "$work/modules.order"
cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$work/root/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$work/root" "$kver"
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
