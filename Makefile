# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The sample site's posts run to 4 January 2026; the demo is pinned so it never shows an empty digest.
DEMO_NOW := 2026-01-05T07:00:00+00:00

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/newsletter --now $(DEMO_NOW) preview --out previews
	$(BIN)/newsletter --now $(DEMO_NOW) preview weekly --format eml --out previews/weekly.eml
	@echo "Previews written to previews/ (open previews/weekly.html in a browser)."

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/reader.py

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check newsletter tests bench

clean:
	rm -rf $(VENV) previews outbox .pytest_cache
