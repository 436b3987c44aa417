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

.PHONY: install demo test test-fast clean

install: $(STAMP)

# torch goes in first and pinned: torch==2.13.0 is the CPU build on this kind of
# machine; an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tuneline run examples/demo.yaml

test: $(STAMP)
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
