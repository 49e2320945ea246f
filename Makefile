# Two commands do everything on a fresh machine that has Python 3.10+:
#   make quickstart   - install, then run the whole pipeline on a generated kitchen (no downloads)
#   make test         - install, then run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QUICKSTART_OUT ?= quickstart_output
QUICKSTART_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install quickstart test test-fast lint format clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

quickstart: install
	WANDB_MODE=offline $(VENV)/bin/rulstm-quickstart --out $(QUICKSTART_OUT) $(QUICKSTART_ARGS)

test: install
	WANDB_MODE=disabled $(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-fast: install
	WANDB_MODE=disabled $(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(QUICKSTART_OUT) runs lightning_logs wandb .pytest_cache
