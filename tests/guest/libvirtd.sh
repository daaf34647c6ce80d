#!/usr/bin/env bash
# Runs libvirtd from the cached trixie root (tests/guest/prepare.sh) for one test run, in the
# foreground, inside a PRIVATE mount namespace: every mount below dies with this process and is
# never seen by the host, and nothing is written into the cached root (its /etc/libvirt, /var,
# /run, /tmp and /dev are tmpfs or test-dir binds in this namespace only).
#
#   unshare --mount --propagation private -- tests/guest/libvirtd.sh ROOT RUN_DIR [HOST_DIR=CONTAINER_DIR]...
#
# RUN_DIR (the test's own mktemp -d under /tmp) is bind-mounted into the root at the same path,
# so the paths in the domain XML (agent sockets, kernel, initrd, serial sockets) mean the same
# inside and outside. libvirt's /run is RUN_DIR/run: the host reaches libvirtd's socket at
# RUN_DIR/run/libvirt/libvirt-sock and QEMU's pid files under RUN_DIR/run/libvirt/qemu/.
# Each HOST_DIR=CONTAINER_DIR is bind-mounted at CONTAINER_DIR in the root, like the device
# plugin's Allocate mounts in virt-launcher's compute container (/var/run/emu-sriov/<id>).
# QEMU runs as uid/gid 107 (KubeVirt's qemu user), like in virt-launcher.
# virsh runs the same way: nsenter --mount --target <this pid> chroot ROOT virsh ...
set -euo pipefail
ROOT=$1
RUN=$2
shift 2
QEMU_USER=${EMU_SRIOV_LIBVIRT_QEMU_USER:-+107}
QEMU_GROUP=${EMU_SRIOV_LIBVIRT_QEMU_GROUP:-+107}

case "$RUN" in /tmp/*) ;; *) echo "libvirtd.sh: RUN_DIR must be under /tmp, got $RUN" >&2; exit 2 ;; esac
# Refuse to run where mounts would leak to the host (this must be a private mount namespace).
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
  echo "libvirtd.sh: not in a private mount namespace; start it with unshare --mount --propagation private" >&2
  exit 2
fi

mount -t proc proc "$ROOT/proc"
mount -t sysfs -o ro sysfs "$ROOT/sys"
mount -t tmpfs -o mode=755,size=8m tmpfs "$ROOT/dev"
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  # shellcheck disable=SC2086
  mknod -m 666 "$ROOT/dev/${n%% *}" c $(echo "$n" | cut -d' ' -f2-)
done
mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$ROOT/dev/pts"
ln -s pts/ptmx "$ROOT/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
mkdir -p "$ROOT$RUN" "$RUN/run"
mount --bind "$RUN" "$ROOT$RUN"
mount --bind "$RUN/run" "$ROOT/run"
for m in "$@"; do
  host=${m%%=*} ctr=${m#*=}
  case "$ctr" in /var/run/*|/run/*) ;; *) echo "libvirtd.sh: container dir must be under /run, got $ctr" >&2; exit 2 ;; esac
  mkdir -p "$ROOT/run/${ctr#*/run/}"
  mount --bind "$host" "$ROOT/run/${ctr#*/run/}"
done
for d in var/lib/libvirt var/log var/cache/libvirt; do
  mkdir -p "$ROOT/$d" 2>/dev/null || true
  mount -t tmpfs -o mode=755 tmpfs "$ROOT/$d"
done
mkdir -p "$ROOT/var/log/libvirt/qemu" "$ROOT/var/lib/libvirt/qemu" "$ROOT/var/cache/libvirt/qemu"
mount -t tmpfs -o mode=755 tmpfs "$ROOT/etc/libvirt"
cat >"$ROOT/etc/libvirt/libvirtd.conf" <<CONF
unix_sock_dir = "/run/libvirt"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:stderr"
CONF
cat >"$ROOT/etc/libvirt/qemu.conf" <<CONF
user = "$QEMU_USER"
group = "$QEMU_GROUP"
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
remember_owner = 0
CONF
echo "libvirtd.sh: starting libvirtd (pid $$) in $ROOT, run dir $RUN" >&2
exec chroot "$ROOT" /usr/sbin/libvirtd
