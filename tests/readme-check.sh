#!/usr/bin/env bash
# Runs the README's shell examples as a reader would paste them, against the agent built from
# this tree, in a temporary directory; fails on the first one that does not work.
#
# Every ```sh block in README.md carries a marker on the line before it:
#   <!-- readme-check: run -->               run it (bash -e); it must exit 0 within 120 s
#   <!-- readme-check: serve until=PATH -->  a command that serves until stopped: start it in
#                                            the background, wait until PATH exists (at most
#                                            60 s; it must not exit first), leave it running
#                                            for the blocks after it, stop it (SIGTERM to its
#                                            process group) before the next serve block or at
#                                            the end; all of it must be gone within 15 s
#   <!-- readme-check: skip: REASON -->      not run here; listed with the reason
# A ```sh block without a marker is an error, so that no new example escapes the check.
# `/tmp/emu` in a block (and in PATH) stands for a fresh directory under $TMPDIR.
#
# Usage: tests/readme-check.sh [README]     (as root: an example makes a TAP)
set -euo pipefail
cd "$(dirname "$0")/.."
readme=${1:-README.md}

work=$(mktemp -d "${TMPDIR:-/tmp}/readme-check.XXXXXX")
serve_pid=
stop_serve() {
  [ -n "$serve_pid" ] || return 0
  local pid=$serve_pid status=0
  serve_pid=
  # The block runs in its own process group (setsid): stop all of it, as Ctrl-C would, and
  # wait until every process in it is gone (the agent flushes its state on the way out).
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "readme-check: the serving block did not stop within 15 s of SIGTERM" >&2
    status=1
  fi
  wait "$pid" 2>/dev/null || status=$?
  # 143: the shell running the block was itself terminated by the SIGTERM, which is the point.
  if [ "$status" != 0 ] && [ "$status" != 143 ]; then
    echo "readme-check: the serving block exited with status $status:" >&2
    tail -n 20 "$serve_log" >&2
    return 1
  fi
}
cleanup() {
  stop_serve || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q -p emu-sriov-agent
bin=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug
export PATH="$bin:$PATH"
command -v emu-sriov-agent >/dev/null || { echo "readme-check: no emu-sriov-agent in $bin" >&2; exit 1; }

# Split the README into block files: NNN.sh (the body) and NNN.mode (marker, line number).
awk -v dir="$work" '
  /^<!-- readme-check: .* -->$/ { marker = $0; sub(/^<!-- readme-check: /, "", marker); sub(/ -->$/, "", marker); mline = NR; next }
  /^```sh$/ {
    n++; file = sprintf("%s/%03d", dir, n); inblock = 1
    if (mline != NR - 1) marker = "missing"
    printf "%s\t%d\n", marker, NR > (file ".mode")
    printf "" > (file ".sh")
    marker = ""; next
  }
  /^```/ && inblock { inblock = 0; next }
  inblock { print > (file ".sh") }
  { if (mline != NR) marker = "" }
' "$readme"

ran=0 served=0 skipped=0
for mode_file in "$work"/*.mode; do
  block=${mode_file%.mode}.sh
  IFS=$'\t' read -r marker line < "$mode_file"
  sed -i "s|/tmp/emu|$work/emu|g" "$block"
  case $marker in
    run)
      printf 'run    %s:%s\n' "$readme" "$line"
      if ! (cd "$work" && timeout 120 bash -e "$block") > "$block.log" 2>&1; then
        echo "readme-check: the block at $readme:$line failed:" >&2
        sed 's/^/  | /' "$block" >&2
        tail -n 30 "$block.log" >&2
        exit 1
      fi
      ran=$((ran + 1))
      ;;
    serve\ until=*)
      stop_serve
      until_path=${marker#serve until=}
      until_path=${until_path//\/tmp\/emu/$work/emu}
      rm -f "$until_path"
      printf 'serve  %s:%s\n' "$readme" "$line"
      serve_log=$block.log
      (cd "$work" && exec setsid bash -e "$block") > "$serve_log" 2>&1 &
      serve_pid=$!
      for _ in $(seq 600); do
        [ -e "$until_path" ] && break
        if ! kill -0 "$serve_pid" 2>/dev/null; then break; fi
        sleep 0.1
      done
      if [ ! -e "$until_path" ]; then
        echo "readme-check: the block at $readme:$line never made $until_path:" >&2
        sed 's/^/  | /' "$block" >&2
        tail -n 30 "$serve_log" >&2
        exit 1
      fi
      served=$((served + 1))
      ;;
    skip:*)
      printf 'skip   %s:%s (%s)\n' "$readme" "$line" "${marker#skip: }"
      skipped=$((skipped + 1))
      ;;
    *)
      echo "readme-check: $readme:$line: a sh block without a valid marker ('$marker'); put" \
        "<!-- readme-check: run | serve until=PATH | skip: REASON --> on the line before it" >&2
      exit 1
      ;;
  esac
done
stop_serve
echo "readme-check: $ran run, $served served, $skipped skipped: all passed"
