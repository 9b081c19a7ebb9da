# The two commands of the README's quick start:
#   make demo   runs the study at demo scale on the data shipped in the repo
#   make test   runs the test suite
# Each creates .venv and installs viny with its extras when missing or when
# pyproject.toml changed; otherwise the install is skipped.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.viny-installed

.PHONY: demo test venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "viny needs Python >= 3.11; run e.g. 'make PYTHON=python3.12 test'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/viny demo

test: $(STAMP)
	$(BIN)/python -m pytest
