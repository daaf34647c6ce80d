#!/usr/bin/env bash
# Stops the local cluster tests/cluster/up.sh started and leaves nothing behind on the machine:
# pods are stopped through the CRI first (so containerd and the CNI plugins undo their mounts,
# network namespaces and veths), then the kubelet, containerd, the container shims (found by
# the containerd socket in their command line, nothing else), the control plane; then any mount
# left under the state dir is unmounted, the bridge, the blackhole routes and the kubelet's
# cgroups are removed and the kernel tunables the kubelet changed are restored.
#
# Usage: tests/cluster/down.sh [--purge]    (as root; same EMU_CLUSTER_DIR as up.sh)
#   --purge   also delete the state dir (etcd data, certificates, images, logs)
set -euo pipefail
S=${EMU_CLUSTER_DIR:-/var/lib/emu-sriov-cluster}
BRIDGE=emu-cni0
purge=0
[ "${1:-}" = --purge ] && purge=1
t_start=$SECONDS
log() { printf 'down.sh: [%3ds] %s\n' $((SECONDS - t_start)) "$*"; }

[ "$(id -u)" = 0 ] || { echo "down.sh: run as root" >&2; exit 1; }
[ -d "$S" ] || { log "no cluster state in $S; nothing to do"; exit 0; }
here=$(cd "$(dirname "$0")" && pwd)
BIN=$("$here/build.sh" --print-dir 2>/dev/null || true)
[ -n "$BIN" ] && export PATH="$BIN:$PATH"

alive() { [ -s "$S/pids/$1.pid" ] && kill -0 "$(cat "$S/pids/$1.pid")" 2>/dev/null; }
stop() { # stop NAME — SIGTERM, up to 15 s, then SIGKILL
  local name=$1 pid i
  [ -s "$S/pids/$name.pid" ] || return 0
  pid=$(cat "$S/pids/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM for 15 s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$S/pids/$name.pid"
}

sock=$S/run/containerd.sock
# 1. The kubelet first, so that it does not restart what we remove.
stop kubelet
# 2. Pods through the CRI: containerd tears down their netns (CNI DEL), mounts and shims.
if alive containerd && command -v crictl >/dev/null; then
  export CONTAINER_RUNTIME_ENDPOINT=unix://$sock IMAGE_SERVICE_ENDPOINT=unix://$sock
  pods=$(timeout 20 crictl pods -q 2>/dev/null || true)
  if [ -n "$pods" ]; then
    log "stopping and removing $(echo "$pods" | wc -l) pod sandbox(es)"
    for p in $pods; do
      timeout 30 crictl stopp "$p" >/dev/null 2>&1 || true
      timeout 30 crictl rmp -f "$p" >/dev/null 2>&1 || true
    done
  fi
fi
stop containerd
# 3. Shims outlive containerd by design; ours name our socket in their command line.
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "-address $sock "; then
    log "stopping containerd shim pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
done
# Container processes whose shim is gone: any process still in a kubelet pod cgroup.
for ctl in /sys/fs/cgroup/*/kubepods; do
  [ -d "$ctl" ] || continue
  while read -r pid; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null && log "killed leftover pod process $pid"
  done < <(find "$ctl" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
done
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd

# 4. Mounts under the state dir (overlay rootfs, shm, netns, kubelet volumes), deepest first.
for ((round = 0; round < 5; round++)); do
  mapfile -t mounts < <(awk -v s="$S" '{ gsub(/\\040/, " ", $5); if (index($5, s "/") == 1) print $5 }' /proc/self/mountinfo | sort -r -u)
  [ ${#mounts[@]} -gt 0 ] || break
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
done
left=$(awk -v s="$S" 'index($5, s "/") == 1' /proc/self/mountinfo | wc -l)
[ "$left" = 0 ] && log "no mounts left under $S" || log "WARNING: $left mount(s) left under $S"

# 5. Network: pod veths go with their netns; the bridge and routes are ours.
ip link del "$BRIDGE" 2>/dev/null && log "removed bridge $BRIDGE" || true
ip route del blackhole 198.18.0.0/15 2>/dev/null || true
ip route del blackhole 198.19.128.0/24 2>/dev/null || true
rm -rf "$S/cni/ipam"

# 6. The kubelet's cgroups (kubepods, and the QoS ones inside), leaves first.
for ctl in /sys/fs/cgroup/*/; do
  [ -d "$ctl/kubepods" ] || continue
  find "$ctl/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done
left=0
for ctl in /sys/fs/cgroup/*/kubepods; do [ -d "$ctl" ] && left=$((left + 1)); done
[ "$left" = 0 ] && log "kubelet cgroups removed" || log "WARNING: $left kubepods cgroup(s) left"

# 7. The kernel tunables the kubelet changed, back to the machine's values.
if [ -s "$S/sysctl.orig" ]; then
  while IFS== read -r k v; do sysctl -qw "$k=$v" || true; done <"$S/sysctl.orig"
  rm -f "$S/sysctl.orig"
  log "restored kernel tunables"
fi
# 8. The kubelet's symlinks in /var/log/containers that point into our state dir.
for l in /var/log/containers/*.log; do
  [ -L "$l" ] && case $(readlink "$l") in "$S"/*) rm -f "$l" ;; esac
done

# 9. The kubelet's device-plugin dir lives outside the state dir (a constant in the kubelet).
dp=/var/lib/kubelet/device-plugins
rm -f "$dp/kubelet.sock" "$dp/kubelet_internal_checkpoint" "$dp/DEPRECATION"
if [ -e "$S/made-pod-resources-link" ]; then
  [ -L /var/lib/kubelet/pod-resources ] && rm -f /var/lib/kubelet/pod-resources
  rm -f "$S/made-pod-resources-link"
fi
if [ -e "$S/made-var-lib-kubelet" ]; then
  rmdir "$dp" /var/lib/kubelet 2>/dev/null && log "removed /var/lib/kubelet (up.sh made it)" || true
  rm -f "$S/made-var-lib-kubelet"
fi

leftover=0
for f in "$S"/pids/*.pid; do [ -e "$f" ] && leftover=1; done
if [ $purge = 1 ]; then
  rm -rf "$S"
  log "deleted $S"
fi
[ $leftover = 0 ] || { echo "down.sh: some pid files were left in $S/pids" >&2; exit 1; }
log "cluster down"
