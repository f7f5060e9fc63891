# Quick start: `make run` (the main job) and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first: on CPU machines 2.13.0 resolves to the CPU wheel on disk, so no later install pulls CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
# Known-good versions of every dependency (`make lock` refreshes them from the newest-versions venv).
LOCK ?= constraints.txt
VERSIONS := -c "import importlib.metadata as m; print('versions:', ', '.join(f'{p} {m.version(p)}' for p in \
	('torch', 'transformers', 'huggingface_hub', 'accelerate', 'triton', 'numpy', 'scipy', 'safetensors')))"

.PHONY: install run demo test test-latest transformers-tests test-compat test-gpu test-kernels lint lock format bench bench-kernels \
	bench-throughput gpu-check gpu-check-dry clean

$(VENV)/.installed: setup.py $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m sovit_hf train

demo: install
	$(PY) -m sovit_hf demo

# Every optional dependency is installed here, so no test may skip for want of one (tests/conftest.py: needs).
test: install
	@$(PY) $(VERSIONS)
	$(MAKE) --no-print-directory transformers-tests TESTS_PY=$(PY)
	SOVIT_HF_TEST_ALL_OPTIONAL=1 $(PY) -m pytest -q -m "not gpu"

# transformers' own common test mixins (tests/ecosystem/test_transformers_mixins.py) come from its source distribution,
# which matches the installed transformers: fetched once per version into .cache/transformers-tests (the sdist's tests/).
TESTS_PY ?= $(PY)
transformers-tests:
	@version=$$($(TESTS_PY) -c "import transformers; print(transformers.__version__)"); \
	target=.cache/transformers-tests/transformers-$$version; \
	if [ ! -f $$target/tests/test_modeling_common.py ]; then \
		mkdir -p .cache/transformers-tests && tmp=$$(mktemp -d .cache/transformers-tests/fetch.XXXXXX) && \
		$(TESTS_PY) -m pip download -q --no-deps --no-binary :all: "transformers==$$version" -d $$tmp && \
		tar -xzf $$tmp/transformers-$$version.tar.gz -C $$tmp "transformers-$$version/tests" && \
		rm -rf $$target && mv $$tmp/transformers-$$version $$target && rm -rf $$tmp; \
	fi

# The wheel-install test (tests/test_install.py) installs with the lock whatever venv runs it, so only `make test` runs
# it. The newest versions the registry resolves today (no lock): what a user who runs `pip install sovit_hf` gets.
# Rebuilt on every run so that a release that came out since the last one is tested (pip's wheel cache is shared
# with the other venvs, so only new releases are downloaded).
LATEST_VENV ?= .venv-latest
LATEST_PY := $(LATEST_VENV)/bin/python

test-latest:
	test -x $(LATEST_PY) || python3 -m venv $(LATEST_VENV)
	$(LATEST_PY) -m pip install -q --upgrade pip
	$(LATEST_PY) -c "import torch" 2>/dev/null || $(LATEST_PY) -m pip install -q "$(TORCH_SPEC)"
	$(LATEST_PY) -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
	@$(LATEST_PY) $(VERSIONS)
	$(MAKE) --no-print-directory transformers-tests TESTS_PY=$(LATEST_PY)
	SOVIT_HF_TEST_ALL_OPTIONAL=1 $(LATEST_PY) -m pytest -q -m "not gpu and not install" -p no:cacheprovider

# Write the newest-versions venv's packages as the new lock (run after `make test-latest` passed).
lock:
	{ sed -n '1,2p' $(LOCK); $(LATEST_PY) -m pip freeze --exclude-editable | grep -v '^sovit' | sed 's/+cpu$$//'; } \
		> $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)

# The oldest supported library versions (transformers 5.17, huggingface_hub 1.33, triton 3.6, no datasets / evaluate)
# with sovit_hf installed --no-deps, as on a GPU machine set up without the extras: import and every test that does not
# need a missing optional package.
COMPAT_VENV ?= .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_SPEC ?= transformers==5.17.0 huggingface_hub==1.33.0 triton==3.6.0 accelerate safetensors scipy pillow tqdm \
	tokenizers numpy packaging pytest

$(COMPAT_VENV)/.installed: setup.py
	test -x $(COMPAT_PY) || python3 -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --upgrade pip
	$(COMPAT_PY) -c "import torch" 2>/dev/null || $(COMPAT_PY) -m pip install -q "$(TORCH_SPEC)"
	$(COMPAT_PY) -m pip install -q $(COMPAT_SPEC)
	$(COMPAT_PY) -m pip install -q --no-deps -e .
	touch $@

test-compat: $(COMPAT_VENV)/.installed
	@$(COMPAT_PY) $(VERSIONS)
	$(COMPAT_PY) -c "import sys, sovit_hf, sovit_hf.conversion.hf_siglip; extra = {'datasets', 'evaluate'} & set(sys.modules); \
		sys.exit(f'import sovit_hf imported {extra}') if extra else print('import sovit_hf: no datasets/evaluate')"
	$(COMPAT_PY) -m pytest -q -m "not gpu and not install" -p no:cacheprovider

test-gpu: install
	$(PY) -m pytest -q -m gpu

# The whole GPU check in at most 8 minutes (gpu_check/run.sh): on a GPU machine without a package registry, run
# `bash gpu_check/run.sh OUT` directly (no venv, PYTHONPATH only); here it uses this repository's venv.
OUT ?= /tmp/sovit_hf_gpu_check
gpu-check: install
	PYTHON=$(PY) bash gpu_check/run.sh $(OUT)

gpu-check-dry: install
	PYTHON=$(PY) bash gpu_check/run.sh --dry $(OUT)

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
	rm -rf $(VENV) $(COMPAT_VENV) $(LATEST_VENV) build *.egg-info

bench-throughput: install
	$(PY) benchmarks/throughput.py
