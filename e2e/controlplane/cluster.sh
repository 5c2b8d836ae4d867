#!/usr/bin/env bash
# `make cluster` and the e2e tests: a real Kubernetes control plane on loopback with Portico in
# its admission path, until Ctrl-C (or until PARENT_PID exits, for the tests).
#
#   etcd, kube-apiserver (RBAC + Node authorization, the default admission plugins plus
#   NodeRestriction, client-certificate users, a service-account issuer and signing key),
#   kube-controller-manager (--use-service-account-credentials: pods are created by
#   system:serviceaccount:kube-system:job-controller and friends), kube-scheduler, kwok playing
#   the kubelet of one node (e2e-node: pods become Running with IPs, deleted pods go), and Portico
#   (`portico serve`: webhook + provisioner) as the service account portico-system:portico with
#   the token of a TokenRequest, bound only by the shipped ClusterRole and Role.
#
# Portico is registered from the shipped manifests/base (CRD, namespace, service account, RBAC,
# Service, webhook configurations) through a kustomization that rewrites only the webhooks'
# clientConfig to `url: https://127.0.0.1:<port>/…` with the caBundle of a certificate for
# 127.0.0.1, and drops the Deployment (Portico runs on the host). Why a URL and not the Service:
# docs/e2e.md.
#
# Writes $CLUSTER_DIR/kubeconfig (contexts admin, user1, user2, portal, portico and node; all but
# portico are client certificates signed by the cluster CA, admin in O=system:masters) and, when
# everything is up, $CLUSTER_DIR/ready. Logs: $CLUSTER_DIR/*.log.
#
#   CLUSTER_DIR (default .cluster), CLUSTER_API_PORT (6444), CLUSTER_ETCD_PORT (12379, the peer
#   port is the next one), CLUSTER_WEBHOOK_PORT (8444), CLUSTER_OPS_PORT (9091), PORTICO
#   (target/debug/portico), KUBECTL (.tools/kubectl/bin/kubectl), PARENT_PID (stop when it exits).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
DIR="${CLUSTER_DIR:-.cluster}"
API_PORT="${CLUSTER_API_PORT:-6444}"
ETCD_PORT="${CLUSTER_ETCD_PORT:-12379}"
PEER_PORT="$((ETCD_PORT + 1))"
WEBHOOK_PORT="${CLUSTER_WEBHOOK_PORT:-8444}"
OPS_PORT="${CLUSTER_OPS_PORT:-9091}"
PORTICO="${PORTICO:-${CARGO_TARGET_DIR:-$root/target}/debug/portico}"
KUBECTL="${KUBECTL:-$root/.tools/kubectl/bin/kubectl}"
# The range the apiserver allocates Service cluster IPs from; its first address is `kubernetes`.
# Room for the 1,000 Exposures of the scale benchmark (a /24 runs out at 254 Services).
SERVICE_RANGE=10.0.0.0/16
# The addresses kwok gives pods: room for the 10,000-pod figure.
POD_RANGE=10.64.0.0/16

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }
command -v openssl >/dev/null || die "openssl is missing (it makes the cluster's certificates): apt-get install openssl"
[ -x "$KUBECTL" ] || die "kubectl is missing at $KUBECTL: run \`make kubectl\`"
[ -x "$PORTICO" ] || die "portico is missing at $PORTICO: run \`make build\`"
bin="$(e2e/controlplane/build.sh)"

