# `make demo` and `make test` create .venv when missing, install the pinned project into it, and run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow test-load test-cluster test-all lint bench bench-full clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ifdd demo

# The default suite (a few minutes on 2 cores); CI also runs the slow end-to-end tests (`make test-slow`).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=10

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow and not cluster and not load" --durations=50 --durations-min=2

# Tests whose point is size (not in CI; ~15 min on 2 cores): several concurrent fold searches on a multi-node cluster,
# every benchmark script end to end in its --quick mode (`make bench` runs them in full), and the default pretext
# recipe from scratch (the init the package ships, docs/proxy.md).
test-load: $(STAMP)
	$(PY) -m pytest -q -m "load" --durations=5

# A real `ray up` over SSH to 127.0.0.1 (needs sshd, ssh, rsync). `ray down` is a machine-wide `ray stop`, so it runs
# alone, in its own pytest process, holding /tmp/ifdd-ray.lock.
test-cluster: $(STAMP)
	$(PY) -m pytest -q -m "cluster" --durations=5

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not cluster" --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Benchmarks and science checks (under 30 min on 2 cores): JSON + summary.md under runs/bench/, MLflow experiment `bench`.
bench: $(STAMP)
	$(PY) bench/run_all.py

# Every benchmark on its own defaults (hours on 2 cores; for a bigger machine): adds the xs kernel A/B and the full grid.
bench-full: $(STAMP)
	$(PY) bench/run_all.py --full

clean:
	rm -rf runs .pytest_cache .ruff_cache
