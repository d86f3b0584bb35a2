# The two commands: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)  ## start the embedded platform with the example functions deployed
	$(VENV)/bin/sluice up --deploy examples/ --deploy examples/nuclio/function.yaml \
		--deploy examples/jobs/report.yaml

test: $(STAMP)  ## lint, type-check and run the whole suite
	$(VENV)/bin/ruff check runtime triggers serving tests bench examples
	$(VENV)/bin/mypy runtime triggers serving
	$(PY) -m pytest

bench: $(STAMP)  ## HTTP overhead, cold-start and cron/run-start benchmarks (needs wrk)
	$(PY) bench/http_overhead.py
	$(PY) bench/cold_start.py
	$(PY) bench/cron_accuracy.py

clean:
	rm -rf $(VENV) build *.egg-info
