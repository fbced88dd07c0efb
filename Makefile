# Two entry points: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# pytest-xdist workers of `make test`, each in a loopback-only namespace of its own (docs/testing.md); 0: one process
PYTEST_WORKERS ?= 2

.PHONY: run test setup lint unit bench clean

run: setup
	$(BIN)/peercall serve --with-echo

## Set up a virtualenv with the package (editable) and its test tools; redone when pyproject.toml changes.
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "peercall needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev,sdk]'
	touch $@

## Every test, the browser ones included, inside a network namespace that has only loopback.
test: setup lint
	scripts/install-system-deps
	$(BIN)/python bench/run.py --install-only
	test -f bench/.work/axe/node_modules/axe-core/axe.min.js || \
		npm install --no-audit --no-fund --prefix bench/.work/axe axe-core@4
	@# Two runs: the tests in parallel, then the `solo` ones (the soaks) alone, as nothing else loads the machine
	@# under them. Both run even when the first fails. No test at all fails (pytest's 5), but for a `solo` run
	@# that PYTEST_ARGS narrowed to other tests.
	@status=0; \
	scripts/loopback-only $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not solo" $(PYTEST_ARGS) || status=1; \
	scripts/loopback-only $(BIN)/pytest -m solo $(PYTEST_ARGS); solo=$$?; \
	if [ $$solo -eq 5 ] && [ -n "$(strip $(PYTEST_ARGS))" ]; then solo=0; fi; \
	[ $$solo -eq 0 ] || status=1; \
	exit $$status

## Benchmarks against the PeerJS server (15-25 minutes; see docs/benchmarks.md). Not part of `make test`.
bench: setup
	$(BIN)/python bench/run.py

## ruff, the import contracts (pyproject.toml [tool.importlinter]) and mypy --strict on src/ (pyproject.toml [tool.mypy]).
## All three run even when one fails, so one run shows every problem.
lint: setup
	@status=0; \
	$(BIN)/ruff check src tests bench scripts || status=1; \
	$(BIN)/lint-imports || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

## Fast inner loop: the tests that need neither a browser nor a namespace.
unit: setup
	$(BIN)/pytest tests/unit -q

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
