# One place for every command. `make install` once, then `make run` or `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

PROTO_SRC := $(wildcard proto/hpcgate/v1/*.proto)
GEN_DIR := clients/hpcgate/v1

.PHONY: install dist breaking proto proto-check lint test test-fast run fleet stop bench bench-instructions cluster cluster-stop clean

install: $(VENV)/.installed

# The three distributions (clients/, server/, edge/) and the Snakemake
# executor plugin (clients/snakemake-executor-plugin-hpcgate) editable, and the
# workspace's dev tooling; pip resolves hpcgate-server's and hpcgate-edge's
# `hpcgate==` requirement to the editable clients/ in the same run.
$(VENV)/.installed: pyproject.toml clients/pyproject.toml server/pyproject.toml edge/pyproject.toml clients/snakemake-executor-plugin-hpcgate/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./clients -e ./server -e ./edge \
	  -e ./clients/snakemake-executor-plugin-hpcgate -e '.[dev]'
	touch $@

# The three wheels (hpcgate, hpcgate-server, hpcgate-edge) and the Snakemake
# plugin's (snakemake-executor-plugin-hpcgate) into dist/.
dist: install
	rm -rf dist
	for part in clients server edge clients/snakemake-executor-plugin-hpcgate; do \
	  $(PY) -m build -q --wheel --outdir dist $$part || exit 1; done

# Generate the Python stubs (+ .pyi typing stubs and a descriptor set with
# comments, which the edge reads for its OpenAPI descriptions).
proto: install
	rm -f $(GEN_DIR)/*_pb2*.py $(GEN_DIR)/*_pb2*.pyi $(GEN_DIR)/hpcgate.binpb
	$(PY) -m grpc_tools.protoc -Iproto -Ithird_party/googleapis \
	  --python_out=clients --grpc_python_out=clients \
	  --mypy_out=quiet:clients --mypy_grpc_out=generate_concrete_servicer_stubs,quiet:clients \
	  --include_imports --include_source_info \
	  --descriptor_set_out=$(GEN_DIR)/hpcgate.binpb \
	  $(PROTO_SRC)

# CI fails when the committed stubs differ from what `make proto` makes.
proto-check: proto
	@git diff --exit-code --stat -- $(GEN_DIR) || { echo "generated stubs are stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- $(GEN_DIR))" || { git status --porcelain -- $(GEN_DIR); echo "untracked generated files: run 'make proto' and commit"; exit 1; }

lint: install breaking
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The contracts stay backward compatible (wire and JSON) with the last
# release: the newest v* tag, or, before the first, where this branch left
# main. It would have caught 2007057 renaming TransferDownloadRequest's field
# 2 from `path` to `source_path` (JSON names are part of the contract).
BREAKING_AGAINST ?= $(shell git describe --tags --abbrev=0 --match 'v*' 2>/dev/null || git merge-base HEAD main 2>/dev/null || git merge-base HEAD origin/main 2>/dev/null)
breaking: install
	@test -n "$(BREAKING_AGAINST)" || { echo "breaking: no release (v* tag) or main to compare with"; exit 1; }
	$(BIN)/buf breaking --against '.git#ref=$(BREAKING_AGAINST)'

# The whole suite: lint, stale-stub check, unit and integration tests (the
# integration tests start the loopback cluster themselves).
test: lint proto-check
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not cluster"

cluster: install
	$(PY) dev/cluster/cluster.py start

cluster-stop:
	$(PY) dev/cluster/cluster.py stop

run: install
	$(PY) dev/run.py start

# The service as a fleet: 3 server replicas on Redis, 2 edges, nginx in front.
fleet: install
	$(PY) dev/fleet.py start

stop:
	-$(PY) dev/fleet.py stop
	-$(PY) dev/run.py stop
	-$(PY) dev/cluster/cluster.py stop

# Benchmarks: starts the cluster and its own server, edge and echo server on
# free ports (a running `make run` is left alone), runs every scenario, prints
# the table and writes bench/results/<date>.json. Exits non-zero only when a
# scenario fails or returns wrong bytes. BENCH_ARGS="--only load --reps 3".
bench: install
	$(PY) -m bench $(BENCH_ARGS)

# Instructions per request of the server and the edge (callgrind): repeatable
# on a noisy machine, for before/after comparisons. See bench/instructions.py.
bench-instructions: install
	$(PY) bench/instructions.py $(BENCH_ARGS)

clean:
	rm -rf dist .hpcgate .pytest_cache .mypy_cache .ruff_cache
