# The two commands of the README's quick start:
#   make demo   runs the study at demo scale on the data shipped in the repo, ending in
#               the HTML report (runs/demo/report.html)
#   make test   runs the test suite (make test-fast: all but the slow tests, about a minute)
# Each creates .venv and installs viny with its extras when missing or when
# pyproject.toml changed; otherwise the install is skipped.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.viny-installed

.PHONY: demo test test-fast venv notebooks lab browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "viny needs Python >= 3.11; run e.g. 'make PYTHON=python3.12 test'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[notebooks,dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/viny demo

# The report's browser test needs Debian's chromium; install it when we can (root + apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "note: could not install chromium; the report's browser test will be skipped"; \
	  else echo "note: chromium not installed (apt-get install chromium); the report's browser test will be skipped"; fi; }

test: $(STAMP) browser
	$(BIN)/ruff check viny tests notebooks benchmarks
	$(BIN)/python -m pytest

# The developer loop: every test but those marked slow (papermill grids and notebooks, Ray,
# the browser tests, torch.compile), about a minute on 2 cores; `make test` runs them all
test-fast: $(STAMP)
	$(BIN)/ruff check viny tests notebooks benchmarks
	$(BIN)/python -m pytest -m "not slow"

# The .ipynb twins of the py:percent notebooks, for JupyterLab
notebooks: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.py

# JupyterLab on the notebooks (the .py files open directly too, through the jupytext extension),
# its kernels on an encrypted local link where pyzmq can (viny.kernels.kernel_options)
lab: notebooks
	cd notebooks && ../$(BIN)/jupyter lab $$(../$(BIN)/python -c 'from viny.kernels import lab_arguments; print(lab_arguments())')
