#!/usr/bin/env bash
# Builds the real Kubernetes programs the tests and the local cluster run, from the published Go
# modules pinned in tests/cluster/*/go.mod, into a cache that later runs reuse:
#
#   ~/.cache/emu-sriov/k8s/<version>/bin/{kube-apiserver,kubectl,etcd,kubelet,containerd,helm,...}
#   ~/.cache/emu-sriov/k8s/<version>/bin/cni/{bridge,host-local,loopback}
#
# Usage: tests/cluster/build.sh [PROGRAM|GROUP...]  (default: kube-apiserver kubectl etcd)
#        tests/cluster/build.sh --print-dir         (prints the bin directory and exits)
# Programs and the module that pins them:
#   go.mod             kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd
#   containerd/go.mod  containerd ctr containerd-shim-runc-v2
#   cni/go.mod         bridge host-local loopback             (into bin/cni/)
#   tools/go.mod       helm crictl
#   multus/go.mod      multus thin_entrypoint                 (Multus' thin plugin and its
#                                                             DaemonSet entrypoint: the image of
#                                                             the Multus test)
# Groups: control-plane (etcd kube-apiserver kubectl), node (everything the local cluster,
#         tests/cluster/up.sh, runs: the control plane, kube-controller-manager, kube-scheduler,
#         kubelet, containerd, ctr, the shim, the CNI plugins, crictl), multus, all.
# runc is not built here: the local cluster uses Debian's `runc` package (up.sh installs it).
#
# A cold build downloads the modules (~1 GB into Go's module cache for everything) and compiles
# a few thousand packages: several minutes per big program on a 2-core machine (kube-apiserver,
# kubelet, containerd, helm), less for each further one from the same module since they share
# most packages. A program is rebuilt only when its module's pins (go.mod/go.sum) change. Set
# EMU_K8S_CACHE to put the cache elsewhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

command -v go >/dev/null || {
  echo "build.sh: go not found; install Go >= 1.26 (the pinned modules need it)" >&2
  exit 1
}

modver() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
k8s_version=$(modver . k8s.io/kubernetes)
cache=${EMU_K8S_CACHE:-$HOME/.cache/emu-sriov/k8s}/$k8s_version
bin=$cache/bin

if [ "${1:-}" = --print-dir ]; then
  echo "$bin"
  exit 0
fi

declare -a progs=()
for a in "$@"; do
  case $a in
    control-plane) progs+=(etcd kube-apiserver kubectl) ;;
    node) progs+=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet
                  containerd ctr containerd-shim-runc-v2 bridge host-local loopback crictl) ;;
    all) progs+=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet
                 containerd ctr containerd-shim-runc-v2 bridge host-local loopback crictl helm
                 multus thin_entrypoint) ;;
    multus) progs+=(multus thin_entrypoint) ;;
    *) progs+=("$a") ;;
  esac
done
[ ${#progs[@]} -gt 0 ] || progs=(kube-apiserver kubectl etcd)

# module dir, package, output path (relative to $bin) and version of each program.
describe() {
  case $1 in
    etcd) mod=. pkg=go.etcd.io/etcd/server/v3 out=etcd ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kubectl)
      mod=. pkg=k8s.io/kubernetes/cmd/$1 out=$1 ;;
    containerd | ctr | containerd-shim-runc-v2)
      mod=containerd pkg=github.com/containerd/containerd/v2/cmd/$1 out=$1 ;;
    bridge | loopback) mod=cni pkg=github.com/containernetworking/plugins/plugins/main/$1 out=cni/$1 ;;
    host-local) mod=cni pkg=github.com/containernetworking/plugins/plugins/ipam/$1 out=cni/$1 ;;
    helm) mod=tools pkg=helm.sh/helm/v4/cmd/helm out=helm ;;
    crictl) mod=tools pkg=sigs.k8s.io/cri-tools/cmd/crictl out=crictl ;;
    multus | thin_entrypoint) mod=multus pkg=gopkg.in/k8snetworkplumbingwg/multus-cni.v4/cmd/$1 out=multus/$1 ;;
    *) echo "build.sh: unknown program '$1' (known: etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl containerd ctr containerd-shim-runc-v2 bridge host-local loopback helm crictl multus thin_entrypoint; groups: control-plane node multus all)" >&2
       return 1 ;;
  esac
}

