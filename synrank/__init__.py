"""Shared plumbing: config, stage bookkeeping (stamp, lock, MLflow run), storage and shards, registries, CLI."""
