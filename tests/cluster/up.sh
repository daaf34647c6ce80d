#!/usr/bin/env bash
# Starts a real one-node Kubernetes cluster on this machine, as background processes tracked by
# pid files (no systemd, no container engine, no registry): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd (+ Debian's runc) and a kubelet registered
# as Node `emu-node`. Every program is the real upstream one, built by tests/cluster/build.sh from
# the pinned Go modules. tests/cluster/down.sh stops it all again.
#
# Usage: tests/cluster/up.sh        (as root)
#   EMU_CLUSTER_DIR   all state, logs, sockets and pid files   [/var/lib/emu-sriov-cluster]
#   EMU_NODE_NAME     the Node's name                           [emu-node]
#   EMU_CLUSTER_TIMEOUT  seconds to wait for each component     [120]
# Prints the kubeconfig's path at the end; `source $EMU_CLUSTER_DIR/env.sh` puts kubectl, helm,
# ctr and crictl on PATH and sets KUBECONFIG, CONTAINER_RUNTIME_ENDPOINT and CONTAINERD_ADDRESS.
#
# The network stays on the node: the bridge emu-cni0 carries 198.18.0.1/24, the node's and the
# API server's address; pods get 198.18.0.10-254 on it (CNI bridge + host-local, no gateway, no
# masquerade, IP forwarding left as it is), services 198.19.128.0/24 (no kube-proxy: in-cluster
# clients are given the API server's real address, 198.18.0.1:6443); blackhole routes for
# 198.18.0.0/15 catch everything else in the range.
#
# What is configured around this machine (see tests/cluster/README.md): cgroup v1 (kubelet
# `failCgroupV1: false`, cgroupfs driver), no CAP_SYS_RESOURCE (kubelet `oomScoreAdj: 0`,
# containerd `restrict_oom_score_adj`), the kubelet's kernel tunables (saved here and restored by
# down.sh), a locally built pause image (tests/cluster/pause/pause.rs) imported with ctr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${EMU_CLUSTER_DIR:-/var/lib/emu-sriov-cluster}
NODE=${EMU_NODE_NAME:-emu-node}
TIMEOUT=${EMU_CLUSTER_TIMEOUT:-120}
NODE_IP=198.18.0.1
POD_SUBNET=198.18.0.0/24
SERVICE_RANGE=198.19.128.0/24
BRIDGE=emu-cni0
PAUSE_IMAGE=localhost/emu-sriov-pause:1
t_start=$SECONDS

