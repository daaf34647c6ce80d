#!/usr/bin/env bash
# Builds the container images of emu-sriov without a container engine or registry: release
# builds of emu-sriov-operator and emu-sriov-agent (the agent image carries emu-sriov-cni too;
# glibc binaries plus the shared libraries
# they load, copied from this host), packed by tests/cluster/image.sh into OCI archives that
# `ctr -n k8s.io images import` accepts. Also packs the cached kubectl as the chart's cleanup
# image. With a registry and an engine, use the Containerfile at the repository root instead.
#
# Usage: tests/cluster/images.sh [--tag TAG] [--out DIR] [--import]
#   --tag TAG   image tag                                   [dev]
#   --out DIR   where the .tar archives go                  [target/images]
#   --import    also import them into the local cluster's containerd (tests/cluster/up.sh;
#               EMU_CLUSTER_DIR as there)
# Images: docker.io/emu-sriov/operator:TAG, docker.io/emu-sriov/agent:TAG,
#         docker.io/emu-sriov/kubectl:<kubernetes version> (charts: cleanup.image).
# A cold release build of both binaries takes ~10 minutes on 2 cores; cargo reuses it after.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tag=dev out=$root/target/images import=0
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --import) import=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "images.sh: unknown argument '$1' (see --help)" >&2; exit 1 ;;
  esac
done
t0=$SECONDS
echo "images.sh: cargo build --release (emu-sriov-operator, emu-sriov-agent, emu-sriov-cni; cold: ~10 min on 2 cores)"
(cd "$root" && cargo build --release -p emu-sriov-operator -p emu-sriov-agent -p emu-sriov-cni)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
bin=$("$here/build.sh" --print-dir)
"$here/build.sh" kubectl | sed 's/^/  /'
k8s_version=$(basename "$(dirname "$bin")")
mkdir -p "$out"

"$here/image.sh" --name "docker.io/emu-sriov/operator:$tag" --out "$out/operator.tar" \
  --file "$target/release/emu-sriov-operator:/usr/bin/emu-sriov-operator" --strip --with-libs \
  --entrypoint /usr/bin/emu-sriov-operator --user 65532:65532 \
  --label org.opencontainers.image.source=https://github.com/emu-sriov/emu-sriov
"$here/image.sh" --name "docker.io/emu-sriov/agent:$tag" --out "$out/agent.tar" \
  --file "$target/release/emu-sriov-agent:/usr/bin/emu-sriov-agent" \
  --file "$target/release/emu-sriov-cni:/usr/bin/emu-sriov-cni" --strip --with-libs \
  --entrypoint /usr/bin/emu-sriov-agent \
  --label org.opencontainers.image.source=https://github.com/emu-sriov/emu-sriov
"$here/image.sh" --name "docker.io/emu-sriov/kubectl:$k8s_version" --out "$out/kubectl.tar" \
  --file "$bin/kubectl:/usr/bin/kubectl" --entrypoint /usr/bin/kubectl --user 65532:65532

if [ $import = 1 ]; then
  S=${EMU_CLUSTER_DIR:-/var/lib/emu-sriov-cluster}
  [ -S "$S/run/containerd.sock" ] || { echo "images.sh: no containerd socket at $S/run/containerd.sock (run tests/cluster/up.sh)" >&2; exit 1; }
  for t in operator agent kubectl; do
    "$bin/ctr" --address "$S/run/containerd.sock" -n k8s.io images import "$out/$t.tar" 2>&1 | grep -v DEPRECATION | sed 's/^/  /'
  done
  echo "images.sh: imported into $S's containerd"
fi
echo "images.sh: done in $((SECONDS - t0)) s; archives in $out"
