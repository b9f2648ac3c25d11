# Shortcuts for the scripts CI and the README use; the scripts are the source of truth.
.PHONY: demo test lint bench

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

lint:
	bash scripts/setup.sh && .venv/bin/ruff check src tests benchmarks

bench:
	bash scripts/setup.sh && .venv/bin/python benchmarks/import_speed.py
