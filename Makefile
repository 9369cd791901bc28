# gguf-runtime — the two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROMPT ?= The three primary colours are

.PHONY: setup run test models models-all warmup bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

models: setup
	$(BIN)/python scripts/fetch_models.py smollm2-135m

models-all: setup
	$(BIN)/python scripts/fetch_models.py all

# One-shot completion on the default model.
run: models
	$(BIN)/gguf-runtime complete "$(PROMPT)"

# The tests use every catalog model (real vocabularies and quant types), so fetch them all first.
test: models-all
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