case "$DIR" in /*) ;; *) DIR="$root/$DIR" ;; esac
# A fresh cluster every time: etcd's data and every certificate are made anew.
rm -rf "$DIR"
mkdir -p "$DIR/pki" "$DIR/etcd"
pki="$DIR/pki"

pids=()
names=()
# start NAME: runs `run_NAME` in the background, its pid in $DIR/NAME.pid; logs append to
# $DIR/NAME.log, so a restarted component keeps its history in one file.
start() {
  "run_$1"
  local pid=$!
  echo "$pid" > "$DIR/$1.pid"
  local i
  for i in "${!names[@]}"; do
    if [ "${names[i]}" = "$1" ]; then pids[i]=$pid; return; fi
  done
  names+=("$1"); pids+=("$pid")
}
# Newest first, so the apiserver goes before etcd (it would otherwise retry etcd for minutes on
# its way out); whatever is still running after 5 s is killed: the cluster is thrown away anyway.
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for _ in $(seq 1 25); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "certificates (openssl) in $pki"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=portico-e2e-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt"
# cert NAME SUBJECT [subjectAltName]: a key and a certificate signed by the cluster CA.
cert() {
  local ext="$pki/$1.ext"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' > "$ext"
  if [ -n "${3:-}" ]; then
    printf 'extendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$3" >> "$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >> "$ext"
  fi
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" \
    -keyout "$pki/$1.key" -out "$pki/$1.csr"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$ext" -out "$pki/$1.crt"
}
cert apiserver "/CN=kube-apiserver" \
  "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
cert admin "/O=system:masters/CN=admin"
cert user1 "/CN=user1"
cert user2 "/CN=user2"
cert portal "/CN=portal"
# The kubelet's identity: the Node authorizer and NodeRestriction judge it.
cert node "/O=system:nodes/CN=system:node:e2e-node"
# kwok plays that kubelet: the same user, so its pod status writes look like a kubelet's (the
# webhooks' matchConditions skip system:nodes, NodeRestriction holds it to its node's pods), and
# system:masters for the cluster-wide watches the Node authorizer does not grant a kubelet.
cert kwok "/O=system:masters/O=system:nodes/CN=system:node:e2e-node"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
# Service-account tokens: the apiserver signs them (TokenRequest) and verifies with the public key.
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
# Portico's serving certificate for 127.0.0.1, from Portico's own generator (its own CA).
mkdir -p "$pki/portico"
"$PORTICO" certs --service portico --namespace portico-system --host 127.0.0.1 --host localhost \
  --out "$pki/portico" > "$pki/portico/ca-bundle.b64"

b64() { base64 -w0 < "$1"; }
# kubeconfig FILE CONTEXT...: one cluster, a client-certificate user per context.
kubeconfig() {
  local file="$1"; shift
  {
    printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: portico-e2e\n  cluster:\n'
    printf '    server: https://127.0.0.1:%s\n    certificate-authority-data: %s\n' "$API_PORT" "$(b64 "$pki/ca.crt")"
    printf 'users:\n'
    for c in "$@"; do
      printf -- '- name: %s\n  user:\n    client-certificate-data: %s\n    client-key-data: %s\n' \
        "$c" "$(b64 "$pki/$c.crt")" "$(b64 "$pki/$c.key")"
    done
    printf 'contexts:\n'
    for c in "$@"; do
      printf -- '- name: %s\n  context: {cluster: portico-e2e, user: %s, namespace: team}\n' "$c" "$c"
    done
    printf 'current-context: %s\n' "$1"
  } > "$file"
}
kubeconfig "$DIR/admin.kubeconfig" admin user1 user2 portal node
kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
kubeconfig "$DIR/scheduler.kubeconfig" scheduler
kubeconfig "$DIR/kwok.kubeconfig" kwok
k() { "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" --context admin --request-timeout=10s "$@"; }

# wait_for WHAT SECONDS COMMAND...: polls every 0.2 s; fails naming the log to read.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up within ${secs}s; see $DIR/$what.log"
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "$what exited; see $DIR/$what.log"; done
    sleep 0.2
  done
}
# GET over plain HTTP with bash alone: true on status 200.
http_ok() {
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3
  local status; read -r _ status _ <&3 || true
  exec 3>&-
  [ "$status" = 200 ]
}

say "etcd on 127.0.0.1:$ETCD_PORT"
# No fsync: the data is thrown away with the cluster, and fsync dominates etcd's latency on
# shared CI disks.
run_etcd() {
  "$bin/etcd" --name e2e --data-dir "$DIR/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "e2e=http://127.0.0.1:$PEER_PORT" >> "$DIR/etcd.log" 2>&1 &
}
start etcd
wait_for etcd 30 http_ok "$ETCD_PORT" /health

say "kube-apiserver on https://127.0.0.1:$API_PORT"
run_kube-apiserver() {
  "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_RANGE" --allow-privileged \
    --profiling=false >> "$DIR/kube-apiserver.log" 2>&1 &
}
start kube-apiserver
wait_for kube-apiserver 90 k get --raw /readyz

say "kube-controller-manager and kube-scheduler"
run_kube-controller-manager() {
  "$bin/kube-controller-manager" --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --use-service-account-credentials --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" --cluster-signing-cert-file "$pki/ca.crt" \
    --cluster-signing-key-file "$pki/ca.key" --service-cluster-ip-range "$SERVICE_RANGE" \
    --leader-elect=false --secure-port 0 --profiling=false >> "$DIR/kube-controller-manager.log" 2>&1 &
}
start kube-controller-manager
run_kube-scheduler() {
  "$bin/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" --leader-elect=false \
    --secure-port 0 --profiling=false >> "$DIR/kube-scheduler.log" 2>&1 &
}
start kube-scheduler

say "kwok: the kubelet of node e2e-node (pods Running with an IP from $POD_RANGE)"
k apply -f - > /dev/null <<NODE || die "could not register the node e2e-node"
apiVersion: v1
kind: Node
metadata:
  name: e2e-node
  labels: {kubernetes.io/hostname: e2e-node, kubernetes.io/os: linux, type: kwok}
  annotations: {kwok.x-k8s.io/node: fake}
NODE
stages="$bin/../kwok-stages"
run_kwok() {
  "$bin/kwok" --kubeconfig "$DIR/kwok.kubeconfig" --manage-single-node e2e-node \
    --cidr "$POD_RANGE" --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
    -c "$stages/node-initialize.yaml" -c "$stages/node-heartbeat-with-lease.yaml" \
    -c "$stages/pod-ready.yaml" -c "$stages/pod-delete.yaml" >> "$DIR/kwok.log" 2>&1 &
}
start kwok

say "Portico's manifests (manifests/base, webhooks rewritten to https://127.0.0.1:$WEBHOOK_PORT)"
mkdir -p "$DIR/portico"
ca_bundle="$(tr -d '\n' < "$pki/portico/ca-bundle.b64")"
rel="$(realpath --relative-to="$DIR/portico" "$root/manifests/base")"
# The webhook configurations keep every rule, selector and matchCondition as shipped.
hook() {
  local i="$1" path="$2"
  printf '      - op: replace\n        path: /webhooks/%s/clientConfig\n' "$i"
  printf '        value: {url: "https://127.0.0.1:%s%s", caBundle: "%s"}\n' "$WEBHOOK_PORT" "$path" "$ca_bundle"
}
{
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
  printf 'resources:\n  - %s\n  - service-api-rbac.yaml\n  - users.yaml\npatches:\n' "$rel"
  printf '  - target: {kind: MutatingWebhookConfiguration, name: portico}\n    patch: |-\n'
  hook 0 /mutate
  printf '  - target: {kind: ValidatingWebhookConfiguration, name: portico}\n    patch: |-\n'
  hook 0 /validate
  printf '  - target: {kind: Deployment, name: portico}\n    patch: |-\n'
  printf '      $patch: delete\n      apiVersion: apps/v1\n      kind: Deployment\n'
  printf '      metadata: {name: portico, namespace: portico-system}\n'
} > "$DIR/portico/kustomization.yaml"
cp e2e/controlplane/users.yaml "$DIR/portico/users.yaml"
# The service API's identity (`portico-api`, which Portico's service account impersonates) with
# its shipped RBAC, so a service API runs against this cluster as it does in one.
cp manifests/service-api/rbac.yaml "$DIR/portico/service-api-rbac.yaml"
# The CRD first and established, so the rest (RBAC naming exposures) applies in one go.
k apply -k "$DIR/portico" > "$DIR/apply.log" 2>&1 || die "kubectl apply -k failed; see $DIR/apply.log"
k wait --for condition=established crd/exposures.portico.dev --timeout 30s >/dev/null

# Portico's own identity: a bound token for its service account (TokenRequest), nothing more.
wait_for kube-apiserver 30 k -n portico-system get serviceaccount portico
token="$(k -n portico-system create token portico --duration 48h)"
{
  sed -n '1,/^users:/p' "$DIR/admin.kubeconfig"
  printf -- '- name: portico\n  user:\n    token: %s\n' "$token"
  printf 'contexts:\n- name: portico\n  context: {cluster: portico-e2e, user: portico, namespace: portico-system}\n'
  printf 'current-context: portico\n'
} > "$DIR/portico.kubeconfig"
cat > "$DIR/portico/config.yaml" <<CONFIG
# Portico's configuration for the e2e cluster: the 'portal' user and the service API's
# 'portico-api' are trusted submitters.
identity:
  trustedSubmitters:
    users: [portal, portico-api]
provisioner:
  domain: apps.cluster.test
  leaseSeconds: 6
CONFIG

say "Portico (webhook https://127.0.0.1:$WEBHOOK_PORT, ops http://127.0.0.1:$OPS_PORT)"
# POD_NAME names it in the provisioner's Lease (`e2e-portico-<pid>`), as the Deployment's would.
KUBECONFIG="$DIR/portico.kubeconfig" POD_NAME=e2e-portico "$PORTICO" serve --config "$DIR/portico/config.yaml" \
  --tls-cert "$pki/portico/tls.crt" --tls-key "$pki/portico/tls.key" \
  --listen "127.0.0.1:$WEBHOOK_PORT" --ops-listen "127.0.0.1:$OPS_PORT" > "$DIR/portico.log" 2>&1 &
pids+=($!)
echo "$!" > "$DIR/portico.pid"
wait_for portico 30 http_ok "$OPS_PORT" /readyz

# Pods need their namespace's default service account, which the controller-manager creates.
wait_for kube-controller-manager 60 k -n team get serviceaccount default
# The authorizer learns the tenants' RoleBindings from its own watch, a moment after they are
# applied: the cluster is ready for the tests once it grants what users.yaml says.
for who in user1 user2 portal; do
  wait_for kube-apiserver 30 k auth can-i create jobs.batch -n team --as "$who" --quiet
  wait_for kube-apiserver 30 k auth can-i create exposures.portico.dev -n team --as "$who" --quiet
done

# The kubeconfig users get: the four certificate contexts and Portico's token.
{
  sed -n '1,/^contexts:/p' "$DIR/admin.kubeconfig" | sed '$d'
  printf -- '- name: portico\n  user:\n    token: %s\n' "$token"
  sed -n '/^contexts:/,/^current-context:/p' "$DIR/admin.kubeconfig" | sed '$d'
  printf -- '- name: portico\n  context: {cluster: portico-e2e, user: portico, namespace: portico-system}\n'
  printf 'current-context: admin\n'
} > "$DIR/kubeconfig"
# Everything a test needs to run Portico itself (stop this one by portico.pid and start its own
# with portico.kubeconfig, pki/portico/ and portico/config.yaml on WEBHOOK_PORT).
printf 'API_PORT=%s\nWEBHOOK_PORT=%s\nOPS_PORT=%s\n' "$API_PORT" "$WEBHOOK_PORT" "$OPS_PORT" > "$DIR/ready"

say "ready — try it from another terminal"
cat <<HELP >&2
  export KUBECONFIG=$DIR/kubeconfig KUBECTL=$KUBECTL
  \$KUBECTL --context user1 get pods -L jarvice-job-ipaddr        # contexts: admin, user1, user2, portal, portico, node
  \$KUBECTL --context user1 create job lab --image busybox        # namespace: team
  logs: $DIR/*.log          Ctrl-C stops everything
HELP
# The control plane (etcd, apiserver, controller-manager, scheduler, kwok) must stay up, but a
# test may restart a component: it creates $DIR/hold-NAME, stops the process (NAME.pid), and
# removes the hold file when the component is to come back; it is then started again as before.
# Portico may be stopped and replaced by a test (leader election, restarts).
control_plane=("${names[@]}")
parent_alive() { [ -z "${PARENT_PID:-}" ] || kill -0 "$PARENT_PID" 2>/dev/null; }
while parent_alive; do
  for i in "${!control_plane[@]}"; do
    name="${control_plane[i]}"
    kill -0 "${pids[i]}" 2>/dev/null && continue
    [ -e "$DIR/hold-$name" ] || die "$name exited; see $DIR/$name.log"
    wait "${pids[i]}" 2>/dev/null || true
    while [ -e "$DIR/hold-$name" ] && parent_alive; do sleep 0.1; done
    parent_alive || break
    printf 'cluster: restarting %s\n' "$name" >&2
    start "$name"
  done
  sleep 0.2
done
