#!/usr/bin/env bash
# Builds the end-to-end control plane once per machine: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, and kwok (which plays the kubelet), from the
# versions pinned in this folder's go.mod files, into a cache outside the work tree so that every clone on the machine (CI's fresh
# clones included) reuses them:
#
#   ${PORTICO_CONTROLPLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/controlplane/<k8s>-<etcd>}/bin/
#
# Idempotent: a STAMP file records what the binaries were built from (the versions and a hash of
# go.mod, go.sum and the main.go wrappers); when it matches nothing is built. Prints what it does
# on stderr and the bin/ directory on stdout (last line), so callers can `bin=$(build.sh)`.
#
#   GO=/path/to/go   the Go toolchain (default: `go` on PATH, else /usr/local/go/bin/go)
#   GO_BUILD_P=N     parallel compile jobs (default 2: CI machines have 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
say() { printf 'controlplane: %s\n' "$*" >&2; }

GO="${GO:-$(command -v go || true)}"
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
if [ -z "$GO" ] || ! "$GO" version >/dev/null 2>&1; then
  say "the Go toolchain is missing: install Go 1.26 or newer (https://go.dev/dl/, e.g. into"
  say "/usr/local/go) or set GO=/path/to/go; it builds the Kubernetes control plane for the e2e tests"
  exit 2
fi
# The versions come from the go.mod files alone, so the pins live in one place.
k8s="$(sed -n 's/^\(require \|\t\)k8s.io\/kubernetes \(v[0-9.]*\)$/\2/p' "$here/go.mod")"
etcd="$(sed -n 's/^\(require \|\t\)go.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\)$/\2/p' "$here/etcd/go.mod")"
kwok="$(sed -n 's/^\(require \|\t\)sigs.k8s.io\/kwok \(v[0-9.]*\)\( \/\/ indirect\)\?$/\2/p' "$here/kwok/go.mod")"
[ -n "$k8s" ] && [ -n "$etcd" ] && [ -n "$kwok" ] || { say "cannot read the pinned versions from $here/go.mod, $here/etcd/go.mod and $here/kwok/go.mod"; exit 2; }

dir="${PORTICO_CONTROLPLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico/controlplane/$k8s-$etcd}"
stamp="$k8s $etcd $(cat "$here"/go.mod "$here"/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum \
  "$here"/cmd/*/main.go "$here"/etcd/main.go | sha256sum | cut -c1-16) $("$GO" env GOVERSION)"
# kwok has a stamp of its own, so that moving it does not rebuild Kubernetes (and back).
kwok_stamp="$kwok $(cat "$here"/kwok/go.mod "$here"/kwok/go.sum | sha256sum | cut -c1-16) $("$GO" env GOVERSION)"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler)
mkdir -p "$dir"
# One build at a time per cache folder: `make cluster` and a test binary may ask together.
exec 9>"$dir/.lock"
flock 9

complete() {
  [ "$(cat "$dir/STAMP" 2>/dev/null)" = "$stamp" ] || return 1
  for b in "${bins[@]}"; do [ -x "$dir/bin/$b" ] || return 1; done
}
kwok_complete() {
  [ "$(cat "$dir/STAMP.kwok" 2>/dev/null)" = "$kwok_stamp" ] && [ -x "$dir/bin/kwok" ] &&
    [ -s "$dir/kwok-stages/pod-ready.yaml" ]
}
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
mkdir -p "$dir/bin"
if complete; then
  say "up to date: Kubernetes $k8s, etcd $etcd in $dir/bin"
else
  say "building Kubernetes $k8s (kube-apiserver, kube-controller-manager, kube-scheduler) and etcd $etcd"
  say "into $dir/bin with $("$GO" env GOVERSION), -p ${GO_BUILD_P:-2}; a cold build takes several minutes"
  rm -f "$dir/STAMP"
  start=$SECONDS
  # The version variables Kubernetes' own build (hack/lib/version.sh) sets, so /version, kubectl's
  # skew check and the components' compatibility-version checks see the real release.
  minor="${k8s#v1.}"; minor="${minor%%.*}"
  ldk=""
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldk+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldk+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # All three in one `go build` so the packages they share are compiled once.
  (cd "$here" && "$GO" build -p "${GO_BUILD_P:-2}" -trimpath -ldflags "-s -w$ldk" -o "$dir/bin/" ./cmd/...)
  say "Kubernetes built in $((SECONDS - start)) s"
  start=$SECONDS
  (cd "$here/etcd" && "$GO" build -p "${GO_BUILD_P:-2}" -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" .)
  say "etcd built in $((SECONDS - start)) s"
  echo "$stamp" > "$dir/STAMP"
fi
if kwok_complete; then
  say "up to date: kwok $kwok in $dir/bin"
else
  say "building kwok $kwok into $dir/bin (a cold build takes a few minutes)"
  rm -f "$dir/STAMP.kwok"
  start=$SECONDS
  (cd "$here/kwok" && "$GO" build -p "${GO_BUILD_P:-2}" -trimpath -ldflags "-s -w" -o "$dir/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
  # kwok's own stages for a node that stays Ready and pods that become Running and go when
  # deleted; not its pod-complete stage, which would finish every Job's pods at once (the tests'
  # jobs run until deleted, as interactive jobs do). From the pinned module, so they match.
  kwok_dir="$(cd "$here/kwok" && "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  mkdir -p "$dir/kwok-stages"
  for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-delete; do
    cp "$kwok_dir/kustomize/stage/$f.yaml" "$dir/kwok-stages/"
  done
  say "kwok built in $((SECONDS - start)) s"
  echo "$kwok_stamp" > "$dir/STAMP.kwok"
fi
echo "$dir/bin"
