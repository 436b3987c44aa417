"""Repo-only benchmarks, run as scripts from the repo root; not installed."""
