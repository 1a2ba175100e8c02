# The README's verbs. `make run` needs nothing but Python; `make test` also installs the
# servers the tests start (redis-server, haproxy, PostgreSQL) with apt-get when missing,
# checks that kubectl is there, installs the JavaScript clients the adapter tests run
# (tests/js, `npm ci` from its lock file), and runs the suite on pytest-xdist workers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint typecheck unit bench system-deps js-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/agenthost serve $(ARGS)

system-deps:
	./scripts/install-system-deps.sh

js-deps: tests/js/node_modules/.installed

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund
	touch $@

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

unit: $(VENV)/.dev-installed
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest $(ARGS)

# The suite starts some 400 Python processes (servers, workers, commands); each would compile
# agenthost's modules again where the environment sets PYTHONDONTWRITEBYTECODE (a quarter of
# a server's start-up CPU): the tests keep the bytecode, as a plain `python` would.
# mypy, the slowest lint step on a clean clone (some 40 s of one core with no cache), runs
# beside the suite, whose workers spend part of their time waiting on the processes they
# start; its report follows the suite's, and either one failing fails `make test`.
test: system-deps js-deps $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	@report=$$(mktemp); $(BIN)/mypy > $$report 2>&1 & types=$$!; \
	echo "$(BIN)/mypy (beside the suite)"; \
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest $(ARGS); tests=$$?; \
	wait $$types; typed=$$?; echo "$(BIN)/mypy:"; cat $$report; rm -f $$report; \
	test $$tests -eq 0 && test $$typed -eq 0

bench: system-deps $(VENV)/.dev-installed
	$(BIN)/python benchmarks/run_all.py

# `langgraph dev` for benchmarks/framework_cpu.py, in its own environment (langgraph-cli's
# server pins other versions than agenthost's dev environment).
.PHONY: langgraph-dev-env
langgraph-dev-env: .venv-langgraph-dev/bin/langgraph
.venv-langgraph-dev/bin/langgraph:
	python3 -m venv .venv-langgraph-dev
	.venv-langgraph-dev/bin/python -m pip install -q 'langgraph-cli[inmem]' -e '.[langgraph]'

# Not part of `test`: the protocol tests on the lowest and the highest uvicorn and websockets
# pyproject.toml allows, each pairing in a throwaway venv (PACKAGES="... starlette" adds it).
.PHONY: deps-range
deps-range:
	PYTHON=$(PYTHON) ./scripts/check-dependency-range.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
