# custseg — two commands for a newcomer: `make demo` and `make test`; `make serve` starts the web app.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test serve install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/custseg demo --out demo-output

serve: $(STAMP)
	$(BIN)/custseg serve --demo --data-dir custseg-data

test: $(STAMP)
	bash scripts/install_browser.sh
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/features.py

clean:
	rm -rf $(VENV) demo-output custseg-data build dist src/*.egg-info
