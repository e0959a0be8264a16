# synrank: `make run` (the whole pipeline on the embedded default) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := run
UV := python3 -m uv
RUN := $(UV) run --frozen --no-sync

# Offline by design: no model hub, no telemetry.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONWARNINGS := ignore::FutureWarning

# After `make up`, flows and runs go to the local servers; without it, ephemeral Prefect + sqlite MLflow.
# Ports: `make up PREFECT_PORT=4300 MLFLOW_PORT=5001 S3_PORT=9000` picks others than the defaults; `make up`
# records the ports in use in run/ports.env and every later make reads them from there.
-include run/ports.env
-include run/ray.env
ifneq ($(RAY_ADDRESS),)
export RAY_ADDRESS
endif
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
S3_PORT ?= 8333
RAY_PORT ?= 6379
export PREFECT_PORT MLFLOW_PORT S3_PORT
ifneq ($(wildcard run/prefect.pid),)
export PREFECT_API_URL := http://127.0.0.1:$(PREFECT_PORT)/api
export MLFLOW_TRACKING_URI := http://127.0.0.1:$(MLFLOW_PORT)
export AWS_ENDPOINT_URL_S3 := http://127.0.0.1:$(S3_PORT)
endif

.PHONY: run test test-fast lint env data repro clean

# Optional extras: `make test EXTRAS=ray` (what .ci/run does) also installs prefect-ray and ray, pinned in uv.lock.
# --inexact: a later plain `make run` keeps an extra installed before (the default run never imports it).
# --compile-bytecode: every package's .pyc written once here. Where PYTHONDONTWRITEBYTECODE is set (as on this
# project's VMs) Python otherwise recompiles torch, diffusers and transformers in every process: importing the
# trainer's libraries took 24 s instead of 10-12 s (docs/benchmarks.md).
EXTRAS ?=
ifneq ($(RAY),)
EXTRAS += ray
endif
SYNCED := .venv/.synced$(subst $(eval) ,,$(EXTRAS:%=-%))
env: $(SYNCED)
$(SYNCED): pyproject.toml uv.lock
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --inexact --compile-bytecode $(EXTRAS:%=--extra %)
	@touch $@

# data/ is tracked by data.dvc; a fresh clone has no DVC cache, so rebuild it from code (deterministic).
data: env
	$(RUN) synrank data

run: data
	$(RUN) synrank pipeline
	@echo
	@$(RUN) synrank table
	@echo
	@echo "Done. Where to look:"
	@echo "  metrics:   metrics/headline.json   (dvc metrics show; the full report: metrics/evaluate.json)"
	@echo "  images:    outputs/images (generated shards), outputs/eval/base_vs_tuned.png (base vs tuned)"
	@echo "  MLflow:    $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow/mlflow.db}  (make up, then http://127.0.0.1:$(MLFLOW_PORT)/#/experiments?workflowType=machine_learning)"
	@echo "  Prefect:   flow runs 'pipeline' and its six stages (make up, then http://127.0.0.1:$(PREFECT_PORT))"

# dvc repro with one Prefect API for all the stages it runs (synrank.repro); `make repro ARGS="train --force"`.
repro: data
	$(RUN) synrank repro $(ARGS)

test: env
	$(RUN) pytest

# The fast tier: the tests that need no Prefect server, no subprocess and no training run (`-m 'not slow'`;
# tests/conftest.py starts no Prefect server when no selected test is slow). About 1 minute.
test-fast: env
	$(RUN) pytest -m "not slow"

# Format and lint (rules in pyproject.toml's [tool.ruff]); .ci/run runs it before the tests.
lint: env
	$(RUN) ruff format --check .
	$(RUN) ruff check .

clean:
	rm -rf outputs metrics mlflow/mlflow.db mlflow/artifacts

# Local services in the background, each its own process group with a pid file and a log in run/
# (synrank.services; ports in run/ports.env): Prefect server on 127.0.0.1:4200 with one process worker per
# pool (cpu, gpu) and every flow deployed with params.yaml as its defaults, MLflow server on 127.0.0.1:5000
# over mlflow/mlflow.db, and a SeaweedFS S3 server on 127.0.0.1:8333 (bucket `synrank`; set
# generate.store=s3://synrank/images, or use it as a DVC remote). `make up` again starts only what is missing
# and redeploys (after an edit of params.yaml); `make down` stops them all; `make status` shows what runs.
# `make up RAY=1` also starts a single-node Ray head on 127.0.0.1:6379 (the ray extra; run/ray.env then gives
# later makes RAY_ADDRESS, so `--set generate.engine=ray` runs on it); `make down` stops it too.
.PHONY: up down status
up: env
	@$(RUN) python -m synrank.services up $(if $(RAY),--ray --ray-port $(RAY_PORT))

down:
	@$(RUN) python -m synrank.services down

status:
	@$(RUN) python -m synrank.services status
