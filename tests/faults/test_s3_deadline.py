"""Fault: the S3 endpoint is black-holed (it accepts connections and never answers).

Caused for real: a TCP server in the test accepts every connection and stays silent; AWS_ENDPOINT_URL
points at it. Before: one ``tuneline models list`` hung for 721 s (6 attempts x 120 s read timeout).
What must hold: the call fails with one message naming the endpoint, after exactly the configured
number of attempts (counted as connections the black hole accepted, not timed), as a transient error
that stage retries retry; the defaults bound one storage call to about two minutes; a bad override
is a config error naming the variable.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import point_aws_env_at
from tuneline.errors import ConfigError, TunelineError
from tuneline.storage.s3 import (
    ATTEMPTS, BACKOFF_CAP_S, CONNECT_TIMEOUT_S, DEADLINE_S, READ_TIMEOUT_S, STREAM_ATTEMPTS, S3Storage,
    S3Unreachable, public_endpoint,
)

SAFETY_TIMEOUT_S = 60  # only against a hang; the calls below take a few seconds
FAST = {"TUNELINE_S3_CONNECT_TIMEOUT_S": "2", "TUNELINE_S3_READ_TIMEOUT_S": "1", "TUNELINE_S3_ATTEMPTS": "2"}
HEAD_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: application/octet-stream\r\n"
              b'ETag: "0123456789abcdef0123456789abcdef"\r\nLast-Modified: Wed, 01 Jan 2025 00:00:00 GMT\r\n\r\n')


class BlackHole:
    """A TCP server that accepts every connection and never answers (``answer_head``: except HEAD requests).

    ``connections`` counts accepted connections; ``requests`` lists the method of each request read
    (only read when ``answer_head``: a pure black hole never reads a byte).
    """

    def __init__(self, answer_head: bool = False):
        self.answer_head = answer_head
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.requests: list[str] = []
        self.idle_polls = 0  # accept() timeouts so far: a poll that found no connection waiting
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def connections(self) -> int:
        return len(self.sockets)

    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing a client at the black hole (dummy credentials)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "test-key",
                "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                self.idle_polls += 1
                continue
            self.sockets.append(conn)
            if self.answer_head:
                threading.Thread(target=self._serve_head, args=(conn,), daemon=True).start()

    def _serve_head(self, conn: socket.socket) -> None:
        """Read requests; answer HEAD, then go silent on anything else (a GET's reply never comes)."""
        buffer = b""
        try:
            while not self.stopped.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                method = head.split(b" ", 1)[0].decode()
                self.requests.append(method)
                if method != "HEAD":
                    return  # silent: hold the connection open until the client gives up
                conn.sendall(HEAD_REPLY)
        except OSError:
            return

    def settle(self) -> None:
        """Wait until every connection the client made has been accepted (two idle polls in a row)."""
        polls = self.idle_polls
        deadline = time.monotonic() + 5
        while self.idle_polls < polls + 2 and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()
        for conn in self.sockets:
            conn.close()


@pytest.fixture
def black_hole(monkeypatch, tmp_path):
    server = BlackHole()
    point_aws_env_at(server, monkeypatch, tmp_path / "cache")
    yield server
    server.close()


@pytest.fixture
def fast_overrides(monkeypatch):
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)


def within_safety_timeout(call):
    """``call()`` in a thread; fails the test (instead of hanging the suite) if it runs past SAFETY_TIMEOUT_S."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as err:  # handed to the test thread
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(SAFETY_TIMEOUT_S)
    assert not worker.is_alive(), f"still waiting on the black hole after {SAFETY_TIMEOUT_S} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_models_list_against_a_black_hole_fails_once_with_the_endpoint_named(black_hole, fast_overrides, capsys):
    from flows.cli import main

    code = within_safety_timeout(lambda: main(["models", "--storage", "s3://bucket/x", "list"]))

    black_hole.settle()
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: S3Unreachable: storage: the S3 endpoint {black_hole.endpoint} did not answer "
                          "within 1 s"), err
    assert "tried 2 times" in err and "test-secret" not in err, err
    assert black_hole.connections == 2  # TUNELINE_S3_ATTEMPTS, no more: botocore's retries are bounded


def test_a_download_that_goes_silent_after_head_is_bounded_too(monkeypatch, tmp_path, fast_overrides):
    """HEAD answers, every GET stays silent: s3transfer's retries multiply botocore's; STREAM_ATTEMPTS bounds them."""
    server = BlackHole(answer_head=True)
    point_aws_env_at(server, monkeypatch, tmp_path / "cache")
    try:
        storage = S3Storage.from_uri("s3://bucket/x")
        target = tmp_path / "out" / "config.json"
        with pytest.raises(S3Unreachable, match="did not answer within 1 s") as failure:
            within_safety_timeout(lambda: storage.get_file("model/config.json", target))
        server.settle()
    finally:
        server.close()
    assert not isinstance(failure.value, TunelineError)  # an outage: the stage retry policy retries it
    assert server.requests == ["HEAD"] + ["GET"] * (2 * STREAM_ATTEMPTS), server.requests
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_the_default_worst_case_is_about_two_minutes():
    """The bound the module docstring states, recomputed here from its constants."""
    backoff = sum(min(2 ** retry, BACKOFF_CAP_S) for retry in range(ATTEMPTS - 1))  # 1 s, then 2 s
    one_request = ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + backoff
    worst_case = STREAM_ATTEMPTS * one_request  # a managed download re-runs its GET after all attempts
    assert worst_case == DEADLINE_S
    assert worst_case <= 150, worst_case


def test_the_defaults_and_overrides_reach_botocore(black_hole, monkeypatch):
    for name in (*FAST, "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    config = S3Storage("bucket").client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    assert config.retries == {"mode": "standard", "total_max_attempts": ATTEMPTS}
    assert S3Storage("bucket").transfer.num_download_attempts == STREAM_ATTEMPTS

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    assert S3Storage("bucket").attempts == 4
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    storage = S3Storage("bucket")
    assert (storage.connect_timeout_s, storage.read_timeout_s, storage.attempts) == (2, 1, 2)


@pytest.mark.parametrize("name, value", [
    ("TUNELINE_S3_READ_TIMEOUT_S", "abc"), ("TUNELINE_S3_CONNECT_TIMEOUT_S", "-1"),
    ("TUNELINE_S3_READ_TIMEOUT_S", "inf"), ("TUNELINE_S3_ATTEMPTS", "0"), ("TUNELINE_S3_ATTEMPTS", "2.5"),
    ("AWS_MAX_ATTEMPTS", "many"),
])
def test_a_bad_override_is_a_config_error_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=rf"^{name}={value!r} is not a "):
        S3Storage.from_uri("s3://bucket/x")


def test_a_bad_override_fails_the_cli_with_exit_2(black_hole, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setenv("TUNELINE_S3_READ_TIMEOUT_S", "abc")
    assert main(["models", "--storage", "s3://bucket/x", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TUNELINE_S3_READ_TIMEOUT_S='abc' is not a timeout"), err
    assert black_hole.connections == 0


def test_messages_never_show_the_endpoints_userinfo():
    url = "https://user:secret@s3.example.com:9000/base?token=x#f"
    assert public_endpoint(url) == "https://s3.example.com:9000/base"
    assert public_endpoint("http://[::1]:8333") == "http://[::1]:8333"
