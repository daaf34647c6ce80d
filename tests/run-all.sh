#!/usr/bin/env bash
# Runs every check CI runs, in order, and prints a summary with timings:
#   1. the guest environment (QEMU 11.1 with vfio-user-pci + the Debian trixie kernel), built
#      once into ~/.cache/emu-sriov/guest (~40 s cold, ~1 s cached; needs root and the Debian
#      mirrors the first time),
#   2. cargo fmt --check and clippy with -D warnings, and a plain (stable, no sanitizer) build
#      of the fuzz targets in fuzz/,
#   3. the CRD YAML in crds/ matches crdgen's output, and the README's shell examples work as
#      pasted (tests/readme-check.sh: each ```sh block is marked run, serve or skip),
#   4. the Kubernetes programs the tests and the local cluster run, from the modules pinned in
#      tests/cluster/*/go.mod (etcd, kube-apiserver, kubectl, kube-controller-manager,
#      kube-scheduler, kubelet, containerd + ctr + shim, CNI plugins, crictl, helm), built by
#      tests/cluster/build.sh all into ~/.cache/emu-sriov/k8s/<version>/bin. That needs Go >= 1.26
#      (preinstalled on the dev machines; otherwise https://go.dev/dl) and, the first time, the
#      Go module proxy: ~20 minutes cold on 2 cores, ~1 s cached,
#   5. all unit and integration tests, including the real-driver guest tests (#[ignore]d in a
#      plain `cargo test` because they boot TCG guests), the tests against a real
#      kube-apiserver + etcd (tests/src/k8s.rs; a few seconds per control plane) and the Helm
#      chart checks (tests/tests/chart.rs: lint, template, schema errors, server-side dry run),
#   6. the end-to-end test on a real one-node cluster (tests/tests/cluster_e2e.rs: up.sh, the
#      chart installed from images packed here, VFs in pods through the real kubelet, down.sh;
#      ~2-3 minutes; needs Debian's runc, which tests/cluster/up.sh installs),
#   7. netdev VFs through Multus on the same kind of cluster (tests/tests/cluster_multus.rs:
#      Multus built from its Go module, a netdev pool and network, two pods ping each other
#      through the agent's switch; ~2-3 minutes).
# Usage: tests/run-all.sh            (as root)
set -euo pipefail
cd "$(dirname "$0")/.."

declare -a SUMMARY=()
step() {
  local name=$1; shift
  printf '\n==> %s\n' "$name"
  local t0=$SECONDS
  "$@"
  SUMMARY+=("$(printf '%-28s %4ds' "$name" $((SECONDS - t0)))")
}

if [ "$(id -u)" != 0 ]; then
  echo "run-all: the guest tests need root (debootstrap for the guest root, QEMU, sockets in /tmp)." >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "run-all: cargo not found; install Rust (rustup) first" >&2; exit 1; }
# tests/cluster/build.sh compiles the Kubernetes programs from the pinned Go modules.
command -v go >/dev/null || { echo "run-all: go not found; install Go >= 1.26 (tests/cluster/build.sh builds the Kubernetes programs, containerd, the CNI plugins and helm with it)" >&2; exit 1; }
# The local cluster's container runtime uses Debian's runc.
if ! command -v runc >/dev/null; then
  echo "run-all: installing runc (the local cluster's OCI runtime)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends runc >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends runc >&2; }
fi
# The uplink tests make network namespaces and TAPs with iproute2.
if ! command -v ip >/dev/null; then
  echo "run-all: installing iproute2 (uplink tests use ip netns)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 >&2; }
fi

# The netdev-mode tests ping between namespaces and compare TCP throughput with iperf3.
for tool in ping:iputils-ping iperf3:iperf3; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    echo "run-all: installing ${tool#*:} (netdev VF tests)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${tool#*:}" >&2 \
      || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${tool#*:}" >&2; }
  fi
done

# `bench --instructions` (and its test) counts instructions with callgrind.
if ! command -v valgrind >/dev/null; then
  echo "run-all: installing valgrind (bench --instructions uses callgrind)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind >&2; }
fi

step "guest environment" tests/guest/prepare.sh
step "cargo fmt --check" cargo fmt --all --check
step "cargo fmt --check (fuzz)" cargo fmt --manifest-path fuzz/Cargo.toml --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
# The fuzz targets (fuzz/, its own workspace) must keep building; fuzzing itself is
# fuzz/run.sh, not part of CI.
step "fuzz targets build" cargo build --manifest-path fuzz/Cargo.toml --bins --examples
step "build (agent binary)" cargo build --workspace
step "CRDs up to date" cargo run -q -p emu-sriov-crds --bin crdgen -- --check crds
step "README examples" tests/readme-check.sh
step "kubernetes binaries" tests/cluster/build.sh all
# cnitool and the standard CNI plugins (host-local, static, bridge) for the netdev VF tests.
step "CNI tools" tests/cluster/cnitool/build.sh
# The cluster end-to-end test runs on its own below (it starts and stops a whole cluster).
step "tests (incl. guest tests)" cargo test --workspace -- --include-ignored --nocapture --skip on_a_real_cluster
step "cluster end-to-end" cargo test -p emu-sriov-tests --test cluster_e2e -- --include-ignored --nocapture
step "cluster Multus netdev" cargo test -p emu-sriov-tests --test cluster_multus -- --include-ignored --nocapture

printf '\n==> summary\n'
printf '  %s\n' "${SUMMARY[@]}"
echo "run-all: all checks passed"
