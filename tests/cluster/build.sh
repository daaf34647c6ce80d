#!/usr/bin/env bash
# Builds the real Kubernetes programs the tests and the local cluster run, from the published Go
# modules pinned in tests/cluster/go.mod, into a cache that later runs reuse:
#
#   ~/.cache/emu-sriov/k8s/<version>/bin/{kube-apiserver,kubectl,etcd,...}
#
# Usage: tests/cluster/build.sh [PROGRAM...]     (default: kube-apiserver kubectl etcd)
#        tests/cluster/build.sh --print-dir      (prints the bin directory and exits)
# Programs: kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd.
#
# A cold build downloads the modules (~400 MB into Go's module cache) and compiles a few thousand
# packages: several minutes per program on a 2-core machine, less for each further one because
# they share most packages. A program is rebuilt only when the pinned versions (go.mod/go.sum)
# change. Set EMU_K8S_CACHE to put the cache elsewhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
cache=${EMU_K8S_CACHE:-$HOME/.cache/emu-sriov/k8s}/$k8s_version
bin=$cache/bin
# What the cached binaries were built from: a change to the pins rebuilds them.
stamp=$(cat go.mod go.sum | sha256sum | cut -c1-16)

if [ "${1:-}" = --print-dir ]; then
  echo "$bin"
  exit 0
fi

progs=("$@")
[ ${#progs[@]} -gt 0 ] || progs=(kube-apiserver kubectl etcd)

command -v go >/dev/null || {
  echo "build.sh: go not found; install Go >= 1.26 (the Kubernetes $k8s_version modules need it)" >&2
  exit 1
}

package_of() {
  case $1 in
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kubectl)
      echo "k8s.io/kubernetes/cmd/$1" ;;
    *) echo "build.sh: unknown program '$1' (known: kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd)" >&2
       return 1 ;;
  esac
}

# The version stamps upstream's hack/lib/version.sh sets, so `--version` prints the real release.
minor=${k8s_version#v1.}
minor=${minor%%.*}
build_date=$(date -u -d "@$(stat -c %Y go.sum)" +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date -X $p.gitCommit=go-module-proxy"
done

mkdir -p "$bin"
for prog in "${progs[@]}"; do
  pkg=$(package_of "$prog")
  if [ -x "$bin/$prog" ] && [ "$(cat "$bin/.$prog.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "build.sh: $prog ($k8s_version) cached in $bin"
    continue
  fi
  version=$k8s_version
  [ "$prog" = etcd ] && version=$etcd_version
  echo "build.sh: building $prog $version from the Go module proxy into $bin"
  echo "build.sh:   cold, this takes several minutes on 2 cores (progress every 30 s); cached runs skip it"
  log=$(mktemp)
  t0=$SECONDS
  (
    while sleep 30; do
      echo "build.sh:   $prog: $((SECONDS - t0)) s, $(grep -c . "$log" || true) packages compiled so far"
    done
  ) &
  ticker=$!
  status=0
  CGO_ENABLED=0 go build -v -trimpath -ldflags "$ldflags" -o "$bin/$prog.tmp" "$pkg" >"$log" 2>&1 || status=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ $status -ne 0 ]; then
    echo "build.sh: building $prog failed (go build exit $status); the last lines:" >&2
    tail -30 "$log" >&2
    rm -f "$log"
    exit $status
  fi
  rm -f "$log"
  mv "$bin/$prog.tmp" "$bin/$prog"
  echo "$stamp" >"$bin/.$prog.stamp"
  echo "build.sh: built $prog in $((SECONDS - t0)) s"
done
