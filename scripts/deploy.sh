#!/usr/bin/env bash
# `make deploy`: Portico into the cluster kubectl points at (KUBECONFIG / current context), with the
# self-managed certificates overlay (made once into manifests/overlays/self-managed/certs/, which
# is deploy material, git-ignored, never the development certificates in certs/) or
# OVERLAY=cert-manager.
#
# Against Portico's own sandbox (`make run` / `make sandbox`) it applies as a server-side dry run:
# a real apply would replace the webhook configurations' caBundle with the deploy certificates',
# which the Portico serving the sandbox does not hold, and every pod create would then fail.
# SANDBOX_APPLY=1 applies for real anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECTL="${KUBECTL:-$PWD/.tools/kubectl/bin/kubectl}"
PORTICO="${PORTICO:-$PWD/target/debug/portico}"
OVERLAY="${OVERLAY:-self-managed}"
CARGO="${CARGO:-cargo}"

ctx="$("$KUBECTL" config current-context 2>/dev/null || echo none)"
if ! version="$("$KUBECTL" version -o json --request-timeout=5s 2>/dev/null)"; then
  echo "make deploy: no cluster answers (KUBECONFIG=${KUBECONFIG:-~/.kube/config}, context: $ctx); nothing was applied" >&2
  exit 1
fi
if [ "$OVERLAY" = self-managed ] && [ ! -s manifests/overlays/self-managed/certs/tls.crt ]; then
  [ -x "$PORTICO" ] || "$CARGO" build -p portico --bin portico
  "$PORTICO" certs --service portico --namespace portico-system \
    --out manifests/overlays/self-managed/certs >/dev/null
  echo "deploy certificates written to manifests/overlays/self-managed/certs/ (certs/, the development ones, untouched)"
fi
dry=()
if grep -q 'portico-sandbox' <<<"$version" && [ -z "${SANDBOX_APPLY:-}" ]; then
  cat >&2 <<MSG
make deploy: the cluster kubectl points at (context $ctx) is Portico's sandbox, not a real cluster.
  Applying as a server-side dry run: the manifests are checked, nothing is changed. A real apply
  would point the webhooks at the deploy certificates, which the Portico serving the sandbox does
  not hold, and every pod create would fail; and the sandbox runs no images (the Deployment's pods
  would only be simulated). SANDBOX_APPLY=1 make deploy applies anyway.
MSG
  dry=(--dry-run=server)
fi
"$KUBECTL" apply "${dry[@]}" -k "manifests/overlays/$OVERLAY"
