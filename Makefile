# Two commands from a fresh clone: `make run` and `make test`. Everything they need is
# installed here, into .venv, from the package registries.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := var/demo

.PHONY: help install run demo-compute test lint format bench bench-engine clean

help:
	@echo "make run    - run the pipeline on embedded defaults and show where to look (RUN_ARGS='--spike chat')"
	@echo "make test   - install what is needed and run the whole test suite"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks (bench/)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on embedded defaults: broker, worker, simulator, /metrics. Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/ccpipe run $(RUN_ARGS)

# The engine alone over a simulated day, without Kafka.
demo-compute: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/ccpipe generate --output $(DEMO)/events.jsonl --events 200000
	$(BIN)/ccpipe compute --input $(DEMO)/events.jsonl \
		--windows-out $(DEMO)/windows.jsonl --conversations-out $(DEMO)/conversations.jsonl

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench

format: $(STAMP)
	$(BIN)/ruff format pipeline tests bench
	$(BIN)/ruff check --fix pipeline tests bench

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: bench-engine

bench-engine: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
