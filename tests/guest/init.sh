#!/bin/busybox sh
# Guest /init for the real-driver end-to-end tests (shared/design/guest-tests.md §3, §7).
#
# One image serves every guest; the role comes from the kernel command line:
#   emu.role=a|b  emu.ip=198.18.0.1/24  emu.peer=198.18.0.2  emu.mac=02:..  (optional)
#   emu.driver=igbvf|igb|iavf  emu.bdf=0000:00:05.0|auto  emu.devid=0x10ca (optional)
#   emu.timeout=SECONDS (guest-wide deadline, counted from the start of /init)
#   emu.mode=full|basic|throughput (default full)
#   emu.queues=N      (iavf: the queue pairs the VF must expose; `channels` check)
#   emu.vlan=1        (full mode: run the `vlan` check; needs the 8021q modules in the image)
#   emu.hostip=IP     (`host` check: ping the host end of the agent's uplink TAP, which the test
#                     put in a network namespace it made; right after `ping`, no barrier)
#   emu.iperf=client|server  (this guest's iperf3 role: `rss` in full mode, throughput mode)
#   emu.scen=NAME emu.scens=A,B emu.rounds=N  (throughput mode: this pair's scenario, the run
#                     order of all scenarios, rounds; pairs take turns, one at a time)
#
# Barriers (every guest of a run walks the same list, whatever its driver; checks that do not
# apply to a guest are skipped but their barriers are still walked):
#   full:       ping rss rss-done vlan vlan-done jumbo downup1 downup1-done downup2 downup2-done
#               checks down
#   basic:      ping checks down
#   throughput: ping, then for each round and scenario iperf-<r>-<scen> iperf-<r>-<scen>-done,
#               then checks down
#
# Output contract (serial console, parsed by tests/src/console.rs; matched unanchored):
#   EMU-CHECK <name> PASS|FAIL <detail>
#   EMU-SYNC <name> t=<uptime>      then waits for one line on /dev/console: a host barrier; the
#                                   host writes "go" to every guest once all of them wait (list
#                                   above; `checks`: all checks done; `down`: interface down, no
#                                   more frames)
#   EMU-IRQ <check> <vector>:+<delta> ...   per-queue interrupt deltas (rss)
#   EMU-IPERF scen=<s> round=<r> rc=<rc> <iperf3 -J output on one line>   (throughput client)
#   EMU-STAT tx_packets=N tx_bytes=N rx_packets=N rx_bytes=N [vlan_tx_packets=N vlan_rx_packets=N]
#   EMU-DONE pass=N fail=M t=<uptime>
# then `poweroff -f`.
#
# Addresses come only from 198.18.0.0/15 and nothing is ever routed; every loop is bounded.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# Tools copied from the trixie root (tests/src/initramfs.rs) with their libraries and loader.
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu
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
MODE=$(arg mode)
QUEUES=$(arg queues)
VLAN=$(arg vlan)
IPERF=$(arg iperf)
SCEN=$(arg scen)
SCENS=$(arg scens)
ROUNDS=$(arg rounds)
: "${DRIVER:=igbvf}" "${BDF:=0000:00:05.0}" "${TIMEOUT:=180}" "${MODE:=full}" "${ROUNDS:=1}"
MYIP=${IP%/*}
START=$(now)
END=$((START + TIMEOUT))
echo "EMU-BOOT role=$ROLE driver=$DRIVER mode=$MODE bdf=$BDF ip=$IP peer=$PEER t=$(up)"

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

# Every barrier of this mode, in order (used to stay in lock-step when checks are skipped).
all_barriers() {
  case "$MODE" in
    basic) echo "ping checks down" ;;
    throughput)
      echo ping
      r=1
      while [ $r -le "$ROUNDS" ]; do
        for s in $(echo "$SCENS" | tr , ' '); do echo "iperf-$r-$s iperf-$r-$s-done"; done
        r=$((r + 1))
      done
      echo "checks down"
      ;;
    *) echo "ping rss rss-done vlan vlan-done jumbo downup1 downup1-done downup2 downup2-done checks down" ;;
  esac
}

# --- modules ------------------------------------------------------------------------------
case "$DRIVER" in
  igbvf) NEED="igbvf" ; : "${DEVID:=0x10ca}" ;;
  igb) NEED="dca i2c-algo-bit igb" ; : "${DEVID:=0x10c9}" ;;
  iavf) NEED="libeth libie iavf" ; : "${DEVID:=0x1889}" ;;
  *) NEED="" ; check driver FAIL "unknown emu.driver=$DRIVER"; finish ;;
esac
[ "$VLAN" = 1 ] && NEED="$NEED llc stp garp mrp 8021q"
for m in $(cat /lib/modules/ORDER); do
  case " $NEED " in
    *" $m "*) insmod "/lib/modules/$m.ko" || echo "EMU-INFO insmod $m failed" ;;
  esac
done

# emu.bdf=auto: the device is wherever the VMM put it (libvirt/KubeVirt assign slots): take the
# first Intel device with this driver's device id.
if [ "$BDF" = auto ]; then
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = "$DEVID" ]; then
      BDF=${d##*/}; break
    fi
  done
  echo "EMU-INFO bdf=auto resolved to $BDF"
