"""A transient storage outage, caused for real: the S3 server is down when the flow starts.

The first attempt of the ingest stage fails on the connection; Prefect's retry, after
the backoff, finds the server back up and the run completes. Nothing half-written is
left in the registry. The server comes back when Prefect announces the retry (no timer racing the
backoff): exactly two attempts.
"""

from __future__ import annotations

import logging

import pytest

from tests.conftest import make_config
from tuneline.config import parse_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_flow_survives_an_s3_outage_through_retries(demo_csv, s3_private_server, monkeypatch):
    from flows.finetune import finetune
    from tuneline.registry import Registry
    from tuneline.storage import open_storage

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail fast inside boto3; the stage retry does the waiting
    root = f"s3://{s3_private_server.bucket}/outage"
    config = parse_config(make_config(demo_csv, root, training={"epochs": 0.2}, evaluation={"minimum": 0.0},
                                      retries={"attempts": 3, "backoff_seconds": 1}))
    s3_private_server.stop()

    class RestartOnRetry(logging.Handler):
        """Runs in the task's thread as Prefect logs "Retry 1/2 will start ...", before the backoff sleep."""

        def emit(self, record):
            if "Retry 1/" in record.getMessage() and not s3_private_server.running:
                s3_private_server.start()

    handler = RestartOnRetry()
    logging.getLogger("prefect").addHandler(handler)
    try:
        summary = finetune(config=config)
    finally:
        logging.getLogger("prefect").removeHandler(handler)

    assert summary["stages"]["ingest"]["attempts"] == 2, summary["stages"]["ingest"]
    assert summary["version"] == 1
    registry = Registry(open_storage(root))
    assert registry.versions("test-model") == [1]
    assert registry.manifest("test-model", 1)["uri"].startswith(root)
