#!/bin/busybox sh
# Guest /init for the real-driver end-to-end tests (shared/design/guest-tests.md §3, §7).
#
# One image serves every guest; the role comes from the kernel command line:
#   emu.role=a|b  emu.ip=198.18.0.1/24  emu.peer=198.18.0.2  emu.mac=02:..  (optional)
#   emu.driver=igbvf|igb|iavf  emu.bdf=0000:00:05.0  emu.devid=0x10ca (optional)
#   emu.timeout=SECONDS (guest-wide deadline, counted from the start of /init)
#
# Output contract (serial console, parsed by tests/src/console.rs; matched unanchored):
#   EMU-CHECK <name> PASS|FAIL <detail>
#   EMU-SYNC <name> t=<uptime>      then waits for one line on /dev/console: a host barrier; the
#                                   host writes "go" to every guest once all of them wait. In
#                                   order: ping jumbo downup1 downup1-done downup2 downup2-done
#                                   checks (all checks done) down (interface down, no more frames)
#   EMU-STAT tx_packets=N tx_bytes=N rx_packets=N rx_bytes=N
#   EMU-DONE pass=N fail=M t=<uptime>
# then `poweroff -f`.
#
# Addresses come only from 198.18.0.0/15 and nothing is ever routed; every loop is bounded.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

# SeaBIOS leaves escape codes on the first console line.
echo

up() { cut -d' ' -f1 /proc/uptime; }
now() { cut -d. -f1 /proc/uptime; }

arg() {
  for w in $(cat /proc/cmdline); do
    case "$w" in "emu.$1="*) echo "${w#emu.$1=}"; return ;; esac
  done
}

ROLE=$(arg role)
IP=$(arg ip)
PEER=$(arg peer)
MAC=$(arg mac)
DRIVER=$(arg driver)
BDF=$(arg bdf)
DEVID=$(arg devid)
TIMEOUT=$(arg timeout)
: "${DRIVER:=igbvf}" "${BDF:=0000:00:05.0}" "${TIMEOUT:=180}"
START=$(now)
END=$((START + TIMEOUT))
echo "EMU-BOOT role=$ROLE driver=$DRIVER bdf=$BDF ip=$IP peer=$PEER t=$(up)"

PASS=0
FAIL=0
check() { # name PASS|FAIL detail...
  n=$1 r=$2
  shift 2
  echo "EMU-CHECK $n $r $* (t=$(up))"
  if [ "$r" = PASS ]; then PASS=$((PASS + 1)); else FAIL=$((FAIL + 1)); fi
}

# Deadline helper: min(now + $1, END).
until_() {
  d=$(($(now) + $1))
  [ $d -gt $END ] && d=$END
  echo $d
}

finish() {
  echo "EMU-DONE pass=$PASS fail=$FAIL t=$(up)"
  sync
  poweroff -f
  sleep 5
  exit 0
}

# Barrier: announce, then wait for one line from the host on the console.
barrier() {
  echo "EMU-SYNC $1 t=$(up)"
  left=$((END - $(now)))
  [ $left -lt 1 ] && left=1
  if read -r -t "$left" _line </dev/console; then
    echo "EMU-SYNC-GO $1 t=$(up)"
  else
    check "barrier-$1" FAIL "no go from the host within ${left}s"
  fi
}

# --- modules ------------------------------------------------------------------------------
case "$DRIVER" in
  igbvf) NEED="igbvf" ; : "${DEVID:=0x10ca}" ;;
  igb) NEED="dca i2c-algo-bit igb" ; : "${DEVID:=0x10c9}" ;;
  iavf) NEED="libeth libie iavf" ; : "${DEVID:=0x1889}" ;;
  *) NEED="" ; check driver FAIL "unknown emu.driver=$DRIVER"; finish ;;
esac
for m in $(cat /lib/modules/ORDER); do
  case " $NEED " in
    *" $m "*) insmod "/lib/modules/$m.ko" || echo "EMU-INFO insmod $m failed" ;;
  esac
done

D=/sys/bus/pci/devices/$BDF

# --- enumeration --------------------------------------------------------------------------
if [ -d "$D" ]; then
  v=$(cat "$D/vendor") d=$(cat "$D/device") c=$(cat "$D/class")
  if [ "$v" = 0x8086 ] && [ "$d" = "$DEVID" ] && [ "$c" = 0x020000 ]; then
    check enumeration PASS "vendor=$v device=$d class=$c"
  else
    check enumeration FAIL "vendor=$v device=$d class=$c (want 0x8086 $DEVID 0x020000)"
  fi
else
  check enumeration FAIL "no $D; devices: $(ls /sys/bus/pci/devices | tr '\n' ' ')"
fi

# --- driver bound and netdev present ------------------------------------------------------
IF=""
dl=$(until_ 15)
while [ "$(now)" -lt "$dl" ]; do
  IF=$(ls "$D/net" 2>/dev/null | head -n 1)
  [ -n "$IF" ] && break
  sleep 1
done
drv=$(readlink "$D/driver" 2>/dev/null)
case "$drv" in
  */"$DRIVER") check driver PASS "${drv##*/} if=$IF" ;;
  *) check driver FAIL "driver link '$drv' if='$IF'" ;;
esac
if [ -z "$IF" ]; then
  check netdev FAIL "no netdev under $D/net"
  dmesg | tail -n 30
  for b in ping jumbo downup1 downup1-done downup2 downup2-done checks down; do barrier $b; done
  echo "EMU-STAT tx_packets=0 tx_bytes=0 rx_packets=0 rx_bytes=0"
  finish
fi

# --- MAC from the PF ----------------------------------------------------------------------
addr=$(cat "/sys/class/net/$IF/address")
if [ -n "$MAC" ]; then
  if [ "$addr" = "$MAC" ]; then check mac PASS "$addr"; else check mac FAIL "have $addr want $MAC"; fi
