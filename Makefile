# `make train` and `make test` set up .venv (again only when pyproject.toml or setup.py changed) and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
EXPERIMENTS ?= mnist_ae,cifar10_ae,cifar10_rae,mnist_ae_gan,cifar10_ae_gan,cifar10_rae_gan
SWEEP_DIR ?= outputs/reproduce/$(shell date +%Y-%m-%d_%H-%M-%S)
# A study is conf/experiment/study_*.yaml; its directory is fixed, so `make study` again continues it.
STUDY ?= study_mnist
STUDY_DIR ?= outputs/study/$(STUDY)

.PHONY: train test bench gpu-check reproduce study lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,sweep,mlflow,wandb,fid]' optuna-dashboard  # CI runs every extra's tests
	$(BIN)/pip check  # the extras and the dashboard users add beside them agree (docs/scaling.md, "Optuna")
	touch $@

train: $(VENV)/.installed  ## the default run: the report's MNIST autoencoder
	$(BIN)/python -m recursive_ae_gan.train $(ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10 $(ARGS)  # two workers (CI has two cores), a file's tests on one

bench: $(VENV)/.installed  ## framework vs plain PyTorch throughput (docs/benchmarks.md)
	$(BIN)/python -m recursive_ae_gan.bench $(ARGS)

gpu-check: $(VENV)/.installed  ## a lent GPU end to end in < 8 min, one markdown report; ARGS=--quick: on the CPU
	$(BIN)/python -m recursive_ae_gan.gpu_check $(ARGS)

reproduce: $(VENV)/.installed  ## the report's experiments as one multirun, then the results table
	$(BIN)/python -m recursive_ae_gan.train -m experiment=$(EXPERIMENTS) hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)
	$(BIN)/python -m recursive_ae_gan.report $(SWEEP_DIR)

study: $(VENV)/.installed  ## AE, RAE, AE+GAN, RAE+GAN over seeds on one protocol, then the report (intervals, differences)
	$(BIN)/python -m recursive_ae_gan.train -m experiment=$(STUDY) hydra.sweep.dir=$(STUDY_DIR) $(ARGS); \
	status=$$?; $(BIN)/python -m recursive_ae_gan.report $(STUDY_DIR) && exit $$status  # a failed job still gets its report

lint: $(VENV)/.installed
	$(BIN)/ruff check recursive_ae_gan tests

clean:
	rm -rf $(VENV)
