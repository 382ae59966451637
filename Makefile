# Two commands matter: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
DATASET ?= synthetic
DATA_DIR ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lmrec demo --dataset $(DATASET) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf build .pytest_cache
