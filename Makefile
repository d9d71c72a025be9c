# The two commands of the README: `make demo` and `make test`. Both set up first (idempotent).
.PHONY: setup test test-fast demo clean
PY := .venv/bin/python
PYTEST_ARGS ?=

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (for a quick local loop; CI runs `make test`).
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	bash scripts/demo.sh

clean:
	rm -rf build demo_output .pytest_cache
