# Two commands on a fresh machine:  `make train`  and  `make test`.
# Both create and fill a local virtual environment first (.venv), once.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ALGO ?= ppo

.PHONY: setup train test benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) scripts/train.py --algo $(ALGO)

test: setup
	$(PY) -m pytest

benchmark: setup
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache
