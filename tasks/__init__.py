"""Prefect tasks: one module per pipeline stage, each a thin @task over a tuneline function."""
