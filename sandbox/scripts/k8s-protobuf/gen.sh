#!/usr/bin/env bash
# Regenerates what the sandbox needs to read kubectl's protobuf request bodies:
#   sandbox/data/k8s-api.binpb      a FileDescriptorSet (no source info) of the generated.proto
#                                   files of the API groups the sandbox serves, with their imports
#   sandbox/data/k8s-json-fields.txt  what the .proto files do not say about the JSON form
#                                   (jsonfields.go, from the Go types)
# Both come from the k8s.io/api, k8s.io/apimachinery and k8s.io/apiextensions-apiserver modules
# that e2e/controlplane/go.mod pins, so a Kubernetes upgrade there is followed by running this
# script and committing the diff. Needs Go (as the e2e tier does) and cargo: the .proto files are
# compiled by protox (pure Rust, pinned here; installed into .tools/protox on first use), so no
# protoc of whatever version a distribution ships is involved.
set -euo pipefail
PROTOX_VERSION=0.10.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
PROTOX="$ROOT/.tools/protox/bin/protox"
if [ ! -x "$PROTOX" ] || ! grep -qs "protox $PROTOX_VERSION" "$ROOT/.tools/protox/.crates.toml"; then
  cargo install --quiet --locked protox --version "$PROTOX_VERSION" --features bin \
    --root "$ROOT/.tools/protox"
fi
cd "$ROOT/e2e/controlplane"
moddir() { "$GO" mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
version() { "$GO" list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$1"; }
INC="$(mktemp -d)"
trap 'rm -rf "$INC"' EXIT
mkdir -p "$INC/k8s.io"
for m in api apimachinery apiextensions-apiserver; do
  ln -s "$(moddir "k8s.io/$m@$(version "k8s.io/$m")")" "$INC/k8s.io/$m"
done
FILES=()
for g in core apps batch networking coordination events discovery policy rbac admissionregistration; do
  FILES+=("k8s.io/api/$g/v1/generated.proto")
done
FILES+=("k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/generated.proto")
OUT="$ROOT/sandbox/data"
mkdir -p "$OUT"
"$PROTOX" --include "$INC" --include-imports --output "$OUT/k8s-api.binpb" "${FILES[@]}"
{
  echo "# k8s.io/api $(version k8s.io/api), k8s.io/apiextensions-apiserver $(version k8s.io/apiextensions-apiserver)"
  "$GO" run "$ROOT/sandbox/scripts/k8s-protobuf/jsonfields.go"
} >"$OUT/k8s-json-fields.txt"
ls -l "$OUT"
