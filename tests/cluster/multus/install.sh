#!/usr/bin/env bash
# Installs Multus CNI (the thin plugin) on the local cluster of tests/cluster/up.sh: builds
# multus and its entrypoint from this directory's go.mod (tests/cluster/build.sh multus), packs
# them as the image docker.io/emu-sriov/multus:<version> (tests/cluster/image.sh, no engine),
# imports it, applies the NetworkAttachmentDefinition CRD and multus.yaml, and waits until
# Multus' config leads the node's CNI config dir. After that every new pod's network goes
# through Multus: the cluster's bridge network as the default, plus the networks named in the
# pod's k8s.v1.cni.cncf.io/networks annotation.
#
# Usage: tests/cluster/multus/install.sh [--uninstall]   (as root; EMU_CLUSTER_DIR as up.sh)
#   --uninstall   delete the DaemonSet and its RBAC, wait until its config is gone (the CRD
#                 stays: other things may use it)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster=$(cd "$here/.." && pwd)
S=${EMU_CLUSTER_DIR:-/var/lib/emu-sriov-cluster}
TIMEOUT=${EMU_CLUSTER_TIMEOUT:-120}
t0=$SECONDS
log() { printf 'multus/install.sh: [%3ds] %s\n' $((SECONDS - t0)) "$*"; }
die() { echo "multus/install.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -s "$S/env.sh" ] || die "no local cluster at $S (run tests/cluster/up.sh first)"
# shellcheck disable=SC1091
source "$S/env.sh"
BIN=$("$cluster/build.sh" --print-dir)
version=$(cd "$here" && go list -m -f '{{.Version}}' gopkg.in/k8snetworkplumbingwg/multus-cni.v4)
image=docker.io/emu-sriov/multus:$version
conf=$S/cni/net.d/00-multus.conflist

render() {
  sed -e "s|@STATE@|$S|g" -e "s|@IMAGE@|$image|g" \
      -e "s|@APISERVER_HOST@|$EMU_APISERVER_HOST|g" -e "s|@APISERVER_PORT@|$EMU_APISERVER_PORT|g" \
      "$here/multus.yaml"
}

if [ "${1:-}" = --uninstall ]; then
  render | kubectl delete --ignore-not-found --wait=true -f - >/dev/null
  for ((i = 0; i < TIMEOUT * 2; i++)); do [ -e "$conf" ] || break; sleep 0.5; done
  [ -e "$conf" ] && die "$conf is still there after the DaemonSet went"
  rm -f "$S/cni/bin/multus"
  log "Multus removed"
  exit 0
fi

log "building or reusing multus $version (tests/cluster/build.sh multus; cold: a few minutes)"
"$cluster/build.sh" multus | sed 's/^/  /'
if ! ctr images ls -q | grep -qx "$image"; then
  "$cluster/image.sh" --name "$image" --out "$S/images/multus.tar" \
    --file "$BIN/multus/thin_entrypoint:/thin_entrypoint" \
    --file "$BIN/multus/multus:/usr/src/multus-cni/bin/multus" \
    --entrypoint /thin_entrypoint | sed 's/^/  /'
  ctr images import --local "$S/images/multus.tar" >/dev/null 2>&1 || ctr images import "$S/images/multus.tar" >/dev/null
  log "image $image imported"
fi
kubectl apply -f "$cluster/crds/network-attachment-definitions.k8s.cni.cncf.io.yaml" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/network-attachment-definitions.k8s.cni.cncf.io >/dev/null
render | kubectl apply -f - >/dev/null
log "applied multus.yaml; waiting for $conf"
for ((i = 0; i < TIMEOUT * 2; i++)); do
  [ -s "$conf" ] && [ -x "$S/cni/bin/multus" ] && break
  sleep 0.5
done
if ! [ -s "$conf" ]; then
  kubectl -n kube-system get pods -l app=multus -o wide >&2 || true
  kubectl -n kube-system logs -l app=multus --tail 30 >&2 || true
  die "Multus did not write $conf within ${TIMEOUT}s"
fi
log "Multus $version is the node's CNI: $conf (delegates to $(ls "$S/cni/net.d" | grep -v 00-multus | head -1))"
