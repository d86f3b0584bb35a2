# The two commands: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Triton's own environment: nvidia-pytriton (the tritonserver binary) needs numpy<2, sluice
# numpy 2, so the local Triton server runs from a second venv (serving/triton_server.py)
TRITON_VENV  := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
TRITON_PKGS  := nvidia-pytriton==0.7.0 'numpy<2' torch==2.13.0

.PHONY: run examples test lint bench clean triton-env

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(TRITON_STAMP): Makefile
	@test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install --quiet $(TRITON_PKGS)
	@touch $(TRITON_STAMP)

triton-env: $(TRITON_STAMP)  ## the environment local Triton servers run from

# the main job: the card-fraud pipeline end to end (functions/pipeline.yaml); ARGS=--once exits
run: $(STAMP)  ## the embedded platform with the demo pipeline, end to end
	$(PY) -m sluice.functions.demo $(ARGS)

examples: $(STAMP)  ## start the platform with the example functions deployed
	$(VENV)/bin/sluice up --deploy examples/ --deploy examples/nuclio/function.yaml \
		--deploy examples/jobs/report.yaml

test: $(STAMP) $(TRITON_STAMP)  ## lint, type-check and run the whole suite
	$(VENV)/bin/ruff check runtime triggers serving functions manifests tests bench examples
	$(VENV)/bin/mypy runtime triggers serving functions manifests
	$(PY) -m pytest

bench: $(STAMP) $(TRITON_STAMP)  ## HTTP overhead, cold start, cron, model-serving batching (needs wrk)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) bench/http_overhead.py
	$(PY) bench/cold_start.py
	$(PY) bench/cron_accuracy.py
	$(PY) bench/serving_batching.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) build *.egg-info
