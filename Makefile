# Quick start: `make run` (the main job) and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first: on CPU machines 2.13.0 resolves to the CPU wheel on disk, so no later install pulls CUDA wheels.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run demo test test-gpu test-kernels lint format bench bench-kernels clean

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m sovit_hf train

demo: install
	$(PY) -m sovit_hf demo

test: install
	$(PY) -m pytest -q -m "not gpu"

test-gpu: install
	$(PY) -m pytest -q -m gpu

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) benchmarks/cpu_sovit_vs_siglip.py

bench-kernels: install
	$(PY) benchmarks/bench_kernels.py

test-kernels: install
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests/kernels tests/convergence

clean:
	rm -rf $(VENV) build *.egg-info

bench-throughput: install
	$(PY) benchmarks/throughput.py
