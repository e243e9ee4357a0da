# The two commands of the README: `make demo` and `make test`. Both create the
# virtualenv on first use, so they work on a machine that has never seen the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint typecheck bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sidecar demo

# Everything the tests need: the Python deps and the real servers they run against.
system-deps:
	bash scripts/install-system-deps.sh
	bash scripts/install-consul.sh
	bash scripts/install-jaeger.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/ruff check sidecar tests bench
	$(BIN)/mypy sidecar

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) system-deps
	$(BIN)/python -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests bench

typecheck: $(STAMP)
	$(BIN)/mypy sidecar

bench: $(STAMP) system-deps
	$(BIN)/python bench/http_keepalive.py

clean:
	rm -rf $(VENV) build *.egg-info
