# Shortcuts for the scripts CI and the README use; the scripts are the source of truth.
.PHONY: demo test lint bench bench-exploration bench-offline bench-scale bench-service

DATA ?= ../shared/datasets

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

lint:
	bash scripts/setup.sh && .venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks

# The benchmarks behind the numbers in docs/ (long; run one at a time on a quiet machine).
bench: bench-offline bench-exploration bench-scale bench-service

bench-offline:
	bash scripts/setup.sh
	.venv/bin/python benchmarks/offline.py --data-dir $(DATA) --dataset ml-100k --dataset ml-latest-small --dataset taobao --budget 300

bench-exploration:
	bash scripts/setup.sh && .venv/bin/python -m pip install --quiet -e '.[dev,bench]'
	.venv/bin/python benchmarks/exploration.py --data-dir $(DATA) --part obd --out docs/exploration
	.venv/bin/python benchmarks/exploration.py --data-dir $(DATA) --part timing --out docs/exploration
	.venv/bin/python benchmarks/exploration.py --data-dir $(DATA) --part simulate --dataset ml-100k --requests 5000 --seeds 3 --jobs 2 --out docs/exploration
	.venv/bin/python benchmarks/balance.py --data-dir $(DATA) --dataset ml-100k --dataset ml-latest-small --dataset taobao --seeds 5 --requests 5000 --jobs 2 --out docs/exploration/controller
	.venv/bin/python benchmarks/balance.py --data-dir $(DATA) --dataset ml-100k --seeds 3 --requests 5000 --jobs 2 --part simulate --only adaptive --only greedy --only egreedy:0.05 --only vw-epsilon-decay --only vw-ccb:0.1 --out docs/exploration/controller/peers
	.venv/bin/python benchmarks/closed_loop.py --data-dir $(DATA) --requests 3000 --out docs/exploration/controller

bench-scale:
	bash scripts/setup.sh
	.venv/bin/python benchmarks/retailrocket_scale.py --runs 3
	.venv/bin/python benchmarks/retailrocket_models.py --runs 3

bench-service:
	bash scripts/setup.sh
	.venv/bin/python benchmarks/session_replay.py --data-dir $(DATA) --dataset taobao --dataset synthetic --max-sessions 600 --budget 60 --out docs/service
	.venv/bin/python benchmarks/diversity.py --data-dir $(DATA)
	.venv/bin/python benchmarks/serving.py --seconds 20 --soak-seconds 600 --out docs/service
	.venv/bin/python benchmarks/serving_stages.py --requests 1000 --repeats 3 --out docs/service
