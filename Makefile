# Two commands for a new user:
#   make train   set up a virtual environment and fine-tune GPT-2 on the SMS Spam Collection
#   make test    set up the same environment and run the checks and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned so that pip takes the CPU build where one is provided locally; any torch >= 2.2 works.
TORCH ?= torch==2.13.0
TRAIN_ARGS ?=

.PHONY: install train test lint typecheck clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

train: install
	$(BIN)/spamfilter train $(TRAIN_ARGS)

lint: install
	$(BIN)/ruff check spamfilter tests benchmarks
	$(BIN)/ruff format --check spamfilter tests benchmarks

typecheck: install
	$(BIN)/mypy spamfilter

test: lint typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
