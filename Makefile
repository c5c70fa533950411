# custseg — two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/custseg demo --out demo-output

test: $(STAMP)
	bash scripts/install_browser.sh
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/features.py

clean:
	rm -rf $(VENV) demo-output build dist src/*.egg-info