fi
D=/sys/bus/pci/devices/$BDF

# --- tools from the trixie root -----------------------------------------------------------
if [ -x /usr/bin/ethtool ] || [ -x /usr/bin/iperf3 ]; then
  e=$(ethtool --version 2>&1 | head -n 1)
  erc=$?
  i=$(iperf3 --version 2>&1 | head -n 1)
  ethtool --version >/dev/null 2>&1 && iperf3 --version >/dev/null 2>&1 && irc=0 || irc=1
  if [ "$irc" = 0 ] && [ "$erc" = 0 ]; then
    check tools PASS "$e; $i"
  else
    check tools FAIL "ethtool: '$e' iperf3: '$i'"
  fi
fi

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
  for b in $(all_barriers); do barrier "$b"; done
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

# --- host: the host end of the agent's uplink TAP (a test-made netns), emu.hostip= ----------
HOSTIP=$(arg hostip)
if [ -n "$HOSTIP" ]; then
  t0=$(now)
  dl=$(until_ 30)
  while [ "$(now)" -lt "$dl" ]; do
    ping -c 1 -W 1 -I "$MYIP" "$HOSTIP" >/dev/null 2>&1 && break
    sleep 1
  done
  if ping -c 3 -W 2 -I "$MYIP" "$HOSTIP" >/tmp/ping.out 2>&1 && grep -q ' 0% packet loss' /tmp/ping.out; then
    check host PASS "$MYIP -> $HOSTIP 3/3 (host after $(($(now) - t0))s)"
  else
    check host FAIL "$MYIP -> $HOSTIP: $(grep -E 'packets|loss|bad' /tmp/ping.out | tr '\n' ' ')"
  fi
fi

# Every state change below (MTU, down/up) resets the peer's view of this link, so both guests
# finish each phase before either starts the next (host-driven barriers).
barrier ping

iperf_server_start() { # background, one test, bounded
  timeout 40 iperf3 -s -1 -B "$MYIP" >/tmp/iperf-s.out 2>&1 &
  SPID=$!
  sleep 1
}
iperf_server_wait() { # -> iperf3 -s exit status (124 or so when it had to be stopped)
  dl=$(until_ 35)
  while kill -0 "$SPID" 2>/dev/null && [ "$(now)" -lt "$dl" ]; do sleep 1; done
  kill "$SPID" 2>/dev/null
  wait "$SPID"
}

# --- throughput mode: link + ping above, then bounded iperf3 rounds, pairs taking turns --------
if [ "$MODE" = throughput ]; then
  ok=0 bad=0 detail=""
  r=1
  while [ $r -le "$ROUNDS" ]; do
    for s in $(echo "$SCENS" | tr , ' '); do
      mine=0
      [ "$s" = "$SCEN" ] && mine=1
      [ $mine = 1 ] && [ "$IPERF" = server ] && iperf_server_start
      barrier "iperf-$r-$s"
      if [ $mine = 1 ] && [ "$IPERF" = client ]; then
        timeout 30 iperf3 -c "$PEER" -t 5 -J >/tmp/iperf.json 2>/tmp/iperf.err
        rc=$?
        echo "EMU-IPERF scen=$s round=$r rc=$rc $(tr -d '\n\t' </tmp/iperf.json | tr -s ' ')"
        [ -s /tmp/iperf.err ] && sed 's/^/EMU-INFO iperf3: /' /tmp/iperf.err
      elif [ $mine = 1 ] && [ "$IPERF" = server ]; then
        iperf_server_wait
        rc=$?
      fi
      if [ $mine = 1 ]; then
        if [ $rc = 0 ]; then ok=$((ok + 1)); else bad=$((bad + 1)); detail="$detail r$r:rc=$rc"; fi
      fi
      barrier "iperf-$r-$s-done"
    done
    r=$((r + 1))
  done
  if [ $bad = 0 ] && [ $ok -gt 0 ]; then
    check iperf PASS "$IPERF $ok run(s) ok"
  else
    check iperf FAIL "$IPERF ok=$ok failed=$bad$detail"
  fi
  barrier checks
  sleep 1
  ip link set "$IF" down
  barrier down
  S=/sys/class/net/$IF/statistics
  echo "EMU-STAT tx_packets=$(cat $S/tx_packets) tx_bytes=$(cat $S/tx_bytes) rx_packets=$(cat $S/rx_packets) rx_bytes=$(cat $S/rx_bytes)"
  finish
fi

# --- MSI-X --------------------------------------------------------------------------------
nvec=$(ls "$D/msi_irqs" 2>/dev/null | wc -l)
if [ "$irq1" -gt "$irq0" ]; then
  check msix PASS "vectors=$nvec irqs $irq0 -> $irq1"
else
  check msix FAIL "vectors=$nvec irqs $irq0 -> $irq1; $(grep -E "$BDF|$IF" /proc/interrupts | tr -s ' ' | tr '\n' ';')"
fi

