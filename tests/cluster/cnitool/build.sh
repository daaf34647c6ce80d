#!/usr/bin/env bash
# Builds the CNI programs the netdev tests run, from the Go modules pinned in this directory's
# go.mod, into a cache later runs reuse:
#
#   ~/.cache/emu-sriov/cni/<cni version>-<plugins version>/bin/{cnitool,host-local,static,bridge}
#
# Usage: tests/cluster/cnitool/build.sh              (builds what is missing, prints nothing else
#                                                    than progress on stderr and the dir on stdout)
#        tests/cluster/cnitool/build.sh --print-dir  (prints the bin directory and exits)
#        tests/cluster/cnitool/build.sh --help
# A cold build takes a minute or two on 2 cores (a few MB of modules). Set EMU_CNI_CACHE to put the
# cache elsewhere. The tests find the directory through EMU_CNI_BIN or by running this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

command -v go >/dev/null || {
  echo "cnitool/build.sh: go not found; install Go >= 1.26" >&2
  exit 1
}
cni_version=$(go list -m -f '{{.Version}}' github.com/containernetworking/cni)
plugins_version=$(go list -m -f '{{.Version}}' github.com/containernetworking/plugins)
bin=${EMU_CNI_CACHE:-$HOME/.cache/emu-sriov/cni}/$cni_version-$plugins_version/bin
if [ "${1:-}" = --print-dir ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
build() {
  local name=$1 pkg=$2 version=$3
  if [ -x "$bin/$name" ]; then
    return
  fi
  echo "cnitool/build.sh: building $name ($version) into $bin" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$version" \
    -o "$bin/$name.tmp" "$pkg" >&2
  mv "$bin/$name.tmp" "$bin/$name"
}
build cnitool github.com/containernetworking/cni/cnitool "$cni_version"
build host-local github.com/containernetworking/plugins/plugins/ipam/host-local "$plugins_version"
build static github.com/containernetworking/plugins/plugins/ipam/static "$plugins_version"
build bridge github.com/containernetworking/plugins/plugins/main/bridge "$plugins_version"
echo "$bin"