ldflags_for() {
  local prog=$1 version=$2 flags="-s -w" p minor build_date
  case $prog in
    kube-*|kubelet|kubectl)
      # The version stamps upstream's hack/lib/version.sh sets, so `--version` prints the release.
      minor=${version#v1.}; minor=${minor%%.*}
      build_date=$(date -u -d "@$(stat -c %Y "$here/go.sum")" +%Y-%m-%dT%H:%M:%SZ)
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        flags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date -X $p.gitCommit=go-module-proxy"
      done ;;
    containerd | ctr | containerd-shim-runc-v2)
      p=github.com/containerd/containerd/v2/version
      flags+=" -X $p.Version=$version -X $p.Revision=go-module-proxy -X $p.Package=github.com/containerd/containerd/v2" ;;
    bridge | host-local | loopback)
      flags+=" -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$version" ;;
    helm) flags+=" -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" ;;
    crictl) flags+=" -X sigs.k8s.io/cri-tools/pkg/version.Version=$version" ;;
    multus | thin_entrypoint)
      p=gopkg.in/k8snetworkplumbingwg/multus-cni.v4/pkg/multus
      flags+=" -X $p.version=$version -X $p.commit=go-module-proxy -X $p.gitTreeState=clean" ;;
  esac
  echo "$flags"
}

mkdir -p "$bin/cni" "$bin/multus"
for prog in "${progs[@]}"; do
  describe "$prog"
  # What the cached binary was built from: a change to its module's pins rebuilds it.
  stamp=$(cat "$here/$mod/go.mod" "$here/$mod/go.sum" | sha256sum | cut -c1-16)
  stampfile=$bin/.$prog.stamp
  if [ -x "$bin/$out" ] && [ "$(cat "$stampfile" 2>/dev/null)" = "$stamp" ]; then
    echo "build.sh: $prog cached in $bin/$out"
    continue
  fi
  version=$(modver "$mod" "$(case $prog in
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kube-*|kubelet|kubectl) echo k8s.io/kubernetes ;;
    containerd|ctr|containerd-shim-runc-v2) echo github.com/containerd/containerd/v2 ;;
    bridge|host-local|loopback) echo github.com/containernetworking/plugins ;;
    helm) echo helm.sh/helm/v4 ;;
    crictl) echo sigs.k8s.io/cri-tools ;;
    multus|thin_entrypoint) echo gopkg.in/k8snetworkplumbingwg/multus-cni.v4 ;;
  esac)")
  echo "build.sh: building $prog $version from the Go module proxy into $bin/$out"
  echo "build.sh:   cold, this takes minutes on 2 cores (progress every 30 s); cached runs skip it"
  log=$(mktemp)
  t0=$SECONDS
  (
    while sleep 30; do
      echo "build.sh:   $prog: $((SECONDS - t0)) s, $(grep -c . "$log" || true) packages compiled so far"
    done
  ) &
  ticker=$!
  status=0
  # Static binaries without cgo everywhere (containerd then lacks the btrfs snapshotter, which
  # the local cluster does not use: it runs overlayfs).
  (cd "$here/$mod" && CGO_ENABLED=0 go build -v -trimpath -ldflags "$(ldflags_for "$prog" "$version")" \
     -o "$bin/$out.tmp" "$pkg") >"$log" 2>&1 || status=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ $status -ne 0 ]; then
    echo "build.sh: building $prog failed (go build exit $status); the last lines:" >&2
    tail -30 "$log" >&2
    rm -f "$log" "$bin/$out.tmp"
    exit $status
  fi
  rm -f "$log"
  mv "$bin/$out.tmp" "$bin/$out"
  echo "$stamp" >"$stampfile"
  echo "build.sh: built $prog in $((SECONDS - t0)) s"
done
