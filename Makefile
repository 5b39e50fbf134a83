# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The sample site's posts run to 4 January 2026; the demo is pinned so it never shows an empty digest.
DEMO_NOW := 2026-01-05T07:00:00+00:00
# The scheduler demo starts its clock ten seconds before the weekly newsletter's Monday 08:00 fire.
DEMO_RUN_NOW := 2026-01-05T07:59:50+00:00
DEMO_RUN_DB := sqlite:///$(CURDIR)/scheduled.db
# Where the demo's emails point their unsubscribe, preferences and view links: `newsletter serve` on loopback.
DEMO_WEB := http://127.0.0.1:8000

.PHONY: demo demo-run test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/newsletter --now $(DEMO_NOW) preview --out previews
	$(BIN)/newsletter subscribers import subscribers/sample.csv
	NEWSLETTER_WEB_BASE_URL=$(DEMO_WEB) $(BIN)/newsletter --now $(DEMO_NOW) send weekly
	NEWSLETTER_WEB_BASE_URL=$(DEMO_WEB) $(BIN)/newsletter --now $(DEMO_NOW) send lab
	$(BIN)/newsletter archive --out previews/archive
	@echo "Previews are in previews/ (open previews/weekly.html in a browser); the sent messages are .eml files"
	@echo "under outbox/, one per subscriber. Run make demo again: the sends resume and nobody gets a second copy."
	@echo "The static archive is in previews/archive/ (open previews/archive/weekly/index.html)."
	@echo "Try the subscribers' side on the demo's database: run"
	@echo "    NEWSLETTER_WEB_BASE_URL=$(DEMO_WEB) $(BIN)/newsletter serve"
	@echo "and open $(DEMO_WEB)/ to sign up (the confirmation email lands in outbox/signup/),"
	@echo "$(DEMO_WEB)/archive/weekly/ for past issues and their Atom feed; the unsubscribe and preferences"
	@echo "links in the .eml files under outbox/ lead to the same server. Ctrl-C stops it."
	@echo "To try the scheduler daemon: make demo-run (on a database of its own, scheduled.db, it fires the weekly"
	@echo "schedule ten seconds after it starts and sends through the outbox; Ctrl-C stops it). A one-off send:"
	@echo "newsletter schedule at NEWSLETTER <a few seconds ahead>, then newsletter run (see README.md)."

# Blocks until Ctrl-C: the daemon runs until stopped.
demo-run: $(STAMP)
	rm -f scheduled.db scheduled.db-wal scheduled.db-shm
	NEWSLETTER_DATABASE_URL=$(DEMO_RUN_DB) $(BIN)/newsletter subscribers import subscribers/sample.csv
	NEWSLETTER_DATABASE_URL=$(DEMO_RUN_DB) $(BIN)/newsletter --now $(DEMO_RUN_NOW) schedule
	NEWSLETTER_DATABASE_URL=$(DEMO_RUN_DB) $(BIN)/newsletter --now $(DEMO_RUN_NOW) run

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/reader.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/dkim.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/import.py

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check newsletter tests bench

clean:
	rm -rf $(VENV) previews outbox newsletter.db newsletter.db-wal newsletter.db-shm .pytest_cache .newsletter-cache
	rm -f scheduled.db scheduled.db-wal scheduled.db-shm
