"""One real Prefect server + process worker on loopback for the deployment and browser tests.

The stack (scripts/prefect_stack.py) is set up the way `make serve` sets it up: infra/setup_prefect.py
(pool `gpu`, concurrency limits, the failure automation, whose webhook points at a receiver in this
test process), `prefect deploy --all --prefect-file deployments/prefect.yaml`, a process worker.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts.prefect_stack import PrefectStack

ON_DEMAND = "finetune/finetune-on-demand"
SCHEDULED = "finetune/retrain-nightly"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class WebhookReceiver:
    """A local HTTP endpoint that records every POSTed JSON body (the notification block's target)."""

    def __init__(self):
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="session")
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory, webhook):
    """Server, pool `gpu` with limits and automation, both deployments, one process worker."""
    storage = tmp_path_factory.mktemp("worker-storage")  # runs that keep the default `storage: null`
    stack = PrefectStack(tmp_path_factory.mktemp("prefect-home"), extra_env={"TUNELINE_STORAGE": str(storage)})
    stack.start()
    try:
        stack.setup("--webhook-url", webhook.url)
        stack.deploy()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def client(prefect_stack):
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(prefect_stack.api_url) as api:
        yield api


def runs_of(client, deployment_id):
    """The flow runs of one deployment (the nightly's scheduled runs never count in another's)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def on_demand_config(client, storage, **changes) -> dict:
    """The on-demand deployment's default config with a tmp storage root, small settings and ``changes``."""
    config = copy.deepcopy(client.read_deployment_by_name(ON_DEMAND).parameters["config"])
    config["storage"] = str(storage)
    config["training"] = {**config.get("training", {}), "epochs": 0.2}
    config["model"] = {**config.get("model", {}), "max_length": 32}
    config["evaluation"] = {**config.get("evaluation", {}), "minimum": 0.0}
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def wait_for_run(client, flow_run_id, timeout_s: float = 420):
    """The flow run once it reached a terminal state (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.type.value in TERMINAL:
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"flow run {flow_run_id} still {run.state.name if run.state else None} after {timeout_s}s")
        time.sleep(1)
