# `make run` and `make test` create .venv when it is missing and install noisybench into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.noisybench-installed

.PHONY: install run test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: the quickstart sweep on the embedded digits dataset (no download), ending with
# its leaderboard in multirun/quickstart/.
run: install
	$(PY) -m noisybench --multirun experiment=quickstart

test: install
	$(PY) -m pytest -q

# The suite without the end-to-end training runs.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) scripts/bench_loss_steps.py
	$(PY) scripts/bench_trainer.py
	$(PY) scripts/bench_leaderboard.py

clean:
	rm -rf outputs multirun .pytest_cache
