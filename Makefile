# Everything runs inside .venv; `make install` is a no-op when neither pyproject.toml nor constraints.txt
# has changed. constraints.txt holds this build machine's exact torch/torchvision builds (pip -c): the
# package itself asks only for torch>=2.6 (docs/installation.md).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install train test test-fast test-full test-hosts test-hydra-rc lint format tensorboard dashboard bench clean-venv

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
# The simulated-host tests (marker hosts: network namespaces, a PostgreSQL server, root only) are test-hosts';
# CI runs both. A tier is --tier (tests/conftest.py), so a -m never replaces it: MARK='not slow' or
# ARGS='-m "not slow"' narrows a tier; ARGS adds any pytest arguments (files, -k, -x).
MARK   ?=
select  = --tier=$(1)$(if $(MARK), -m "$(MARK)")

test: install
	$(PY) -m pytest -n 2 --dist loadfile $(call select,full) --durations=15 $(ARGS)

# The unit and compose tests (no CLI, training, server or subprocess; tests/conftest.py marks the others
# integration): about a minute on 2 cores. Run it while you work. No fixture of this tier trains, so its tests
# are shared out one by one (--dist worksteal), not a file at a time: test_presets.py alone is 73 s of its 99 s
# (AMD EPYC Zen 3, 2026-12-06: 65-86 s against 88-105 s by file).
FAST_DIST := --dist worksteal
test-fast: install
	$(PY) -m pytest -n 2 $(FAST_DIST) $(call select,fast) --durations=10 $(ARGS)

# ruff (lint and format) on src/, tests/ and bench/, and mypy on src/ (configs in pyproject.toml); CI runs it
# first, and .pre-commit-config.yaml on every commit. `make format` rewrites what ruff can fix itself.
LINTED := src tests bench
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

# Everything, the simulated hosts included (root).
test-full: test test-hosts

test-hosts: install
	$(PY) -m pytest -n 2 --dist loadfile $(call select,hosts) $(ARGS)

# The fast tier and a 2-trial Optuna search against Hydra's release candidates, from .venv-hydra-rc
# (tests/hydra_rc_job.py; CI runs it).
test-hydra-rc:
	$(PYTHON) tests/hydra_rc_job.py $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

# An Optuna study in optuna-dashboard: the study of a search's sweep directory (its optuna.db),
#   make dashboard SWEEP=outputs/multirun/<time>
# or any study storage, e.g. one shared by several machines (docs/scaling-out.md):
#   make dashboard STORAGE=postgresql+psycopg://user@db-host/optuna     (or journal:////shared/studies/lr_wd.journal)
SWEEP   ?=
STORAGE ?=
PORT    ?= 8080
dashboard: install
	@if [ -n "$(STORAGE)" ]; then \
		case "$(STORAGE)" in journal:///*) target="$$(echo '$(STORAGE)' | sed 's|^journal:///||')";; *) target='$(STORAGE)';; esac; \
		exec $(VENV)/bin/optuna-dashboard "$$target" --host 127.0.0.1 --port $(PORT); \
	fi; \
	test -f "$(SWEEP)/optuna.db" || { echo "error: no optuna.db in SWEEP=$(SWEEP); pass the sweep directory of an hparams_search run, or STORAGE=<url>"; exit 2; }; \
	exec $(VENV)/bin/optuna-dashboard sqlite:///$(abspath $(SWEEP))/optuna.db --host 127.0.0.1 --port $(PORT)

bench: install
	$(PY) bench/throughput.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
