# The README's commands. Each sets up .venv itself, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= BAAI/bge-m3
TORCH_VERSION := 2.13.0

.PHONY: setup test lint demo serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first (pinned) when missing, then the project with its test extras.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

demo: setup
	$(BIN)/m3engine embed --model "$(MODEL)" --sparse --colbert \
	  --text "What is BGE-M3?" --text "BGE-M3 gives dense, sparse and ColBERT outputs from one pass."

# The HTTP server on 127.0.0.1:$(PORT) (OpenAI, TEI, Cohere, Jina routes); MODEL= picks the model,
# SERVE_ARGS= adds flags (e.g. SERVE_ARGS="--reranker BAAI/bge-reranker-v2-m3 --api-keys KEY").
PORT ?= 8080
serve: setup
	$(BIN)/m3engine serve --model "$(MODEL)" --port $(PORT) $(SERVE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
