#!/usr/bin/env bash
# Build (or verify) the cached guest environment for the real-driver tests:
#   - a Debian trixie root holding QEMU >= 10.1 (trixie-backports) with `vfio-user-pci`,
#   - guest tools from trixie main (ethtool, iperf3; copied into initramfs images with their
#     shared libraries by tests/src/initramfs.rs),
#   - the trixie guest kernel (vmlinuz) and the decompressed modules the tests insmod,
#   - libvirt from trixie main (libvirtd, its QEMU driver, virsh): the KubeVirt test defines and
#     starts the domain the hook produced, inside this root (chroot in a private mount namespace).
# The host stays bookworm: nothing from trixie is installed on it; QEMU runs through the
# root's own dynamic loader (see shared/design/guest-tests.md §1).
#
# Idempotent and safe to run concurrently (flock). Prints the cache directory on stdout's last line.
set -euo pipefail

RECIPE_VERSION=2
SUITE=trixie
MIRROR=${EMU_SRIOV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${EMU_SRIOV_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emu-sriov/guest}
# Installed from trixie main into the root, never onto the host; the guests run them.
GUEST_TOOLS=(ethtool iperf3)
# libvirt for the KubeVirt hook's libvirt-level test (tests/tests/kubevirt_libvirt.rs): the
# monolithic libvirtd, its QEMU driver and virsh. No libvirt-daemon-system: no systemd units,
# users or default networks; the test writes its own libvirtd.conf and qemu.conf.
LIBVIRT_PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
KEY=$(printf '%s|%s|%s|qemu-system-x86|%s|linux-image-amd64|%s' "$RECIPE_VERSION" "$SUITE" "$MIRROR" "${GUEST_TOOLS[*]}" "${LIBVIRT_PKGS[*]}" | sha256sum | cut -c1-12)
ROOT="$CACHE/root-$KEY"
KDIR="$CACHE/kernel-$KEY"
APT_OPTS=(-o Acquire::Retries=5 -o Acquire::http::Timeout=30)
# Modules the guests load, in dependency order (verified order, guest-tests.md §2).
MODULES=(
  drivers/dca/dca
  drivers/i2c/algos/i2c-algo-bit
  drivers/net/ethernet/intel/igb/igb
  drivers/net/ethernet/intel/igbvf/igbvf
  drivers/net/ethernet/intel/libeth/libeth
  drivers/net/ethernet/intel/libie/libie
  drivers/net/ethernet/intel/iavf/iavf
  net/llc/llc
  net/802/stp
  net/802/garp
  net/802/mrp
  net/8021q/8021q
)

log() { printf 'prepare: %s\n' "$*" >&2; }

qemu_cmd() {
  echo "$ROOT/usr/lib64/ld-linux-x86-64.so.2" --library-path "$ROOT/usr/lib/x86_64-linux-gnu" \
    "$ROOT/usr/bin/qemu-system-x86_64" -L "$ROOT/usr/share/qemu" -L "$ROOT/usr/share/seabios"
}

# Runs a root binary through the root's loader (no chroot): root_run usr/bin/iperf3 --version
root_run() {
  local bin=$1; shift
  "$ROOT/usr/lib64/ld-linux-x86-64.so.2" --library-path "$ROOT/usr/lib/x86_64-linux-gnu" "$ROOT/$bin" "$@"
}

# A guest tool's path inside a root (ethtool is in usr/sbin, iperf3 in usr/bin).
tool_path() { # root tool
  local d
  for d in usr/bin usr/sbin; do
    [ -f "$1/$d/$2" ] && { echo "$d/$2"; return 0; }
  done
  echo "usr/bin/$2"
}

root_ok() {
  [ -f "$ROOT/.emu-stamp" ] || return 1
  local t
  for t in "${GUEST_TOOLS[@]}"; do
    root_run "$(tool_path "$ROOT" "$t")" --version >/dev/null 2>&1 || return 1
  done
  root_run usr/sbin/libvirtd --version >/dev/null 2>&1 || return 1
  root_run usr/bin/virsh --version >/dev/null 2>&1 || return 1
  # shellcheck disable=SC2046
  $(qemu_cmd) --version >/dev/null 2>&1 || return 1
  # shellcheck disable=SC2046
  $(qemu_cmd) -device help 2>/dev/null | grep -q '"vfio-user-pci"'
}

kernel_ok() { [ -f "$KDIR/.emu-stamp" ] && [ -f "$KDIR/vmlinuz" ]; }

host_packages() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v cpio >/dev/null || missing+=(cpio)
  command -v xz >/dev/null || missing+=(xz-utils)
  command -v gzip >/dev/null || missing+=(gzip)
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    [ "$(id -u)" = 0 ] || { log "need root to apt-get install ${missing[*]}"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}" >&2 \
      || { apt-get "${APT_OPTS[@]}" update >&2 && DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}" >&2; }
  fi
}

TMP=""
cleanup() {
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
    mountpoint -q "$TMP/proc" && { umount "$TMP/proc" 2>/dev/null || umount -l "$TMP/proc"; }
    if [ -z "$(findmnt -R -n -o TARGET "$TMP" 2>/dev/null | tail -n +2)" ]; then
      rm -rf --one-file-system "$TMP"
    fi
  fi
}
trap cleanup EXIT INT TERM

