# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   - install, then run the pipeline on the sample corpus with the offline simulated rater
#   make test   - install, then lint (ruff), type-check (mypy) and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/orthoselect demo demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_rating.py
	$(BIN)/python bench/bench_select.py --docs 1000000 --shards 20
	$(BIN)/python bench/bench_orchestration.py --shards 200 --docs-per-shard 100 1000 --max-tasks 8 --repeat 3
	$(BIN)/python bench/bench_llm_layer.py
	$(BIN)/python bench/bench_choosers.py --out bench/RESULTS_choosers.md
	$(BIN)/python bench/bench_kill.py --kills 20 --out bench/RESULTS_kill.md

clean:
	rm -rf $(VENV) demo runs *.egg-info
