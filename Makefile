# The two commands of the README: `make demo` and `make test`. Both set up first (idempotent).
.PHONY: setup test test-fast demo clean
PY := .venv/bin/python
PYTEST_ARGS ?=
# `make test` spreads the tests over the cores (pytest-xdist; tests in one xdist_group share a
# worker), at most PYTEST_MAX_WORKERS of them (each holds a torch process; the official-preset
# forward alone peaks near 12 GB); PYTEST_WORKERS=0 runs them all in one process.
PYTEST_WORKERS ?= auto
PYTEST_MAX_WORKERS ?= 4

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) --maxprocesses $(PYTEST_MAX_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Everything but the tests marked slow (for a quick local loop; CI runs `make test`).
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	bash scripts/demo.sh

clean:
	rm -rf build demo_output .pytest_cache
