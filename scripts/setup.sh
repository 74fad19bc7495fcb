#!/usr/bin/env bash
# Installs what nixtest needs on a fresh Debian machine (as root): the wasm32-wasip2 target for
# the plugins, and the Debian packages the build and tests use. Idempotent.
set -euo pipefail
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
packages=(ca-certificates pkg-config grep)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
rustup target add wasm32-wasip2 >/dev/null
echo "setup done: $(rustc --version), targets: $(rustup target list --installed | tr '\n' ' ')"