build_root() {
  local try
  for try in 1 2 3; do
    TMP="$ROOT.tmp.$$"
    cleanup; mkdir -p "$TMP"
    log "debootstrap $SUITE (try $try; ~30 s)"
    if debootstrap --variant=minbase "$SUITE" "$TMP" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
      break
    fi
    log "debootstrap failed; see $CACHE/debootstrap.log"
    [ $try = 3 ] && exit 1
  done
  printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$MIRROR" "$SUITE" >"$TMP/etc/apt/sources.list.d/backports.sources"
  mount -t proc proc "$TMP/proc"
  for try in 1 2 3; do
    log "installing qemu-system-x86 from $SUITE-backports (try $try)"
    if chroot "$TMP" apt-get "${APT_OPTS[@]}" update >&2 &&
       chroot "$TMP" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
         -t "$SUITE-backports" --no-install-recommends qemu-system-x86 >&2; then
      break
    fi
    [ $try = 3 ] && { log "QEMU install failed"; exit 1; }
  done
  for try in 1 2 3; do
    log "installing ${GUEST_TOOLS[*]} from $SUITE (try $try)"
    if chroot "$TMP" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
         --no-install-recommends "${GUEST_TOOLS[@]}" >&2; then
      break
    fi
    [ $try = 3 ] && { log "${GUEST_TOOLS[*]} install failed"; exit 1; }
    chroot "$TMP" apt-get "${APT_OPTS[@]}" update >&2 || true
  done
  for try in 1 2 3; do
    log "installing ${LIBVIRT_PKGS[*]} from $SUITE (try $try)"
    if chroot "$TMP" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
         --no-install-recommends "${LIBVIRT_PKGS[@]}" >&2; then
      break
    fi
    [ $try = 3 ] && { log "${LIBVIRT_PKGS[*]} install failed"; exit 1; }
    chroot "$TMP" apt-get "${APT_OPTS[@]}" update >&2 || true
  done
  # The kernel package comes from the same root's apt, downloaded, never installed.
  local kpkg
  kpkg=$(chroot "$TMP" apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$kpkg" ] || { log "cannot resolve linux-image-amd64"; exit 1; }
  log "downloading $kpkg"
  mkdir -p "$TMP/tmp/kdeb"
  for try in 1 2 3; do
    chroot "$TMP" sh -c "cd /tmp/kdeb && apt-get ${APT_OPTS[*]} download $kpkg" >&2 && break
    [ $try = 3 ] && { log "kernel download failed"; exit 1; }
    chroot "$TMP" apt-get "${APT_OPTS[@]}" update >&2 || true
  done
  mv "$TMP"/tmp/kdeb/*.deb "$CACHE/kernel.deb.tmp"
  umount "$TMP/proc"
  chroot "$TMP" apt-get clean
  # shellcheck disable=SC2046
  {
    "$TMP/usr/lib64/ld-linux-x86-64.so.2" --library-path "$TMP/usr/lib/x86_64-linux-gnu" "$TMP/usr/bin/qemu-system-x86_64" --version | sed -n 1p
    "$TMP/usr/lib64/ld-linux-x86-64.so.2" --library-path "$TMP/usr/lib/x86_64-linux-gnu" "$TMP/usr/sbin/libvirtd" --version | sed -n 1p
    for t in "${GUEST_TOOLS[@]}"; do
      "$TMP/usr/lib64/ld-linux-x86-64.so.2" --library-path "$TMP/usr/lib/x86_64-linux-gnu" "$TMP/$(tool_path "$TMP" "$t")" --version 2>&1 | sed -n 1p
    done
  } >"$TMP/.emu-stamp"
  rm -rf --one-file-system "$ROOT"
  mv "$TMP" "$ROOT"; TMP=""
}

build_kernel() {
  local deb="$CACHE/kernel.deb.tmp"
  if [ ! -f "$deb" ]; then
    # Root is cached but the kernel is not: download through the root's apt (needs /proc).
    TMP=""
    mount -t proc proc "$ROOT/proc"
    local kpkg
    kpkg=$(chroot "$ROOT" apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    mkdir -p "$ROOT/tmp/kdeb"
    chroot "$ROOT" sh -c "cd /tmp/kdeb && apt-get ${APT_OPTS[*]} download $kpkg" >&2 || { umount "$ROOT/proc"; exit 1; }
    umount "$ROOT/proc"
    mv "$ROOT"/tmp/kdeb/*.deb "$deb"
  fi
  local x="$KDIR.tmp.$$"
  rm -rf "$x"; mkdir -p "$x/extract" "$x/modules"
  log "extracting kernel"
  dpkg-deb -x "$deb" "$x/extract"
  local kver
  kver=$(ls "$x/extract/usr/lib/modules" | head -1)
  cp "$x"/extract/boot/vmlinuz-* "$x/vmlinuz"
  local m
  for m in "${MODULES[@]}"; do
    xz -dc "$x/extract/usr/lib/modules/$kver/kernel/$m.ko.xz" >"$x/modules/$(basename "$m").ko"
  done
  printf '%s\n' "${MODULES[@]##*/}" >"$x/modules/ORDER"
  rm -rf "$x/extract" "$deb"
  echo "$kver" >"$x/.emu-stamp"
  rm -rf "$KDIR"; mv "$x" "$KDIR"
}

main() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  if root_ok && kernel_ok; then
    log "cached: $ROOT ($(tr '\n' ';' <"$ROOT/.emu-stamp")), kernel $(cat "$KDIR/.emu-stamp")"
  else
    [ "$(id -u)" = 0 ] || { log "building the guest root needs root (debootstrap, chroot)"; exit 1; }
    host_packages
    root_ok || build_root
    kernel_ok || build_kernel
    root_ok || { log "QEMU in $ROOT lacks vfio-user-pci"; exit 1; }
  fi
  # Machine-readable result for the test harness.
  printf 'ROOT=%s\nKERNEL_DIR=%s\n' "$ROOT" "$KDIR" >"$CACHE/current.env"
  echo "$CACHE/current.env"
}
main "$@"
