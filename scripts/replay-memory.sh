#!/usr/bin/env bash
# Peak memory of `nixtest replay` over large logs of several shapes: each log the throughput
# bench writes (an install's mix, long lines, many markers, many prefilter hits) is repeated
# until SIZE and streamed into `nixtest replay -` (nothing large is written to disk); the peak
# resident memory is GNU time's "Maximum resident set size".
# With NIXTEST_MEMORY_FROM=file, each log of SIZE is written to a file first and replayed from
# it (mapped, its pages given back behind the parser), as `nixtest replay FILE` does.
# Usage: scripts/replay-memory.sh LOGDIR SIZE_MIB...   (LOGDIR from
#   NIXTEST_BENCH_KEEP_LOGS=LOGDIR cargo bench -p nixtest --bench throughput)
set -euo pipefail
logs=$1
shift
bin=${NIXTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/nixtest}
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
# The first run compiles the plugins into the cache (once per build of nixtest): its peak is
# printed on its own, and the table measures what a log costs.
stats=$(mktemp)
printf 'x\n' | NIXTEST_DATA_DIR="$home/data" NIXTEST_CACHE_DIR="$home/cache" \
  /usr/bin/time -f '%M' -o "$stats" "$bin" replay - > /dev/null || true
printf 'first run, compiling the plugins: peak RSS %.1f MB\n\n' "$(tail -1 "$stats" | awk '{ print $1 / 1000 }')"
rm -f "$stats"
printf '| log | size | lines | seconds | peak RSS |\n|---|---|---|---|---|\n'
for log in "$logs"/*.log; do
  for mib in "$@"; do
    bytes=$((mib << 20))
    stats=$(mktemp)
    # `head -c` ends the stream at SIZE; a cut last line is one more malformed line.
    # The loop ends when head has had enough and cat meets the closed pipe.
    if [ "${NIXTEST_MEMORY_FROM:-}" = file ]; then
      file="$home/log"
      { while cat "$log"; do :; done; } 2>/dev/null | head -c "$bytes" > "$file" || true
      start=$(date +%s.%N)
      NIXTEST_DATA_DIR="$home/data" NIXTEST_CACHE_DIR="$home/cache" \
        /usr/bin/time -f '%M' -o "$stats" "$bin" replay "$file" > /dev/null || true
      end=$(date +%s.%N)
      rm -f "$file"
    else
      start=$(date +%s.%N)
      { while cat "$log"; do :; done; } 2>/dev/null | head -c "$bytes" \
        | NIXTEST_DATA_DIR="$home/data" NIXTEST_CACHE_DIR="$home/cache" \
          /usr/bin/time -f '%M' -o "$stats" "$bin" replay - > /dev/null || true
      end=$(date +%s.%N)
    fi
    lines=$(( $(wc -l < "$log") * bytes / $(stat -L -c %s "$log") ))
    printf '| %s | %d MiB | %d | %.1f | %.1f MB |\n' "$(basename "$log" .log)" "$mib" "$lines" \
      "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$(tail -1 "$stats" | awk '{ print $1 / 1000 }')"
    rm -f "$stats"
  done
done
