# `make demo` and `make test` create .venv when missing, install the pinned project into it, and run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-all lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ifdd model info --preset tiny
	$(VENV)/bin/ifdd train --config search_spaces/smoke.yaml --fold 1 --workers 2

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/model.py
	$(PY) bench/data.py
	$(PY) bench/train.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
