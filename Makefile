# Every target that runs code first makes sure .venv exists and holds the project.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= ../shared/data

.PHONY: install run demo serve test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,llm,brokers,embeddings]'
	touch $(STAMP)

install: $(STAMP)

# `make run`: the demo (labelagent demo: the shipped SMS stream, simulated reviewers) on its own database,
# ./labelagent-demo.db; DEMO_ARGS=--reset starts it over. `make run DEMO=0` (or `make serve`): `labelagent serve`,
# the service without the simulation, on LABELAGENT_DATABASE_URL (default ./labelagent.db).
DEMO      ?= 1
DEMO_ARGS ?=

ifeq ($(DEMO),0)
run: serve
else
run: demo
endif

demo: $(STAMP)
	$(BIN)/labelagent demo $(DEMO_ARGS)

serve: $(STAMP)
	$(BIN)/labelagent serve

# The browser tests (tests/web) drive Debian's Chromium: install it when missing.
test: $(STAMP)
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m bench  # every module; scale runs its 200,000-item stream (python -m bench scale --items N)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
