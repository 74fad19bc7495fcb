#!/usr/bin/env bash
# Builds nixtest, shows its built-in plugins, installs one as a user plugin would, and replays
# real failure logs through the detectors and healers.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p nixtest
nixtest=target/release/nixtest
corpus=${NIXTEST_CORPUS:-../shared/corpus}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export NIXTEST_DATA_DIR="$work/data"
$nixtest plugin list
$nixtest plugin export "$work/builtin" >/dev/null
$nixtest plugin new my-check --path "$work/my-check" >/dev/null
echo "--- replaying $(ls "$corpus"/*.log | wc -l) recorded logs from $corpus"
for log in "$corpus"/*.log; do
  printf '%-28s ' "$(basename "$log")"
  $nixtest replay "$log" | head -1 || true
done
echo "--- one in full, with the healer's proposal"
mkdir -p "$work/config"
printf '{ disko.devices.disk.main = { type = "disk"; device = "/dev/sdz"; }; }\n' > "$work/config/disko-config.nix"
cat > "$work/facts.json" <<'JSON'
{"disks": [{"name": "vda", "path": "/dev/vda", "size_bytes": 2147483648, "partitions": 1, "mountpoints": ["/"], "boot_medium": true, "removable": false},
           {"name": "vdb", "path": "/dev/vdb", "size_bytes": 8589934592, "partitions": 0, "mountpoints": [], "boot_medium": false, "removable": false}],
 "mounts": [], "memory_total_bytes": 1073741824, "memory_available_bytes": 536870912, "swap_total_bytes": 0, "swap_free_bytes": 0,
 "cpus": 2, "resolvers": [], "reachability": [], "substituters": []}
JSON
printf 'sfdisk: cannot open /dev/sdz: No such file or directory\n' | $nixtest replay - --config "$work/config" --facts "$work/facts.json" || true