log() { printf 'up.sh: [%3ds] %s\n' $((SECONDS - t_start)) "$*"; }
die() { echo "up.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the kubelet, containerd and the pod network need it)"
if [ -e "$S/pids" ] && compgen -G "$S/pids/*.pid" >/dev/null; then
  for f in "$S"/pids/*.pid; do
    if kill -0 "$(cat "$f")" 2>/dev/null; then
      die "a cluster is already running from $S ($(basename "$f" .pid) is pid $(cat "$f")); run tests/cluster/down.sh first"
    fi
  done
fi

log "building or reusing the Kubernetes programs (tests/cluster/build.sh node; cold: many minutes)"
"$here/build.sh" node | sed 's/^/  /'
BIN=$("$here/build.sh" --print-dir)
if ! command -v runc >/dev/null; then
  log "installing Debian's runc"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends runc >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends runc >/dev/null; } \
    || die "could not install runc (apt-get install runc)"
fi
RUNC=$(command -v runc)
command -v openssl >/dev/null || die "openssl is needed for the cluster's certificates"
command -v curl >/dev/null || die "curl is needed (etcd health checks): apt-get install curl"
command -v ip >/dev/null || die "ip (iproute2) is needed for the pod network: apt-get install iproute2"
command -v rustc >/dev/null || die "rustc is needed to build the pause image"

mkdir -p "$S"/{pki,logs,pids,etcd,kubelet,pod-logs,cni/net.d,cni/bin,cni/ipam,cdi,containerd/root,containerd/state,containerd/opt,images,run}
chmod 700 "$S/pki"
export PATH="$BIN:$PATH"

# The kubelet's device-plugin dir is a constant (/var/lib/kubelet/device-plugins), whatever
# --root-dir says: remember whether we made /var/lib/kubelet so that down.sh can remove it.
[ -e /var/lib/kubelet ] || { mkdir -p /var/lib/kubelet && touch "$S/made-var-lib-kubelet"; }
# Node programs that look for pod-resources at the default path (Multus' thin plugin hard-codes
# /var/lib/kubelet/pod-resources/kubelet.sock) find ours through a link; down.sh removes it.
mkdir -p "$S/kubelet/pod-resources"
if [ ! -e /var/lib/kubelet/pod-resources ] && [ ! -L /var/lib/kubelet/pod-resources ]; then
  ln -s "$S/kubelet/pod-resources" /var/lib/kubelet/pod-resources
  touch "$S/made-pod-resources-link"
fi

# --- certificates ------------------------------------------------------------------------
pki=$S/pki
if [ ! -s "$pki/ca.crt" ]; then
  log "making certificates in $pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=emu-sriov-cluster-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
cert() { # cert NAME SUBJECT [SAN] — client and/or server certificate signed by the CA
  local name=$1 subj=$2 san=${3:-} ext
  [ -s "$pki/$name.crt" ] && return 0
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$ext" "$pki/$name.csr"
}
cert apiserver "/CN=kube-apiserver" "IP:$NODE_IP,IP:127.0.0.1,IP:198.19.128.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=admin"
cert kubelet "/O=system:nodes/CN=system:node:$NODE" "IP:$NODE_IP,DNS:$NODE"
cert controller-manager "/CN=system:kube-controller-manager" "IP:$NODE_IP"
cert scheduler "/CN=system:kube-scheduler" "IP:$NODE_IP"

kubeconfig() { # kubeconfig FILE CERTNAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: emu
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: emu
  context: {cluster: emu, user: $2}
current-context: emu
EOF
}
kubeconfig "$S/admin.kubeconfig" admin
kubeconfig "$S/kubelet.kubeconfig" kubelet
kubeconfig "$S/controller-manager.kubeconfig" controller-manager
kubeconfig "$S/scheduler.kubeconfig" scheduler
export KUBECONFIG=$S/admin.kubeconfig

# --- network -----------------------------------------------------------------------------
log "pod network: bridge $BRIDGE $NODE_IP/24, blackhole routes for 198.18.0.0/15 and $SERVICE_RANGE"
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip addr replace "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
ip route replace blackhole 198.18.0.0/15
ip route replace blackhole "$SERVICE_RANGE"
cat >"$S/cni/net.d/10-emu-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "emu-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "198.18.0.10", "rangeEnd": "198.18.0.254"}]],
        "dataDir": "$S/cni/ipam"
      }
    }
  ]
}
EOF
echo "nameserver 127.0.0.1" >"$S/resolv.conf"

# --- processes ---------------------------------------------------------------------------
spawn() { # spawn NAME CMD... — background, own session, output to logs/NAME.log, pid file
  local name=$1; shift
  setsid "$@" </dev/null >>"$S/logs/$name.log" 2>&1 &
  echo $! >"$S/pids/$name.pid"
  log "started $name (pid $!, log $S/logs/$name.log)"
}
wait_for() { # wait_for WHAT NAME CMD... — polls CMD every 0.5 s up to $TIMEOUT s; NAME's pid must live
  local what=$1 name=$2; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$S/pids/$name.pid")" 2>/dev/null; then
      echo "up.sh: $name exited; the last lines of $S/logs/$name.log:" >&2
      tail -25 "$S/logs/$name.log" >&2
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "up.sh: timed out after ${TIMEOUT}s waiting for $what; the last lines of $S/logs/$name.log:" >&2
      tail -25 "$S/logs/$name.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  log "$what"
}

spawn etcd "$BIN/etcd" --name emu --data-dir "$S/etcd" \
  --listen-client-urls "http://$NODE_IP:2379" --advertise-client-urls "http://$NODE_IP:2379" \
  --listen-peer-urls "http://$NODE_IP:2380" --initial-advertise-peer-urls "http://$NODE_IP:2380" \
  --initial-cluster "emu=http://$NODE_IP:2380" --listen-metrics-urls "http://$NODE_IP:2381" \
  --unsafe-no-fsync=true
wait_for "etcd healthy" etcd curl -sf "http://$NODE_IP:2381/health"

spawn kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://$NODE_IP:2379" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --service-cluster-ip-range "$SERVICE_RANGE" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --kubelet-preferred-address-types InternalIP \
  --allow-privileged=true --profiling=false
wait_for "kube-apiserver ready" kube-apiserver kubectl get --raw /readyz

spawn kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$S/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$S/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$S/controller-manager.kubeconfig" \
  --bind-address "$NODE_IP" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials --service-cluster-ip-range "$SERVICE_RANGE" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key"
spawn kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$S/scheduler.kubeconfig" \
  --authentication-kubeconfig "$S/scheduler.kubeconfig" \
  --authorization-kubeconfig "$S/scheduler.kubeconfig" \
  --bind-address "$NODE_IP" --leader-elect=false

# containerd: cgroupfs (no systemd), Debian's runc, state and the pods' netns under $S.
cat >"$S/containerd/config.toml" <<EOF
version = 3
root = "$S/containerd/root"
state = "$S/containerd/state"

[grpc]
  address = "$S/run/containerd.sock"
[ttrpc]
  address = "$S/run/containerd.sock.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "$S/containerd/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.runtime']
  # root lacks CAP_SYS_RESOURCE: never ask for an oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  enable_cdi = true
  cdi_spec_dirs = ["$S/cdi"]
[plugins.'io.containerd.cri.v1.runtime'.cni]
  # The built plugins (read-only cache) and a dir for plugins that pods install (Multus,
  # emu-sriov-cni): CNI_PATH carries both.
  bin_dirs = ["$BIN/cni", "$S/cni/bin"]
  conf_dir = "$S/cni/net.d"
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "$RUNC"
  SystemdCgroup = false
EOF
# The pods' network namespaces are bind mounts under containerd's state dir. A DaemonSet that
# mounts that dir (the emu-sriov agent in netdev mode) must see namespaces made after it
# started, which needs shared propagation; this machine's mounts are private (no systemd), so
# the state dir becomes a shared mount of its own (down.sh unmounts it).
if ! grep -q " $S/containerd/state " /proc/self/mountinfo; then
  mount --bind "$S/containerd/state" "$S/containerd/state"
fi
mount --make-rshared "$S/containerd/state"
spawn containerd "$BIN/containerd" --config "$S/containerd/config.toml"
export CONTAINERD_ADDRESS=$S/run/containerd.sock CONTAINERD_NAMESPACE=k8s.io
wait_for "containerd serving" containerd ctr version

# The pause image: a static Rust program (no crates), one-layer OCI archive, imported.
pause_bin=$S/images/pause
if [ ! -x "$pause_bin" ] || [ "$here/pause/pause.rs" -nt "$pause_bin" ]; then
  rustc --edition 2021 -O -C panic=abort -C target-feature=+crt-static -C strip=symbols \
    "$here/pause/pause.rs" -o "$pause_bin"
  "$here/image.sh" --name "$PAUSE_IMAGE" --out "$S/images/pause.tar" \
    --file "$pause_bin:/pause" --entrypoint /pause --user 65535:65535 | sed 's/^/  /'
fi
ctr images import --local "$S/images/pause.tar" >/dev/null 2>&1 || ctr images import "$S/images/pause.tar" >/dev/null
ctr images label "$PAUSE_IMAGE" io.cri-containerd.pinned=pinned >/dev/null
log "pause image $PAUSE_IMAGE imported"

# The kubelet's kernel tunables: it sets vm.overcommit_memory, kernel.panic and
# kernel.panic_on_oops; keep the machine's values for down.sh.
if [ ! -s "$S/sysctl.orig" ]; then
  for k in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
           kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    echo "$k=$(sysctl -n "$k")"
  done >"$S/sysctl.orig"
fi

cat >"$S/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
containerRuntimeEndpoint: unix://$S/run/containerd.sock
cgroupDriver: cgroupfs
# This machine: cgroup v1 (hybrid), no swap accounting, no CAP_SYS_RESOURCE.
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {}
evictionPressureTransitionPeriod: 0s
resolvConf: $S/resolv.conf
podLogsDir: $S/pod-logs
staticPodPath: ""
serializeImagePulls: false
maxPods: 50
EOF
spawn kubelet "$BIN/kubelet" --config "$S/kubelet/config.yaml" --root-dir "$S/kubelet" \
  --kubeconfig "$S/kubelet.kubeconfig" --hostname-override "$NODE" --node-ip "$NODE_IP"
node_ready() {
  [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
wait_for "node $NODE Ready" kubelet node_ready
# A pod needs its namespace's default ServiceAccount (made by the controller-manager).
wait_for "ServiceAccount default/default exists" kube-controller-manager kubectl -n default get serviceaccount default

cat >"$S/env.sh" <<EOF
# source this: the local cluster's tools and endpoints (tests/cluster/up.sh)
export PATH="$BIN:\$PATH"
export KUBECONFIG="$S/admin.kubeconfig"
export CONTAINERD_ADDRESS="$S/run/containerd.sock" CONTAINERD_NAMESPACE=k8s.io
export CONTAINER_RUNTIME_ENDPOINT="unix://$S/run/containerd.sock" IMAGE_SERVICE_ENDPOINT="unix://$S/run/containerd.sock"
export EMU_CLUSTER_DIR="$S" EMU_NODE_NAME="$NODE" EMU_APISERVER_HOST="$NODE_IP" EMU_APISERVER_PORT=6443
EOF
log "cluster up in $((SECONDS - t_start)) s"
echo "kubeconfig: $S/admin.kubeconfig"
echo "environment: source $S/env.sh   (kubectl, helm, ctr, crictl; KUBECONFIG; containerd socket)"
echo "kubelet dirs: /var/lib/kubelet/device-plugins (fixed in the kubelet), $S/kubelet/pod-resources; CDI dir: $S/cdi"
echo "CNI: config $S/cni/net.d, plugins $BIN/cni and $S/cni/bin (for plugins pods install); netns under $S/containerd/state"
echo "in-cluster clients reach the API server at https://$NODE_IP:6443 (no kube-proxy)"
echo "stop: tests/cluster/down.sh"
