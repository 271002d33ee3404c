# Two commands do all set-up: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# torch is installed only if .venv has none: a GPU user installs the CUDA build into .venv first (README).
TORCH ?= torch==2.14.1 torchvision==0.29.1
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-newest install dev data check-sync readme quality clean-venv gpu-check gpu-wheels run-lessons kaggle-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Stamps make a second `make test` reuse .venv: they are rebuilt only when settings.ini or setup.py change.
$(VENV)/.installed: $(PY) settings.ini setup.py
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# MovieLens 100k: copy the local grouplens files into fastai's data folder so untar_data finds them.
data: $(VENV)/.installed
	$(PY) -c "from paddy_collab.core import install_ml100k; install_ml100k()"

# Notebooks are the source: exporting must not change the package, cleaning must not change the notebooks.
check-sync: dev
	@snap() { git status --porcelain -- paddy_collab nbs; git diff -- paddy_collab nbs | md5sum; }; \
	before=$$(snap); $(BIN)/nbdev_export; $(BIN)/nbdev_clean; after=$$(snap); \
	if [ "$$before" != "$$after" ]; then echo "!! nbdev_export/nbdev_clean changed files: run them and commit"; git status --short -- paddy_collab nbs; exit 1; fi; \
	echo "notebooks and package are in sync; notebooks are clean"

test: check-sync data
	$(BIN)/python -m pytest tests -q -rs --durations=15 $(PYTEST_ARGS)

# The Kaggle-like Python 3.12 venv tests/test_sandbox.py runs kernels on (torch, fastai, timm, kaggle, nbdev as pip resolves them):
# built once per machine into ~/.cache/paddy_collab (PADDY_KAGGLE_VENV_CACHE), about 4 min and 6.3 GB cold, under 1 s after.
# Without a Python 3.12 it says so and the sandbox test skips.
kaggle-venv: dev
	$(PY) tests/test_sandbox.py --build

# The package against the newest fastai/fastcore/timm that pip resolves within settings.ini's ranges (fastcore<2, as on a Kaggle image), without nbdev
# (nbdev 2 needs fastcore<2): a second venv, and the tests that do not run notebooks.
NEWEST ?= .venv-newest
NEWEST_TESTS ?= tests/test_foundation.py tests/test_xent.py tests/test_paddy_data.py tests/test_multitarget.py \
	tests/test_gradacc.py tests/test_ensemble.py tests/test_fastcollab.py tests/test_collab.py tests/test_kaggle.py tests/test_kernels.py tests/test_datasets.py
$(NEWEST)/.installed: settings.ini setup.py
	test -x $(NEWEST)/bin/python || $(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python -c "import torch, torchvision" 2>/dev/null || $(NEWEST)/bin/python -m pip install -q $(TORCH)
	$(NEWEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e . pytest
	touch $@

test-newest: $(NEWEST)/.installed data
	$(NEWEST)/bin/python -c "import fastai, fastcore, timm; print('newest stack: fastai', fastai.__version__, 'fastcore', fastcore.__version__, 'timm', timm.__version__)"
	$(NEWEST)/bin/python -m pytest $(NEWEST_TESTS) -q -rs -p no:cacheprovider

# README.md is index.ipynb rendered offline (nbdev_readme needs Quarto, which cannot be installed everywhere).
readme: dev
	$(BIN)/jupyter nbconvert --to markdown --stdout nbs/index.ipynb > README.md.tmp && mv README.md.tmp README.md

demo: install data
	$(BIN)/paddy_collab demo --out outputs/demo --force

# The best collab model on both protocols: search, pick and 3 seeds (about 9 CPU minutes each, one thread; 25 min wall here); writes benchmarks/results/collab_quality.md, shown in README.md.
quality: install data
	$(BIN)/python benchmarks/collab_quality.py

# Run All of every lesson notebook, as Jupyter does (every cell, test flags ignored): each one's minutes and peak memory.
run-lessons: dev data
	$(PY) benchmarks/run_lessons.py $(LESSONS)

# Every CUDA path once, with figures (benchmarks/gpu_check.py): one line and exit 0 without a GPU;
# GPU_CHECK_DRY=1 runs it at tiny size on the CPU. Uses .venv's python if there is one, else python3 (a GPU image).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	@$(GPU_PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# The wheels a GPU image with torch/timm/accelerate/pandas/matplotlib but no fastai or nbdev lacks, for python 3.12,
# into .whl/ (git-ignored; carried to the GPU machine, installed there by gpu_check.py's bootstrap without network).
WHEEL_PY ?= 3.12
gpu-wheels: dev
	$(PY) benchmarks/gpu/wheels.py --dest .whl --python-version $(WHEEL_PY)

clean-venv:
	rm -rf $(VENV) $(NEWEST)
