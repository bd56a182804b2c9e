# Two commands for a new user:
#   make train   set up a virtual environment and fine-tune GPT-2 on the SMS Spam Collection
#   make test    set up the same environment and run the checks and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned so that pip takes the CPU build where one is provided locally; any torch >= 2.2 works.
TORCH ?= torch==2.13.0
# The onnxruntime build (the `cpu` or `gpu` extra; both provide the one `onnxruntime` module, so a
# venv holds one of them): onnxruntime-gpu on Linux x86-64, where it is published and also runs on
# the CPU (the --gpu tests expect its CUDA provider), the CPU build elsewhere. ONNXRUNTIME=cpu for
# the small one.
ONNXRUNTIME ?= $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),gpu,cpu)
OTHER_ONNXRUNTIME := $(if $(filter gpu,$(ONNXRUNTIME)),onnxruntime,onnxruntime-gpu)
TRAIN_ARGS ?=

.PHONY: install train test lint typecheck clean

# The stamp names the build, so that switching ONNXRUNTIME reinstalls. The other build is removed
# before this one is installed: removing it afterwards would delete files the two share.
$(VENV)/.installed-$(ONNXRUNTIME): pyproject.toml
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip uninstall --quiet --quiet --yes $(OTHER_ONNXRUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[$(ONNXRUNTIME),train,test]'
	touch $@

install: $(VENV)/.installed-$(ONNXRUNTIME)

train: install
	$(BIN)/spamfilter train $(TRAIN_ARGS)

lint: install
	$(BIN)/ruff check spamfilter tests benchmarks
	$(BIN)/ruff format --check spamfilter tests benchmarks

typecheck: install
	$(BIN)/mypy spamfilter benchmarks

test: lint typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