fi

# Only ARP + ICMP should move, so that counters are deterministic.
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
[ -e "/proc/sys/net/ipv6/conf/$IF/disable_ipv6" ] && echo 1 >"/proc/sys/net/ipv6/conf/$IF/disable_ipv6"

# --- link ---------------------------------------------------------------------------------
wait_link() { # seconds -> 0 when operstate up and carrier 1
  dl=$(until_ "$1")
  while [ "$(now)" -lt "$dl" ]; do
    [ "$(cat "/sys/class/net/$IF/operstate" 2>/dev/null)" = up ] &&
      [ "$(cat "/sys/class/net/$IF/carrier" 2>/dev/null)" = 1 ] && return 0
    sleep 1
  done
  return 1
}
ip link set "$IF" up
t0=$(now)
if wait_link 30; then
  check link PASS "up carrier=1 after $(($(now) - t0))s"
else
  check link FAIL "operstate=$(cat /sys/class/net/$IF/operstate) carrier=$(cat /sys/class/net/$IF/carrier 2>/dev/null)"
fi

# --- ping ---------------------------------------------------------------------------------
ip addr add "$IP" dev "$IF"

wait_peer() { # seconds [ping size] -> 0 once one echo came back
  dl=$(until_ "$1")
  while [ "$(now)" -lt "$dl" ]; do
    if [ -n "$2" ]; then
      ping -s "$2" -c 1 -W 2 "$PEER" >/dev/null 2>&1 && return 0
    else
      ping -c 1 -W 1 "$PEER" >/dev/null 2>&1 && return 0
    fi
    sleep 1
  done
  return 1
}

msix_count() { # sum of the device's MSI-X interrupt counts (all CPUs)
  grep -E "PCI-MSIX-$BDF|$IF-(rx|tx|TxRx)-" /proc/interrupts | awk '
    { for (i = 2; i <= NF; i++) { if ($i ~ /^[0-9]+$/) s += $i; else break } }
    END { print s + 0 }'
}

ping_ok() { # args... -> 0 on 0% loss; output kept in /tmp/ping.out
  ping "$@" "$PEER" >/tmp/ping.out 2>&1
  grep -q ' 0% packet loss' /tmp/ping.out
}

irq0=$(msix_count)
t0=$(now)
if wait_peer 60; then
  if ping_ok -c 3 -W 2; then
    check ping PASS "$PEER 3/3 (peer after $(($(now) - t0))s)"
  else
    check ping FAIL "$(grep -E 'packets|loss' /tmp/ping.out | tr '\n' ' ')"
  fi
else
  check ping FAIL "peer $PEER unreachable for 60s"
fi
irq1=$(msix_count)

# Every state change below (MTU, down/up) resets the peer's view of this link, so both guests
# finish each phase before either starts the next (host-driven barriers).
barrier ping

# --- MSI-X --------------------------------------------------------------------------------
nvec=$(ls "$D/msi_irqs" 2>/dev/null | wc -l)
if [ "$irq1" -gt "$irq0" ]; then
  check msix PASS "vectors=$nvec irqs $irq0 -> $irq1"
else
  check msix FAIL "vectors=$nvec irqs $irq0 -> $irq1; $(grep -E "$BDF|$IF" /proc/interrupts | tr -s ' ' | tr '\n' ';')"
fi

# --- jumbo --------------------------------------------------------------------------------
if ip link set "$IF" mtu 9000; then
  wait_link 30 >/dev/null
  t0=$(now)
  if wait_peer 60 8000; then
    if ping_ok -s 8000 -c 3 -W 3; then
      check jumbo PASS "mtu=$(cat /sys/class/net/$IF/mtu) 8000-byte ping 3/3 (peer after $(($(now) - t0))s)"
    else
      check jumbo FAIL "$(grep -E 'packets|loss' /tmp/ping.out | tr '\n' ' ')"
    fi
  else
    check jumbo FAIL "no 8000-byte echo from $PEER within 60s"
  fi
else
  check jumbo FAIL "ip link set mtu 9000 refused"
fi

barrier jumbo

# --- down/up ------------------------------------------------------------------------------
ok=0
detail=""
for cycle in 1 2; do
  ip link set "$IF" down
  ip link set "$IF" up
  wait_link 30 || detail="$detail cycle$cycle:no-carrier"
  barrier "downup$cycle"
  if wait_peer 30 && ping_ok -c 3 -W 2; then
    ok=$((ok + 1))
    detail="$detail cycle$cycle:ok"
  else
    detail="$detail cycle$cycle:no-ping"
  fi
  barrier "downup$cycle-done"
done
if [ $ok = 2 ]; then check downup PASS "${detail# }"; else check downup FAIL "${detail# }"; fi

# --- dmesg --------------------------------------------------------------------------------
bad=$(dmesg | grep -E "^(\[[ 0-9.]*\] )?$DRIVER |$IF" | grep -iE 'error|fail|timeout|PF still in reset')
if [ -z "$bad" ]; then
  check dmesg PASS "no $DRIVER errors"
else
  echo "$bad" | sed 's/^/EMU-DMESG /'
  check dmesg FAIL "$(echo "$bad" | wc -l) offending line(s)"
fi

# --- barriers, statistics ----------------------------------------------------------------
barrier checks
sleep 1 # let TX completions be cleaned before the interface goes down
ip link set "$IF" down
barrier down
S=/sys/class/net/$IF/statistics
echo "EMU-STAT tx_packets=$(cat $S/tx_packets) tx_bytes=$(cat $S/tx_bytes) rx_packets=$(cat $S/rx_packets) rx_bytes=$(cat $S/rx_bytes)"
finish
