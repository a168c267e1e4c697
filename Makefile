# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-attack bench-lookup bench-versions sysdeps clean

# Set-up says what it does: the first install takes a minute or two.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) with $$($(PYTHON) --version 2>&1)"
	@$(PYTHON) -m venv $(VENV) || { echo "make: '$(PYTHON) -m venv' failed;" \
	  "on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	@echo "==> upgrading pip"
	@$(BIN)/pip install --quiet --upgrade pip
	@echo "==> installing netsonde and its packages into $(VENV)"
	@$(BIN)/pip install --progress-bar on -e '.[dev]'
	@touch $@
	@echo "==> $(VENV) is ready"

sysdeps:
	@scripts/install-system-deps

# Runs in the foreground (netsonde prints where it serves); Ctrl-C stops it.
run: $(STAMP) sysdeps
	@$(BIN)/netsonde run $(if $(CONFIG),--config $(CONFIG))

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
	$(BIN)/python bench/attack.py --write BENCHMARKS.md
	$(BIN)/python bench/lookup.py --write BENCHMARKS.md

bench-attack: $(STAMP) sysdeps ; $(BIN)/python bench/attack.py --write BENCHMARKS.md

bench-lookup: $(STAMP) sysdeps ; $(BIN)/python bench/lookup.py --write BENCHMARKS.md

bench-versions: $(STAMP) sysdeps ; $(BIN)/python bench/versions.py --write BENCHMARKS.md

clean:
	rm -rf $(VENV) netsonde-data .pytest_cache
