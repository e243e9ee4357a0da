# The two commands of the README: `make demo` and `make test`. Both create the
# virtualenv on first use, so they work on a machine that has never seen the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-pure test-compiled compiled unit integration lint typecheck bench \
	system-deps clean

# The development install is pure Python (SIDECAR_PURE): an edited .py takes effect at
# once, never shadowed by a stale compiled module.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	SIDECAR_PURE=1 $(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The build users get from `pip install .`: the hot modules compiled by mypyc (setup.py),
# installed apart in build/compiled; PYTHONPATH=build/compiled runs it.
COMPILED := build/compiled
$(COMPILED)/.built: $(STAMP) setup.py $(shell find sidecar -name '*.py')
	rm -rf $(COMPILED)
	$(BIN)/pip install -q --no-deps --no-build-isolation --target $(COMPILED) .
	touch $@

compiled: $(COMPILED)/.built

demo: $(STAMP)
	$(BIN)/sidecar demo

# Everything the tests need: the Python deps and the real servers they run against.
system-deps:
	bash scripts/install-system-deps.sh
	bash scripts/install-consul.sh
	bash scripts/install-jaeger.sh

# Every test, on both builds: pure Python (what `make demo` and development run) and
# compiled (what `pip install .` gives; mypyc also checks annotations at run time).
test: test-pure test-compiled
	$(BIN)/ruff check sidecar tests bench setup.py
	$(BIN)/mypy sidecar

test-pure: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

# -P: the repository's own sidecar/ must not come first on sys.path.
test-compiled: $(COMPILED)/.built system-deps
	PYTHONPATH=$(COMPILED) SIDECAR_EXPECT_COMPILED=1 $(BIN)/python -P -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) system-deps
	$(BIN)/python -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests bench

typecheck: $(STAMP)
	$(BIN)/mypy sidecar

bench: $(COMPILED)/.built system-deps
	SIDECAR_BUILD=$(COMPILED) $(BIN)/python bench/http_keepalive.py

clean:
	rm -rf $(VENV) build *.egg-info
