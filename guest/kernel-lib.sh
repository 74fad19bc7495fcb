# Sourced by build-image.sh and iso/build-iso.sh: Debian's kernel and the modules a guest
# needs. Expects $work; sets $kver and $moddir.

# Downloads and unpacks linux-image-amd64's kernel of the running release into $work/kernel.
fetch_kernel() {
  local kpkg
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null)
  dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel"
  kver=$(ls "$work/kernel/lib/modules")
  depmod -b "$work/kernel" "$kver"
  moddir="$work/kernel/lib/modules/$kver"
}

# The modules named, with their dependencies, in load order, into $work/modules.order.
resolve_modules() {
  : > "$work/modules.order"
  local m
  for m in "$@"; do resolve_module "$m"; done
}

resolve_module() {
  local m=$1 path deps d
  path=$(awk -F: -v m="/$m.ko" 'index($1, m) && substr($1, length($1) - length(m) + 1) == m {print $1; exit}' "$moddir/modules.dep")
  path=${path:-$(awk -F: -v m="/$m.ko.xz" 'index($1, m) {print $1; exit}' "$moddir/modules.dep")}
  [ -n "$path" ] || return 0   # built into the kernel
  deps=$(awk -F: -v p="$path" '$1 == p {print $2; exit}' "$moddir/modules.dep")
  for d in $deps; do resolve_module "$(basename "$d" | sed 's/\.ko.*//')"; done
  grep -qxF "$path" "$work/modules.order" 2>/dev/null || echo "$path" >> "$work/modules.order"
}

# The resolved modules into an initramfs folder (flat, with the load order in /modules).
modules_into_initramfs() {
  local ird=$1 path
  mkdir -p "$ird/lib/modules"
  while read -r path; do
    cp "$moddir/$path" "$ird/lib/modules/"
    basename "$path" >> "$ird/modules"
  done < "$work/modules.order"
}

# The resolved modules into a root filesystem, where modprobe finds them.
modules_into_root() {
  local root=$1 path
  mkdir -p "$root/lib/modules/$kver"
  while read -r path; do
    mkdir -p "$root/lib/modules/$kver/$(dirname "$path")"
    cp "$moddir/$path" "$root/lib/modules/$kver/$path"
  done < "$work/modules.order"
  cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
  depmod -b "$root" "$kver"
}
