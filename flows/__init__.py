"""Prefect flows: the pipelines users run, schedule and trigger."""
