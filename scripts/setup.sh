#!/usr/bin/env bash
# Prepares a fresh Debian machine for nixtest (as root): Debian packages for the build, the
# VMs and the guest image; the wasm32-wasip2 target for the plugins; virtlogd and libvirtd
# started by hand (no systemd needed). Idempotent.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh installs packages and starts libvirtd: run it as root" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

# Build: a C/C++ toolchain (ring, libfuzzer), libvirt's C library for the virt crate. VMs: QEMU, libvirt, qemu-img. Guest image:
# mmdebstrap, busybox, cpio, mke2fs, depmod. `nixtest vm ssh`: the ssh client. The report and
# dashboard tests: headless Chromium and its WebDriver. The throughput bench's references: grep
# and ripgrep. Installer ISOs: xorriso reads them (and builds the stand-in one with
# squashfs-tools, isolinux and syslinux-common); Nix (nix-bin) checks a user's flake.
packages=(ca-certificates build-essential pkg-config libvirt-dev libvirt-daemon-system qemu-system-x86 qemu-utils
          mmdebstrap busybox-static cpio e2fsprogs kmod openssh-client grep ripgrep chromium chromium-driver
          xorriso squashfs-tools isolinux syslinux-common nix-bin)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# qemu-system-x86 comes from the release; a newer qemu-utils (backports) would block it, so
# both come from the release together.
if [ ${#missing[@]} -gt 0 ] || ! dpkg -s qemu-system-x86 >/dev/null 2>&1; then
  apt-get update -qq
  install=()
  for p in "${missing[@]}"; do
    case "$p" in qemu-utils) install+=("qemu-utils/$codename") ;; *) install+=("$p") ;; esac
  done
  if dpkg -s qemu-utils >/dev/null 2>&1 && ! dpkg -s qemu-system-x86 >/dev/null 2>&1; then
    install+=("qemu-utils/$codename")
  fi
  apt-get install -y -qq --no-install-recommends --allow-downgrades "${install[@]}" >/dev/null
fi

rustup target add wasm32-wasip2 >/dev/null 2>&1

# Without udev, /dev/kvm stays root-only; libvirt's capability probe then sees KVM while its
# usability check (as the QEMU user) does not, and it probes QEMU again on every call (tens of
# seconds each). The ownership udev would give it ends that; whether KVM is used at all is
# nixtest's own probe's decision.
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  chgrp kvm /dev/kvm && chmod 660 /dev/kvm
fi

pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -c qemu:///system version >/dev/null 2>&1 || { echo "libvirtd did not come up" >&2; exit 3; }
echo "setup done: $(rustc --version); libvirt $(virsh -c qemu:///system version --daemon 2>/dev/null | awk '/daemon/ {print $NF}')"
