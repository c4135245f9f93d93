# One-command set-up: every target creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
export RAY_DATA_DISABLE_PROGRESS_BARS ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
# torch on 2 shared cores: spinning OpenMP threads slow everything ~10x when Ray workers are busy.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-fast test-elastic lint demo bench gpu-check clean

$(STAMP): pyproject.toml
	@start=$$(date +%s); \
	test -d $(VENV) || $(PY) -m venv $(VENV); \
	$(BIN)/pip install -q --upgrade pip; \
	$(BIN)/pip install -q torch==$(TORCH_VERSION); \
	$(BIN)/pip install -q -e '.[dev]'; \
	touch $(STAMP); \
	echo "install: $$(( $$(date +%s) - start )) s"

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -ra --durations=15

# Elastic training on a local two-node cluster that loses and regains a node; kept out of make test
# for its length (the last passing run took 482 s on 2 cores, 3 December 2026). It writes the run's timeline to
# timeline.txt in its tmp dir and to $POSE3D_ELASTIC_TIMELINE when set (docs/design.md, Elastic training).
test-elastic: $(STAMP)
	$(BIN)/python -m pytest -q -ra -s -m elastic tests/infra/test_elastic.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow and not cluster"

demo: $(STAMP)
	$(BIN)/pose3d demo --out demo_out

bench: $(STAMP)
	$(BIN)/pose3d bench loss
	$(BIN)/pose3d bench model
	$(BIN)/pose3d bench train

# GPU self-check (< 5 min on one GPU): the paper model through Ray Train + Ray Data with bf16,
# channels_last and compile; img/s, MFU, data wait, peak memory. Without a GPU: "skipped: no GPU".
gpu-check: $(STAMP)
	$(BIN)/pose3d bench gpu-check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
