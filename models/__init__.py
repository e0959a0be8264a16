"""The ML: generators, rewards, ranking, objectives, trainer, benchmarks; no Prefect or MLflow imports."""
