# Everything runs from a project-local virtualenv that the first target creates.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit integration browser screenshots bench bench-quick clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/finetune-exporter demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit

integration: $(BIN)/.installed
	$(BIN)/python -m pytest tests/integration

browser: $(BIN)/.installed
	$(BIN)/python -m pytest tests/browser

# The README's picture of the status page: the browser test writes every width and scheme under
# test-output/, and the light laptop-width page is the one the README shows.
screenshots: $(BIN)/.installed
	rm -f test-output/status-page-light-1280.png
	$(BIN)/python -m pytest tests/browser -q -k test_screenshots
	mkdir -p docs
	cp test-output/status-page-light-1280.png docs/status-page.png

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py

bench-quick: $(BIN)/.installed
	$(BIN)/python bench/run.py --quick --out /dev/null

test: lint typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
