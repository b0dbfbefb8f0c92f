# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# tensorflow-serving-api declares a dependency on the full `tensorflow` wheel; we run on
# tensorflow-cpu, so it is installed without dependencies (its grpcio/protobuf are in the lock).
SERVING_API := tensorflow-serving-api==2.21.0
# pyradiomics 3.0.1 (IBSI radiomics) is published as source only and its setup.py imports
# numpy, so it is built against the numpy of the lock (--no-build-isolation, after
# requirements.txt; its dependencies PyWavelets, pykwalify, six are in the lock).
PYRADIOMICS := pyradiomics==3.0.1

.PHONY: install system-deps demo test test-fast bench clean

$(STAMP): setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps $(SERVING_API)
	$(PY) -m pip install -q --no-build-isolation --no-deps $(PYRADIOMICS)
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Debian packages for the browser, PACS and DICOM-validation tests (root; CI runs it).
system-deps:
	bash tools/system_deps.sh

## Main job on the embedded default data (synthetic cohort; SPIDER too when ../shared exists).
demo: $(STAMP)
	$(PY) -m spoils_tf.cli demo --out runs/demo

## Whole test suite (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q tests datasets

## Skip tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests datasets

## SPIDER slices, folds and Keras wheels for the lent GPU machine's JAX run (tools/gpu_run.sh)
## into .gpu_pack/ (ignored; <= 50 MiB); skipped with a message without ../shared.
.PHONY: gpu-pack
gpu-pack: $(STAMP)
	$(PY) tools/gpu_pack.py --out .gpu_pack

clean:
	rm -rf runs .pytest_cache
