# The two commands that matter: `make demo` (the main job) and `make test` (everything CI runs).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := operator:tools:tests

.PHONY: demo test lint unit bench rig-up rig-down venv provision clean

venv:
	@scripts/bootstrap-venv

## demo: real Airflow 2.11 and 3.3 on loopback, one sync between them, events shown crossing.
demo: venv
	@$(PY) -m rig.demo

## test: linters, then the whole test suite against the real rig (provisioned and cached).
test: venv
	@scripts/timed host-setup scripts/host-setup
	@scripts/timed lint $(MAKE) --no-print-directory lint
	@scripts/timed provision $(PY) -m rig.provision
	@scripts/timed pytest $(PY) -m pytest -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

lint: venv
	.venv/bin/ruff check operator tools tests plugins
	.venv/bin/ruff format --check operator tools tests plugins
	.venv/bin/mypy operator tools tests plugins/airflow-asset-sync-listener/src
	.venv/bin/lint-imports

## unit: the fast tests only (no rig).
unit: venv
	$(PY) -m pytest -m "not rig" -q

## bench: the benchmark report (not part of the test suite); BENCH_ARGS="--quick" for a short run.
bench: venv
	$(PY) -m bench $(BENCH_ARGS)

provision: venv
	$(PY) -m rig.provision

rig-up: venv
	$(PY) -m rig.up

rig-down: venv
	$(PY) -m rig.up down
