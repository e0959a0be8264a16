"""Prefect flows: one per stage in flows/<stage>.py, and the pipeline, online loop and study that chain them."""
