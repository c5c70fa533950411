# custseg — two commands for a newcomer: `make demo` and `make test`; `make serve` starts the web app.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# An editable install leaves custseg's own modules uncompiled; where PYTHONDONTWRITEBYTECODE is
# set they would be compiled again by every command (0.1 s of a run).
COMPILE = $(BIN)/python -m compileall -q src

.PHONY: demo test serve install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(COMPILE)
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
	$(COMPILE)
	$(BIN)/python bench/features.py

clean:
	rm -rf $(VENV) demo-output custseg-data build dist src/*.egg-info
