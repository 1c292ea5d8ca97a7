# The two commands a new user needs: `make demo` and `make test`. Both build .venv/ at the root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint venv venv-test migrate serve clean bench bench-instructions chaos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e .

venv-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

demo: venv
	$(BIN)/lipameter demo

migrate: venv
	$(BIN)/lipameter migrate

serve: venv
	$(BIN)/lipameter serve

# The build fails on a lint finding, a broken import contract or a type error in core/, before any test runs.
lint: venv-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/mypy

# Three test processes (pytest-xdist), each file kept whole on one (its module fixtures are set up once):
# most tests wait on servers, subprocesses and the databases, so three beat the two cores' two (~5 min
# against ~15 one at a time). TEST_PROCESSES=0 runs them in this process, for a debugger.
TEST_PROCESSES ?= 3
test: lint
	$(BIN)/pytest -q -n $(TEST_PROCESSES) --dist loadfile

bench: venv-test
	$(BIN)/python -m bench.run

# Instructions per USSD hop under callgrind (needs valgrind): repeatable where `make bench`'s ratios drift.
bench-instructions: venv-test
	$(BIN)/python -m bench.instructions

# The storm: a private PostgreSQL restarted mid-run, two replicas, two workers killed, callbacks dropped,
# duplicated and shuffled, Tuya faults; ends with `lipameter audit` clean and one summary line (~5 minutes).
chaos: venv-test
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache .import_linter_cache lipameter.db lipameter.db-wal lipameter.db-shm
