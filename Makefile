# Two entry points: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint benchmarks clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cellsmith demo --out demo_output

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff with the rules in pyproject.toml (pyflakes, pycodestyle, bugbear, import order)
lint: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[lint]"
	$(BIN)/ruff check src tests benchmarks

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output
