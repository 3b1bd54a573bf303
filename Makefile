# Everything runs inside .venv; `make install` is a no-op when neither pyproject.toml nor constraints.txt
# has changed. constraints.txt holds this build machine's exact torch/torchvision builds (pip -c): the
# package itself asks only for torch>=2.6 (docs/installation.md).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install train test tensorboard dashboard bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -c constraints.txt -e '.[dev,sweeps,tracking,demo]'
	touch $(STAMP)

# Default run: TinyVGG, no augmentation, AdamW lr 1e-3 with a cosine schedule, 10 epochs (see conf/config.yaml).
train: install
	$(PY) -m fmnist_lightning $(ARGS)

# Two workers (one torch thread each), a test file per worker at a time, so session fixtures that train run once.
test: install
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

# The Optuna study of a search (hparams_search=...) in optuna-dashboard: make dashboard SWEEP=outputs/multirun/<time>
SWEEP ?=
PORT  ?= 8080
dashboard: install
	@test -f "$(SWEEP)/optuna.db" || { echo "error: no optuna.db in SWEEP=$(SWEEP); pass the sweep directory of an hparams_search run"; exit 2; }
	$(VENV)/bin/optuna-dashboard sqlite:///$(abspath $(SWEEP))/optuna.db --host 127.0.0.1 --port $(PORT)

bench: install
	$(PY) bench/throughput.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
