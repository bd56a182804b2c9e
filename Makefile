# Two commands for a new user:
#   make train   check the data and weights, set up a virtual environment with what training needs,
#                and fine-tune GPT-2 on the SMS Spam Collection
#   make test    set up the environment with everything and run the checks and the test suite
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
OTHER_BUILD := $(if $(filter gpu,$(ONNXRUNTIME)),cpu,gpu)
comma := ,
TRAIN_ARGS ?=

.PHONY: install install-train train train-inputs test lint typecheck clean

# Two installs into one venv: `train` (torch, the train extra and an onnxruntime: what `spamfilter
# train` and its export need) and `test` (that plus the test extra: pytest, mypy, ruff, transformers,
# Ray, ...). The stamp names the build, so that switching ONNXRUNTIME reinstalls; the test install
# stamps both, as it holds the train one. The other onnxruntime build is removed before this one is
# installed: removing it afterwards would delete files the two share. $(1): the extras besides it.
define install_venv
	rm -f $(VENV)/.installed-$(OTHER_BUILD) $(VENV)/.installed-$(OTHER_BUILD)-train
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip uninstall --quiet --quiet --yes $(OTHER_ONNXRUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[$(ONNXRUNTIME),$(1)]'
endef

$(VENV)/.installed-$(ONNXRUNTIME): pyproject.toml
	$(call install_venv,train$(comma)test)
	touch $(VENV)/.installed-$(ONNXRUNTIME)-train $@

$(VENV)/.installed-$(ONNXRUNTIME)-train: pyproject.toml
	$(call install_venv,train)
	touch $@

install: $(VENV)/.installed-$(ONNXRUNTIME)

install-train: $(VENV)/.installed-$(ONNXRUNTIME)-train

# The data and the GPT-2 weights that `spamfilter train TRAIN_ARGS` reads, checked with the system
# Python (standard library only) before anything is installed: offline, every missing one is named
# at once, with how to get it, instead of after a download of torch.
train-inputs:
	PYTHONPATH=. $(PYTHON) -m spamfilter.train_inputs $(TRAIN_ARGS)

train: train-inputs
	$(MAKE) --no-print-directory install-train
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
