# `make train` and `make test` set up .venv (again only when pyproject.toml changed) and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: train test bench reproduce lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

train: $(VENV)/.installed  ## the default run: the report's MNIST autoencoder
	$(BIN)/python -m recursive_ae_gan.train $(ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check recursive_ae_gan tests

clean:
	rm -rf $(VENV)
