# Two commands do all set-up: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# torch comes from this machine's wheel cache; a GPU user may install the CUDA build first (README).
TORCH ?= torch==2.14.1 torchvision==0.29.1
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: demo test install dev data check-sync nbtest pytest clean-venv newest

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Stamps make a second `make test` reuse .venv: they are rebuilt only when settings.ini or setup.py change.
$(VENV)/.installed: $(PY) settings.ini setup.py
	$(PY) -m pip install -q $(TORCH)
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
	@before=$$(git status --porcelain -- paddy_collab nbs); \
	$(BIN)/nbdev_export; $(BIN)/nbdev_clean; \
	after=$$(git status --porcelain -- paddy_collab nbs); \
	if [ "$$before" != "$$after" ]; then echo "!! nbdev_export/nbdev_clean changed files: run them and commit"; git status --short -- paddy_collab nbs; exit 1; fi; \
	echo "notebooks and package are in sync; notebooks are clean"

test: check-sync data
	$(BIN)/python -m pytest tests -q -rs $(PYTEST_ARGS)

demo: install data
	$(BIN)/python -m paddy_collab.demo

clean-venv:
	rm -rf $(VENV)
