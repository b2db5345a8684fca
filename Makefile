# drsdtp: one command sets up and runs the demo, one sets up and runs everything CI runs.
#   make demo    set up (apt packages, venv, Rust build) and run the demo
#   make test    set up and run every check and test: what CI runs (`make check` is the same)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMPS  := .stamps
export PYO3_PYTHON := $(abspath $(PY))
export CARGO_TERM_COLOR := never
# The suite runs on two pytest-xdist workers: many tests wait on real processes, so two workers fill two cores
# (tests/conftest.py keeps each file, and the directories that share a build or a server, on one worker).
# PYTEST_ARGS= runs it serially.
PYTEST_ARGS ?= -n 2 --dist loadgroup

PY_SRC := drsdtp tests benches examples clients

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@need=""; \
	for pkg in mosquitto:mosquitto systemd-analyze:systemd java:openjdk-17-jre-headless chromium:chromium \
	  chromedriver:chromium-driver; do \
	  command -v "$${pkg%%:*}" >/dev/null || [ -x "/usr/sbin/$${pkg%%:*}" ] || need="$$need $${pkg#*:}"; \
	done; \
	for f in avr-gcc:gcc-avr avr-objcopy:binutils-avr avr-size:binutils-avr pkg-config:pkg-config \
	  /usr/lib/avr/include/avr/io.h:avr-libc /usr/include/simavr/sim_avr.h:libsimavr-dev /usr/include/libelf.h:libelf-dev; do \
	  command -v "$${f%%:*}" >/dev/null || [ -e "$${f%%:*}" ] || need="$$need $${f#*:}"; \
	done; \
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need="$$need postgresql"; \
	if [ -n "$$need" ]; then \
	  echo "apt-get install$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: requirements.lock | $(STAMPS)/apt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@touch $@

$(STAMPS)/build: $(STAMPS)/venv Cargo.toml Cargo.lock pyproject.toml $(shell find crdt_core/src crdt_py/src api_wire/src -name '*.rs') 
	@# Installed into the venv (editable: a .pth names this checkout), so `drsdtp` is on the venv's PATH and
	@# `import drsdtp` works from any directory, as the README's commands need.
	$(VENV)/bin/maturin develop --release -q -E all 2>&1 | grep -v '^Requirement\|^Ignoring' || true
	@cd / && $(abspath $(PY)) -c "import drsdtp._core" || { echo "native module did not build"; exit 1; }
	@test -x $(VENV)/bin/drsdtp || { echo "the drsdtp command was not installed"; exit 1; }
	@touch $@

# The runtime dependencies' wheels: the release tests install wheel and sdist into fresh venvs offline.
$(STAMPS)/wheelhouse: requirements.lock pyproject.toml | $(STAMPS)/venv
	PY=$(PY) tools/release.sh wheelhouse $@.tmp && rm -rf $@ && mv $@.tmp $@

setup: $(STAMPS)/build $(STAMPS)/wheelhouse ## install apt packages, the venv and build the native module

dist: setup ## release artifacts in dist/: wheel, sdist, the SDK's wheel, SHA256SUMS (tools/release.sh)
	PY=$(PY) tools/release.sh dist

demo: setup ## run the demo: replicas converging through a lossy, reordering network
	$(PY) -m drsdtp demo

proto: setup ## regenerate crdt_core/src/pb.rs and drsdtp/wire/ from proto/
	tools/gen_proto.sh

lint: setup ## ruff, mypy --strict, stubtest, rustfmt, clippy, proto drift
	$(VENV)/bin/ruff check $(PY_SRC)
	$(VENV)/bin/ruff format --check $(PY_SRC)
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest drsdtp._core --allowlist tests/typing/stubtest-allowlist.txt
	cargo fmt --all --check
	cargo clippy -q -p crdt_core -p crdt_py -p api_wire --all-targets -- -D warnings
	tools/gen_proto.sh --check

test-rust: ## Rust unit, property, golden-vector and bounded fuzz tests
	cargo test -q -p crdt_core -p api_wire
	crdt_core/fuzz/run.sh 30

tla: setup ## model-check tla/ with TLC
	DRSDTP_PYTHON=$(abspath $(PY)) tla/check.sh

test-python: setup ## the Python suite (real brokers, servers and node processes)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-firmware: setup ## build the sensor firmware within its budgets, its host tests and the simavr harness
	$(MAKE) -C firmware -s all test

test: lint test-rust tla test-firmware test-python ## everything CI runs
check: test ## same as test

# BENCH_ARGS: e.g. --tiny (smallest sizes, no Rust peers) or --only bench_replication (benches/run_all.py -h).
BENCH_ARGS ?=
bench: setup ## benchmarks vs their peers: the issue-13 table, also as JSON in benches/results/latest.json
	$(PY) benches/run_all.py $(BENCH_ARGS)

fmt: setup ## format Rust and Python
	cargo fmt --all
	$(VENV)/bin/ruff format $(PY_SRC)
	$(VENV)/bin/ruff check --fix $(PY_SRC)

clean: ## remove build outputs and the venv
	rm -rf target dist $(VENV) $(STAMPS) drsdtp/_core*.so

.PHONY: help setup dist demo proto lint test-rust tla test-firmware test-python test check bench fmt clean
