# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
DEVSTAMP := $(VENV)/.installed-dev
# The decode `make run` performs: the bundled default model, compiled for 8 chips.
RUN_ARGS ?= --text "Return the number of" --tokens 16

.PHONY: install run test test-slow bench fixtures clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/lpu decode $(RUN_ARGS)

test: install
	$(BIN)/pytest -q -m "not slow"

test-slow: install
	$(BIN)/pytest -q -m slow

# Dev-only tools (torch, transformers, optimum-onnx) for the fixture and benchmark-model exporters.
$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $(DEVSTAMP)

fixtures: $(DEVSTAMP)
	$(BIN)/python tools/make_fixtures.py

bench: $(DEVSTAMP)
	$(BIN)/python tools/make_models.py
	$(BIN)/pytest benchmarks -q --benchmark-enable -s

clean:
	rm -rf $(VENV) build .pytest_cache .benchmarks
