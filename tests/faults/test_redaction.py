"""No URL credentials in errors or logs: ``http://user:secret@host`` shows as ``http://***@host``.

Before: an AWS_ENDPOINT_URL with userinfo (``http://key:secret@host:8333``) came back whole in
botocore's EndpointConnectionError, in the failed state's message, in the traceback Prefect logs
and in the Prefect UI; any tuneline error that formatted such a URL repeated it.
"""

from __future__ import annotations

import logging
import pickle
import socket
import traceback

import pytest
from prefect import get_client  # at collection: Prefect's first import resets the root logger (caplog's handler)
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

from flows.finetune import finetune
from tests.conftest import make_config
from tuneline.config import parse_config
from tuneline.errors import ConfigError, DataError, GateFailed, redact_exception, redact_urls

SECRET = "s3cret"


@pytest.mark.parametrize("text, expected", [
    ("http://user:s3cret@example.com/x.csv", "http://***@example.com/x.csv"),
    ("https://user:s3cret@example.com:8443/a?b=c#d", "https://***@example.com:8443/a?b=c#d"),
    ("s3://AKIAKEY:s3cret@bucket/prefix/", "s3://***@bucket/prefix/"),
    ("AWS_ENDPOINT_URL=http://key:s3cret@127.0.0.1:8333 failed", "AWS_ENDPOINT_URL=http://***@127.0.0.1:8333 failed"),
    ("https://ghp_s3cret@github.com/org/repo.git", "https://***@github.com/org/repo.git"),  # a token as the user
    # several URLs in one text, also back to back with only a comma between them
    ("from 'http://a:s3cret@h1/x' to \"https://b:s3cret@h2/y\"", "from 'http://***@h1/x' to \"https://***@h2/y\""),
    ("http://a:s3cret@h1,http://b:s3cret@h2", "http://***@h1,http://***@h2"),
    # an unencoded '@' in the password: the userinfo ends at the last '@' (as urllib.parse reads it)
    ("http://user:s3@cret@host:9000/x", "http://***@host:9000/x"),
    # an unencoded '/' in the password (AWS secret keys have them): hidden too
    ("http://AKIAKEY:s3c/ret+k@host:8333/bucket", "http://***@host:8333/bucket"),
    ("http://u:p@host/path?mail=a@b.com", "http://***@host/path?mail=a@b.com"),  # '@' later in the URL stays
    # no userinfo: unchanged
    ("http://127.0.0.1:8333/bucket/key", "http://127.0.0.1:8333/bucket/key"),
    ("s3://corp-ml/team/data.csv and /local/path", "s3://corp-ml/team/data.csv and /local/path"),
    ("http://host:8333/key@v2 https://hf.co/org/model@main", "http://host:8333/key@v2 https://hf.co/org/model@main"),
    ("mail user@example.com, see http://[::1]:80/a@b", "mail user@example.com, see http://[::1]:80/a@b"),
    ("http://***@host/x", "http://***@host/x"),  # redacting twice changes nothing
])
def test_redact_urls(text, expected):
    assert redact_urls(text) == expected


def test_a_tuneline_error_is_redacted_when_it_is_built():
    err = ConfigError("storage: S3 bucket 'b' does not exist at http://key:s3cret@minio:9000; create it")
    assert SECRET not in str(err) and "http://***@minio:9000" in str(err)
    assert SECRET not in str(pickle.loads(pickle.dumps(err)))  # as Prefect stores a failed state
    gate = GateFailed("gate failed for s3://k:s3cret@bucket/run", summary={"model": "m"})
    assert SECRET not in str(gate) and gate.summary == {"model": "m"}
    assert SECRET not in str(DataError("data.source", "https://u:s3cret@host/x.csv"))


def test_other_exceptions_are_redacted_in_place_along_their_causes():
    from botocore.exceptions import EndpointConnectionError

    refused = ConnectionRefusedError(111, f"refused by http://u:{SECRET}@h:1/")  # (the secret stays out of the
    endpoint = f"http://key:{SECRET}@127.0.0.1:1/b/k"  # source lines that tracebacks show)
    try:
        try:
            raise refused
        except OSError as cause:
            raise EndpointConnectionError(endpoint_url=endpoint, error=cause) from cause
    except EndpointConnectionError as err:
        assert redact_exception(err) is err
        text = "".join(traceback.format_exception(err))
        assert SECRET not in text and 'endpoint URL: "http://***@127.0.0.1:1/b/k"' in text
        assert "[Errno 111] refused by http://***@h:1/\n" in text  # OSError's other fields untouched
        assert SECRET not in str(pickle.loads(pickle.dumps(err)))  # botocore rebuilds it from its kwargs


def test_the_log_filter_redacts_message_arguments_and_tracebacks():
    from flows.stages import RedactUrls, install_redaction

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("prefect.tuneline-redaction-test")
    handler = Keep()
    logger.addHandler(handler)
    try:
        install_redaction()
        install_redaction()  # idempotent
        assert sum(isinstance(f, RedactUrls) for f in handler.filters) == 1
        logger.warning("endpoint %s is down", f"http://key:{SECRET}@host:8333")
        failure = RuntimeError(f"could not reach https://u:{SECRET}@example.com/x")
        try:
            raise failure
        except RuntimeError:
            logger.exception("stage failed")
    finally:
        logger.removeHandler(handler)
    assert records[0] == "endpoint http://***@host:8333 is down"
    assert SECRET not in records[1] and "https://***@example.com/x" in records[1]


# -- one real run: an S3 storage root whose endpoint carries credentials and cannot be reached ---------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_whose_endpoint_carries_credentials_never_shows_them(monkeypatch, tmp_path, demo_csv, caplog):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://tuneline:{SECRET}@127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "tuneline")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("TUNELINE_CACHE", str(tmp_path / "cache"))
    for name in ("TUNELINE_S3_ATTEMPTS", "AWS_MAX_ATTEMPTS"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("TUNELINE_S3_CONNECT_TIMEOUT_S", "2")
    cfg = parse_config(make_config(demo_csv, "s3://tuneline-test/redaction", retries={"attempts": 1}))

    caplog.set_level(logging.INFO)
    state = finetune(config=cfg, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as failure:
        state.result()
    raised = "".join(traceback.format_exception(failure.value))
    assert "127.0.0.1" in raised and SECRET not in raised  # the endpoint is named, its password is not
    assert SECRET not in (state.message or "")
    assert "127.0.0.1" in caplog.text and SECRET not in caplog.text

    APILogWorker.drain_all()  # the run's logs reach the API (what the UI shows)
    with get_client(sync_client=True) as client:
        flow_run_id = state.state_details.flow_run_id
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    api_text = "\n".join(log.message for log in logs)
    assert "127.0.0.1" in api_text and SECRET not in api_text  # what the Prefect UI shows
    assert tasks and all(SECRET not in (t.state.message or "") for t in tasks)
