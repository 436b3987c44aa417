"""Repo-only entry points and the local services they start (S3, Prefect); not installed."""
