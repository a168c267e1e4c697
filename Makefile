# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-versions sysdeps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

sysdeps:
	@scripts/install-system-deps

run: $(STAMP) sysdeps
	$(BIN)/netsonde run $(if $(CONFIG),--config $(CONFIG))

test: $(STAMP) sysdeps lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) sysdeps
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/status.py --links 10000 --rounds 1000
	$(BIN)/python bench/spool.py --write BENCHMARKS.md
	$(BIN)/python bench/icmp.py --write

bench-versions: $(STAMP) sysdeps ; $(BIN)/python bench/versions.py --write BENCHMARKS.md

clean:
	rm -rf $(VENV) netsonde-data .pytest_cache
