#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for SECONDS (default 600), and prints per
# target the executions, libFuzzer's final coverage (cov = edges, ft = features) and whether
# it found a crash.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]     (no TARGET: every target, in `cargo fuzz list` order)
#
# Each target starts from fuzz/seeds/<target> (checked in), copied into the working corpus
# fuzz/corpus/<target> (gitignored), which grows across runs. Crashes land in
# fuzz/artifacts/<target>/. Logs: $FUZZ_LOG_DIR (default fuzz/target/fuzz-logs)/<target>.log.
# Environment: FUZZ_RSS_LIMIT_MB (default 2048), CARGO_BUILD_JOBS (default 2).
# Needs cargo-fuzz (installed here if missing) and nightly Rust for the sanitizer flags; on a
# stable-only toolchain it runs with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-600}
[ $# -gt 0 ] && shift
case $secs in '' | *[!0-9]*) echo "run.sh: SECONDS must be a number, got '$secs'" >&2; exit 2 ;; esac

if ! command -v cargo-fuzz >/dev/null; then
  echo "run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
rss=${FUZZ_RSS_LIMIT_MB:-2048}
logs=${FUZZ_LOG_DIR:-target/fuzz-logs}
mkdir -p "$logs"
logs=$(cd "$logs" && pwd)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi

declare -a summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  if [ -d "seeds/$t" ]; then cp -n "seeds/$t"/* "corpus/$t"/ 2>/dev/null || true; fi
  log="$logs/$t.log"
  echo "==> $t: ${secs}s (log: $log)"
  rc=0
  # One process, one worker: the other cores stay free. -timeout: an input that runs for
  # 30 s counts as a hang (a crash).
  "${fuzz[@]}" run "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb="$rss" -timeout=30 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  corp=$(find "corpus/$t" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    result="no crash"
  else
    failed=1
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //' || true)
    result="CRASH (rc $rc) ${artifact:-see log}"
  fi
  line=$(printf '%-16s execs %10s  cov %6s  ft %7s  corpus %5s  %s' \
    "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$result")
  echo "    $line"
  summary+=("$line")
done

printf '\n==> fuzz summary (%ss per target)\n' "$secs"
printf '  %s\n' "${summary[@]}"
exit $failed
