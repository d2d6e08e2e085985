# Two commands from a fresh clone: `make run` and `make test`. Everything they need is
# installed here, into .venv, from the package registries.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TOOLS  := $(VENV)/.tools-stamp
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
DEMO   := var/demo

.PHONY: help install install-tools native run run-with-prometheus demo-compute dashboards test lint format bench bench-quick bench-engine bench-broker soak clean

help:
	@echo "make run    - run the pipeline on embedded defaults and show where to look (RUN_ARGS='--spike chat')"
	@echo "make test   - install what is needed and run the whole test suite"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - benchmarks (bench/); make bench-quick: about three minutes; make soak: ten minutes"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) native

# The hot path compiled by mypyc, in place (pipeline/native.py lists it); a no-op when current.
native: $(STAMP)
	$(BIN)/python -m pipeline.build_native

# Prometheus, promtool, Alertmanager and amtool from Debian's packages (the observability tests
# and `ccpipe run --with-prometheus` use them), and Chromium with its WebDriver (the wall display
# test looks at the page in a real browser; nothing downloads a browser of its own).
$(TOOLS):
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v amtool >/dev/null \
		&& command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "prometheus tools and chromium present"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			prometheus prometheus-alertmanager chromium chromium-driver fonts-dejavu-core; \
	fi
	@mkdir -p $(VENV) && touch $(TOOLS)

install-tools: $(TOOLS)

# The whole pipeline on embedded defaults: broker, worker, simulator, /metrics. Ctrl-C stops it.
run: $(STAMP) native
	$(BIN)/ccpipe run $(RUN_ARGS)

# The same, with a local Prometheus evaluating the alert rules (watch the FRT alert fire).
run-with-prometheus: $(STAMP) $(TOOLS) native
	$(BIN)/ccpipe run --with-prometheus --spike phone --backfill 900 $(RUN_ARGS)

# The engine alone over a simulated day, without Kafka.
demo-compute: $(STAMP) native
	mkdir -p $(DEMO)
	$(BIN)/ccpipe generate --output $(DEMO)/events.jsonl --events 200000
	$(BIN)/ccpipe compute --input $(DEMO)/events.jsonl \
		--windows-out $(DEMO)/windows.jsonl --conversations-out $(DEMO)/conversations.jsonl

# Grafana dashboards are code (grafana/build.py); the JSON is committed and tested against it.
dashboards: $(STAMP)
	$(BIN)/python grafana/build.py

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench grafana
	$(BIN)/ruff format --check pipeline tests bench grafana
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format pipeline tests bench grafana
	$(BIN)/ruff check --fix pipeline tests bench grafana

test: $(STAMP) $(TOOLS) lint native
	$(BIN)/python -m pytest

# Benchmarks: numbers, not tests (never part of `make test`).
# The Quix Streams peer needs confluent-kafka < 2.13, the tests' foreign producer >= 2.16: it
# gets an interpreter of its own, which bench/run.py uses for that baseline only.
QUIX_VENV := .venv-quix
$(QUIX_VENV)/.installed-stamp:
	python3 -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'quixstreams>=3.28' faust-streaming orjson aiokafka
	touch $@

bench: bench-engine $(STAMP) native $(QUIX_VENV)/.installed-stamp
	QUIX_PYTHON=$(QUIX_VENV)/bin/python $(BIN)/python bench/run.py

bench-quick: $(STAMP) native
	$(BIN)/python bench/run.py --quick

bench-engine: $(STAMP) native
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/checkpoint.py --live-rate 3000 14000
	$(BIN)/python bench/partials.py

# The embedded broker's round trip as it fills, in small and in large batches (what a soak meets).
bench-broker: $(STAMP)
	$(BIN)/python bench/broker.py --batch 4
	$(BIN)/python bench/broker.py --batch 10000

# Ten minutes of steady traffic with 200 000 open conversations: RSS and lag over time.
soak: $(STAMP) native
	$(BIN)/python bench/soak.py --csv var/soak.csv $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(QUIX_VENV) var .pytest_cache .ruff_cache .mypy_cache .hypothesis build pipeline/_native.fingerprint
	find pipeline -name "*.so" -delete
