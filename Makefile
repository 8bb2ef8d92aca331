# modeldeploy: every target is idempotent and installs what it needs on a fresh machine.
# The work is done by scripts under hack/; these targets are thin wrappers.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help setup images control-plane cluster cluster-down test lint unit integration crds bench bench-quick bench-quality bench-operator bench-node bench-hardening bench-shadow bench-traffic demo clean

help:
	@echo "make demo          the main job, end to end: chart, operator, a model served, a canary promoted"
	@echo "make test          lint and every test (unit and integration, against a real control plane)"
	@echo "make setup         .venv with modeldeploy installed editable, all extras"
	@echo "make images        build the server, operator and pause images (podman; cached, no registry)"
	@echo "make cluster       start the local cluster with its real node (.cluster/kubeconfig, .cluster/bin/)"
	@echo "make cluster-down  stop it and remove its state"
	@echo "make crds          regenerate the CRD from the pydantic models"
	@echo "make bench         the side-by-side serving benchmark (benchmarks/RESULTS.md, ~30 min)"
	@echo "make bench-quick   a ~3 min smoke run of the same"
	@echo "make bench-quality the cost of input checks against a training profile (~3 min)"
	@echo "make bench-operator 500 ModelDeployments at once, beside the bare-script limit (~5 min)"
	@echo "make bench-traffic  the canary split and zero-loss rollouts through the gateway and the Service (~15 min)"
	@echo "make bench-hardening the server and fetch under hostile loads, beside the code before (~10 min)"
	@echo "make bench-shadow  client latency of the stable server with shadow mirroring off and on (~5 min)"

setup: $(STAMP)

$(STAMP): pyproject.toml hack/setup.sh
	bash hack/setup.sh $(PYTHON) $(VENV)
	@touch $@

# Prints the index lines (SERVER_IMAGE=..., SERVER_ARCHIVE=...); the index file is at
# `hack/build-images.sh --print-index`.
images: setup control-plane
	bash hack/build-images.sh

control-plane:
	bash hack/build-control-plane.sh >/dev/null
	bash hack/fetch-gateway-api.sh >/dev/null

cluster: setup control-plane images
	$(PY) -m modeldeploy_dev.cluster up

cluster-down: setup
	$(PY) -m modeldeploy_dev.cluster down

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: setup
	$(VENV)/bin/pytest tests/unit

integration: setup control-plane images
	$(VENV)/bin/pytest -m integration tests

test: setup control-plane images
	$(MAKE) --no-print-directory lint
	$(VENV)/bin/pytest tests

crds: setup
	$(PY) hack/generate_crds.py

bench: setup
	bash benchmarks/run.sh

bench-quick: setup
	BENCH_QUICK=1 bash benchmarks/run.sh

bench-quality: setup
	$(PY) benchmarks/quality_bench.py

bench-hardening: setup
	$(PY) benchmarks/hardening.py --baseline $${BASELINE:-f333a27} --rounds 5

# Loopback only, no cluster: a stable server mirroring to a healthy, a never-answering and a
# dead canary, beside mirroring off.
bench-shadow: setup
	$(PY) benchmarks/shadow_bench.py

bench-operator: setup control-plane
	$(PY) benchmarks/operator_scale.py --count 500 --rest-seconds 60

# Needs a running `make cluster` (its real node): apply -> first prediction, model change ->
# first canary pod Ready.
bench-node: setup
	PYTHONPATH=. $(PY) benchmarks/node_timings.py --rounds 3

# Needs a running `make cluster` (its real node and gateway): the canary's share at each weight
# through the gateway and the Service, and client requests during rollouts (~15 min).
bench-traffic: setup
	rm -f .traffic-records.jsonl
	MODELDEPLOY_TRAFFIC_RECORD=$(CURDIR)/.traffic-records.jsonl $(VENV)/bin/pytest -m integration -q tests/integration/node/test_traffic.py tests/integration/node/test_autoscaling.py
	$(PY) benchmarks/traffic_report.py .traffic-records.jsonl > benchmarks/TRAFFIC_RESULTS.md
	rm -f .traffic-records.jsonl

# Reuses a running `make cluster`, else starts a private control plane and stops it at the end.
demo: setup control-plane images
	$(PY) -m modeldeploy_dev.demo

clean: cluster-down
	rm -rf $(VENV)
