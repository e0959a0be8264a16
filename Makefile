# synrank: `make run` (the whole pipeline on the embedded default) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := run
UV := python3 -m uv
RUN := $(UV) run --frozen --no-sync

# Offline by design: no model hub, no telemetry.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONWARNINGS := ignore::FutureWarning

# After `make up`, flows and runs go to the local servers; without it, ephemeral Prefect + sqlite MLflow.
S3_PORT ?= 8333
ifneq ($(wildcard run/prefect.pid),)
export PREFECT_API_URL := http://127.0.0.1:4200/api
export MLFLOW_TRACKING_URI := http://127.0.0.1:5000
export AWS_ENDPOINT_URL_S3 := http://127.0.0.1:$(S3_PORT)
endif

.PHONY: run test env data repro clean

env: .venv/.synced
.venv/.synced: pyproject.toml uv.lock
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
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
	@echo "  metrics:   metrics/evaluate.json   (dvc metrics show)"
	@echo "  images:    outputs/images (generated shards), outputs/eval/base_vs_tuned.png (base vs tuned)"
	@echo "  MLflow:    $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow/mlflow.db}  (make up, then http://127.0.0.1:5000)"
	@echo "  Prefect:   flow runs 'pipeline' and its six stages (make up, then http://127.0.0.1:4200)"

repro: data
	$(RUN) dvc repro

test: env
	$(RUN) pytest

clean:
	rm -rf outputs metrics mlflow/mlflow.db mlflow/artifacts

# Local services in the background (pid files and logs in run/): Prefect server on 127.0.0.1:4200 with
# one process worker per pool (cpu, gpu) and every flow deployed with params.yaml as its defaults,
# MLflow server on 127.0.0.1:5000 over mlflow/mlflow.db, and a SeaweedFS S3 server on 127.0.0.1:8333
# (bucket `synrank`; set generate.store=s3://synrank/images, or use it as a DVC remote). `make up` again starts only what is missing
# and redeploys (after an edit of params.yaml); `make down` stops them all.
.PHONY: up down
up: env
	@$(RUN) python -m synrank.s3server start --dir run/s3 --port $(S3_PORT) --pidfile run/s3.pid --bucket synrank
	@scripts/services.sh up

down:
	@$(RUN) python -m synrank.s3server stop --pidfile run/s3.pid
	@scripts/services.sh down
