# The two commands of the README, plus the pieces they are made of.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup setup-test demo test demo-corpus

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

demo-corpus: setup
	@source scripts/env.sh && $(PY) -m pipeline.demo --out data/demo

# Demo corpus -> Ray pipeline -> shards -> leakage report -> DeepSpeed pretraining -> evaluation.
demo: setup
	@source scripts/env.sh && scripts/demo.sh

test: setup-test
	@.venv/bin/ruff check --quiet .
	@source scripts/env.sh && $(PY) -m pytest -q tests $(PYTEST_ARGS)