# --- channels (iavf): the queue pairs the PF granted -----------------------------------------
if [ "$MODE" = full ] && [ "$DRIVER" = iavf ]; then
  out=$(ethtool -l "$IF" 2>&1)
  comb=$(echo "$out" | awk '/^Current hardware settings/ { c = 1 } c && /^Combined:/ { print $2 }')
  if [ -n "$QUEUES" ] && [ "$comb" = "$QUEUES" ]; then
    check channels PASS "combined=$comb"
  else
    check channels FAIL "combined='$comb' want '$QUEUES'; $(echo "$out" | tr '\n\t' '  ' | tr -s ' ')"
  fi
fi

# --- rss (iavf): several TCP streams land on more than one RX queue of the receiver ------------
queue_irqs() { # "<vector name> <count>" per queue vector (iavf-<IF>-TxRx-<n>)
  grep -E "$IF-TxRx-[0-9]+" /proc/interrupts | awk '
    { s = 0; for (i = 2; i <= NF; i++) { if ($i ~ /^[0-9]+$/) s += $i; else break }; print $NF, s }'
}
if [ "$MODE" = full ]; then
  RSS=0
  [ "$DRIVER" = iavf ] && [ -n "$IPERF" ] && RSS=1
  [ $RSS = 1 ] && queue_irqs >/tmp/q0
  [ $RSS = 1 ] && [ "$IPERF" = server ] && iperf_server_start
  barrier rss
  if [ $RSS = 1 ] && [ "$IPERF" = client ]; then
    timeout 30 iperf3 -c "$PEER" -P 4 -t 3 >/tmp/iperf.out 2>&1
    rc=$?
  elif [ $RSS = 1 ]; then
    iperf_server_wait
    rc=$?
  fi
  barrier rss-done
  if [ $RSS = 1 ]; then
    queue_irqs >/tmp/q1
    deltas=$(awk 'NR == FNR { a[$1] = $2; next }
      { d = $2 - a[$1]; printf "%s:+%d ", $1, d; if (d > 0) n++ } END { printf "rose=%d", n }' /tmp/q0 /tmp/q1)
    rose=${deltas##*rose=}
    echo "EMU-IRQ rss $deltas"
    sum=$(grep -E 'SUM.*(sender|receiver)' /tmp/iperf.out /tmp/iperf-s.out 2>/dev/null | tail -n 1 | tr -s ' ')
    if [ "$rc" != 0 ]; then
      check rss FAIL "iperf3 $IPERF rc=$rc: $(tail -n 3 /tmp/iperf.out /tmp/iperf-s.out 2>/dev/null | tr '\n' ' ')"
    elif [ "$IPERF" = server ] && [ "${rose:-0}" -lt 2 ]; then
      check rss FAIL "only $rose RX queue vector(s) rose: $deltas"
    else
      check rss PASS "$IPERF queues rose=$rose; $sum"
    fi
  fi
fi

# --- vlan: VLAN 100 on top of the VF, 198.18.100.x/24 -----------------------------------------
if [ "$MODE" = full ]; then
  VIF=$IF.100
  VIP=198.18.100.${MYIP##*.}
  VPEER=198.18.100.${PEER##*.}
  vok=0
  if [ "$VLAN" = 1 ]; then
    if ip link add link "$IF" name "$VIF" type vlan id 100 && ip addr add "$VIP/24" dev "$VIF" &&
      ip link set "$VIF" up; then
      vok=1
    else
      check vlan FAIL "cannot create $VIF"
    fi
  fi
  barrier vlan
  if [ $vok = 1 ]; then
    t0=$(now)
    dl=$(until_ 30)
    while [ "$(now)" -lt "$dl" ]; do
      ping -c 1 -W 1 "$VPEER" >/dev/null 2>&1 && break
      sleep 1
    done
    if ping -c 3 -W 2 "$VPEER" >/tmp/ping.out 2>&1 && grep -q ' 0% packet loss' /tmp/ping.out; then
      check vlan PASS "$VIF $VIP -> $VPEER 3/3 (peer after $(($(now) - t0))s)"
    else
      check vlan FAIL "$VIF $VIP -> $VPEER: $(grep -E 'packets|loss' /tmp/ping.out | tr '\n' ' ')"
    fi
  fi
  barrier vlan-done
  if [ $vok = 1 ]; then
    # Frames that carried the tag (the host's counter rule allows 4 bytes each: a tag inserted
    # or stripped by the device may be counted on one side only).
    VLAN_TX=$(cat "/sys/class/net/$VIF/statistics/tx_packets")
    VLAN_RX=$(cat "/sys/class/net/$VIF/statistics/rx_packets")
    ip link del "$VIF"
  fi
fi

# Basic mode (mixed-driver runs) stops here: link, ping, MSI-X, dmesg only.
if [ "$MODE" = full ]; then

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

fi # full mode

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
echo "EMU-STAT tx_packets=$(cat $S/tx_packets) tx_bytes=$(cat $S/tx_bytes) rx_packets=$(cat $S/rx_packets) rx_bytes=$(cat $S/rx_bytes) vlan_tx_packets=${VLAN_TX:-0} vlan_rx_packets=${VLAN_RX:-0}"
finish
