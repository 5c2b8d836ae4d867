#!/usr/bin/env bash
# `make run` and `make sandbox`.
#
#   scripts/run.sh run      Portico against the cluster in KUBECONFIG (or ~/.kube/config) when one
#                           answers; otherwise the sandbox API server plus Portico, its webhooks
#                           registered from manifests/, a short scripted scene, then it keeps running.
#   scripts/run.sh sandbox  The sandbox plus Portico, no scene.
#   scripts/run.sh sandbox-scene   The sandbox and the scene, whatever KUBECONFIG says.
#   RUN_SCENE_ONLY=1        Play the scene and exit (used by the tests).
#   PORTICO, SANDBOX, KUBECTL, STATE, SANDBOX_PORT, WEBHOOK_PORT, OPS_PORT, SERVICE_API_PORT
#                           override the defaults.
#
# With the sandbox, Portico also serves the service API (https://127.0.0.1:8444) with a demo
# tenant `jupyterhub` set up as the Kubernetes manager's clients expect (`wire: k8smgr`) and the
# JupyterLab template of descriptions/jupyterhub/; its base URL is written to $STATE/api-url and
# its token to $STATE/api-token, so a spawner or curl can be pointed at it.
#
# Everything listens on 127.0.0.1 only. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
PORTICO="${PORTICO:-${CARGO_TARGET_DIR:-$PWD/target}/debug/portico}"
SANDBOX="${SANDBOX:-${CARGO_TARGET_DIR:-$PWD/target}/debug/portico-sandbox}"
KUBECTL="${KUBECTL:-$PWD/.tools/kubectl/bin/kubectl}"
API_PORT="${SANDBOX_PORT:-6443}"
WEBHOOK_PORT="${WEBHOOK_PORT:-8443}"
OPS_PORT="${OPS_PORT:-9090}"
SERVICE_API_PORT="${SERVICE_API_PORT:-8444}"
STATE="${STATE:-.sandbox}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# GET on the ops port with bash alone (no curl needed): true on HTTP 200.
ops_ok() {
  { exec 3<>"/dev/tcp/127.0.0.1/$OPS_PORT"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3
  local status; read -r _ status _ <&3 || true
  exec 3>&-
  [ "$status" = 200 ]
}

if [ "$mode" = run ] && [ -x "$KUBECTL" ] && "$KUBECTL" version --request-timeout=3s >/dev/null 2>&1; then
  ctx="$("$KUBECTL" config current-context 2>/dev/null || echo '?')"
  say "a cluster answers (context $ctx): running Portico against it"
  echo "The webhook serves on https://127.0.0.1:$WEBHOOK_PORT (deploy manifests/ to put it in the cluster's path)."
  exec "$PORTICO" serve --tls-cert certs/tls.crt --tls-key certs/tls.key \
    --listen "127.0.0.1:$WEBHOOK_PORT" --ops-listen "127.0.0.1:$OPS_PORT"
fi

mkdir -p "$STATE"
STATE_ABS="$(cd "$STATE" && pwd)"
certs=certs
if [ ! -s "$certs/tls.crt" ] || [ ! -s "$certs/ca-bundle.b64" ]; then
  certs="$STATE/certs"
  mkdir -p "$certs"
  "$PORTICO" certs --service portico --namespace portico-system --host localhost --host 127.0.0.1 \
    --out "$certs" > "$certs/ca-bundle.b64"
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The webhook configurations exactly as shipped, with the development caBundle injected.
ca="$(tr -d '\n' < "$certs/ca-bundle.b64")"
sed "s|^\( *\)clientConfig:|&\n\1  caBundle: $ca|" manifests/base/webhooks.yaml > "$STATE/webhooks.yaml"
# The demo tenant's token: made once, kept across runs, readable by its owner only.
if [ ! -s "$STATE/api-token" ]; then
  (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$STATE/api-token")
fi
rm -f "$STATE/api-url"
cat > "$STATE/portico.yaml" <<CONFIG
# Portico's configuration for the sandbox: the 'portal' context is a trusted submitter, and the
# service API acts as it. The API's settings are the Kubernetes manager's config.json defaults
# (docs/service-api.md, "Coming from the Kubernetes manager").
identity:
  trustedSubmitters:
    users: [portal]
provisioner:
  domain: apps.sandbox.test
  leaseSeconds: 6
api:
  descriptions: $PWD/descriptions
  kubeconfig: $STATE_ABS/kubeconfig
  context: portal
  userIdEnv: JUPYTERHUB_USER_ID
  keywords: {certSecretName: secret_certs_name}
  events: 3
  logLines: 5
  serviceType: ClusterIP
  startTimeoutSeconds: 20
  clients:
    - name: jupyterhub
      wire: k8smgr
      tokenFile: $STATE_ABS/api-token
      namespace: userlabs
      replacements: {jupyterlab_image: "quay.io/jupyter/base-notebook:2025-01-06"}
CONFIG

say "starting the sandbox API server on 127.0.0.1:$API_PORT"
"$SANDBOX" --listen "127.0.0.1:$API_PORT" --kubeconfig "$STATE/kubeconfig" \
  --service-endpoint "portico-system/portico=127.0.0.1:$WEBHOOK_PORT" \
  --namespace portico-system --namespace team --namespace userlabs \
  --apply manifests/base/crd.yaml --apply "$STATE/webhooks.yaml" > "$STATE/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$STATE/kubeconfig" ] && break; sleep 0.1; done
[ -s "$STATE/kubeconfig" ] || { echo "the sandbox did not start; see $STATE/sandbox.log" >&2; exit 1; }
k() { "$KUBECTL" --kubeconfig "$STATE/kubeconfig" "$@"; }
k config view --raw --minify --context portico > "$STATE/portico.kubeconfig"

say "starting Portico (webhook https://127.0.0.1:$WEBHOOK_PORT, ops http://127.0.0.1:$OPS_PORT, service API https://127.0.0.1:$SERVICE_API_PORT)"
KUBECONFIG="$STATE/portico.kubeconfig" "$PORTICO" serve --config "$STATE/portico.yaml" \
  --tls-cert "$certs/tls.crt" --tls-key "$certs/tls.key" \
  --listen "127.0.0.1:$WEBHOOK_PORT" --ops-listen "127.0.0.1:$OPS_PORT" \
  --api --api-listen "127.0.0.1:$SERVICE_API_PORT" > "$STATE/portico.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do ops_ok /readyz && break; sleep 0.1; done
ops_ok /readyz || { echo "Portico is not ready; see $STATE/portico.log" >&2; exit 1; }
for _ in $(seq 1 100); do grep -q "service API serving HTTPS" "$STATE/portico.log" && break; sleep 0.1; done
grep -q "service API serving HTTPS" "$STATE/portico.log" || { echo "the service API is not serving; see $STATE/portico.log" >&2; exit 1; }
# Written once the API serves: whoever waits for this file can use it at once.
echo "https://127.0.0.1:$SERVICE_API_PORT" > "$STATE/api-url"

if [ "$mode" = run ] || [ "$mode" = sandbox-scene ]; then
  say "user1 submits a 2-pod Indexed Job asking for the tag 'foobar'"
  k --context user1 -n team create -f - <<'JOB'
apiVersion: batch/v1
kind: Job
metadata:
  name: lab
  annotations:
    portico.dev/ipaddr: foobar
spec:
  completionMode: Indexed
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
JOB
  for _ in $(seq 1 50); do
    [ "$(k -n team get pods -l jarvice-job-ipaddr=user1-foobar -o name | wc -l)" -ge 2 ] && break; sleep 0.1
  done
  for _ in $(seq 1 50); do
    [ "$(k -n team get pods -l jarvice-job-ipaddr=user1-foobar --field-selector=status.phase=Running -o name | wc -l)" -ge 2 ] && break; sleep 0.1
  done
  say "its pods come up labelled user1-foobar (the first also as pod0)"
  k -n team get pods -L jarvice-job-ipaddr,jarvice-pod0-job-ipaddr,portico.dev/owner
  pod="pod/$(k -n team get pods -l jarvice-job-ipaddr=user1-foobar -o 'jsonpath={.items[0].metadata.name}')"
  say "user2 tries to relabel $pod to a value of their own"
  if k --context user2 -n team label "$pod" jarvice-job-ipaddr=user2-x --overwrite; then
    echo "UNEXPECTED: the relabel was accepted" >&2; exit 1
  fi
  say "user1 exposes the job's first pod on node port 30080"
  k --context user1 -n team create -f - <<'EXPOSURE'
apiVersion: portico.dev/v1alpha1
kind: Exposure
metadata:
  name: foobar
spec:
  tag: foobar
  target: pod0
  service:
    type: NodePort
    ports: [{name: http, port: 80, targetPort: 8888, nodePort: 30080}]
EXPOSURE
  for _ in $(seq 1 50); do
    [ -n "$(k -n team get exposure foobar -o 'jsonpath={.status.service}' 2>/dev/null)" ] && break; sleep 0.1
  done
  k -n team get exposures
  k -n team get service foobar -o wide
  if [ "${RUN_SCENE_ONLY:-}" = 1 ]; then say "scene played"; exit 0; fi
fi

say "ready — try it from another terminal"
cat <<HELP
  export KUBECONFIG=$STATE_ABS/kubeconfig KUBECTL=$KUBECTL
  \$KUBECTL --context user1 -n team get pods -L jarvice-job-ipaddr
  \$KUBECTL --context user2 -n team create -f my-job.yaml     # contexts: admin, user1, user2, portal
  curl -s http://127.0.0.1:$OPS_PORT/metrics | grep portico_

  The service API, tenant 'jupyterhub' (a spawner's services URL: \$(cat $STATE/api-url)/api/services/):
  curl --cacert $certs/ca.crt -H "Authorization: Token \$(cat $STATE/api-token)" -H "uuidcode: lab1" \\
       -H "Content-Type: application/json" \$(cat $STATE/api-url)/api/services/ \\
       -d '{"user_options": {"service": "JupyterLab/JupyterLab"}, "env": {"JUPYTERHUB_USER_ID": 1}, "start_id": "1a2b3c4d"}'
  curl --cacert $certs/ca.crt -H "Authorization: Token \$(cat $STATE/api-token)" \$(cat $STATE/api-url)/api/services/lab1/
  logs: $STATE/portico.log and $STATE/sandbox.log          Ctrl-C stops everything
HELP
wait
