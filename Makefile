PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint fmt proto bench bench-compare clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/pdp serve --policies policies --listen 127.0.0.1:50051

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

proto: $(STAMP)
	$(BIN)/python -m pdp.server.protogen

bench: $(STAMP)
	$(BIN)/python bench/engine.py

# pdp vs cedarpy, regopy, casbin, Cerbos and the hand-written floor (bench/compare.py). Needs
# h2load (Debian nghttp2-client) and npm for the gRPC part; installs the `bench` extra.
bench-compare: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client) || true
	$(BIN)/python bench/compare.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

# Mutation testing of the security paths (docs/MUTATION.md): mutmut over the modules listed in
# pyproject.toml's [tool.mutmut], each mutant run against the fast tests that cover it. Prints
# the score per module and every survivor with its triage; fails on an untriaged survivor.
# ARGS narrows the run to mutant-name globs, e.g. make mutation ARGS='pdp.engine.*'.
.PHONY: mutation
mutation: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[mutation]'
	rm -rf mutants  # mutmut keeps results across test changes; a check must start afresh
	nice -n 10 $(BIN)/mutmut run --max-children 2 $(ARGS)
	$(BIN)/python tests/mutation/report.py
