"""A registered version's model card, and a person approving its promotion, on a real Prefect API.

The card: pulled with the version, it parses as a Hugging Face model card whose header holds the base model,
the task and the manifest's metrics (model-index), it is checksummed in the manifest, and its "How to load"
code runs as printed against the pulled folder.

Approval (``evaluation.approval: required``): the flow runs in a thread, registers the winner without
promoting it and pauses; the test waits for the Paused state through the API and resumes the run with
input (approve / reject), or lets the approval time out. Every run shares one storage root, so the
candidate trains once and the later runs find it cached.
"""

from __future__ import annotations

import contextvars
import re
import shutil
import threading
import time
import uuid

import pytest

from tests.conftest import EXAMPLES, make_config
from tuneline.config import parse_config
from tuneline.fingerprints import sha256_file
from tuneline.registry import Registry
from tuneline.storage import LocalStorage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
STAGES = ["ingest", "validate", "preprocess", "train", "evaluate", "register"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_bert):
    """(data file, storage root, base model) shared by the module's runs: one training, cached for the others."""
    root = tmp_path_factory.mktemp("card-approval")
    shutil.copy(EXAMPLES / "data" / "reviews.csv", root / "reviews.csv")
    (root / "store").mkdir()
    return root / "reviews.csv", root / "store", tiny_bert


def tiny_config(shared, name: str, **evaluation):
    data, store, base = shared
    return parse_config(make_config(data, store, name=name, training={"epochs": 0.2}, evaluation={"minimum": 0.0,
                                    **evaluation}, model={"base": str(base), "max_length": 32}))


def test_a_pulled_version_carries_a_model_card_that_loads_it(shared, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from flows.finetune import finetune

    summary = finetune(config=tiny_config(shared, "card-model"))
    registry = Registry(LocalStorage(shared[1]))
    manifest = registry.manifest("card-model", summary["version"])
    folder = registry.pull(f"card-model:{summary['version']}", tmp_path / f"card-model-v{summary['version']}")
    assert manifest["files"]["README.md"]["sha256"] == sha256_file(folder / "README.md")

    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == str(shared[2]) == manifest["base_model"]["name"]
    assert data["pipeline_tag"] == "text-classification" and data["library_name"] == "transformers"
    assert data["dataset_fingerprint"] == manifest["dataset_fingerprint"] == summary["dataset_fingerprint"]
    scores = {k: v for k, v in manifest["metrics"].items() if isinstance(v, float)}
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == scores
    assert "f1_macro" in scores and {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert f"**{manifest['gate']['decision']}** ({manifest['gate']['reason']})" in card.text

    [example] = re.findall(r"```python\n(.*?)```", card.text, re.S)
    assert f"folder = 'card-model-v{summary['version']}'" in example
    monkeypatch.chdir(tmp_path)  # as a user who pulled it here, the way the card says
    printed = []  # not capsys: Prefect's console log handler, created during this test's flow run, keeps its stream
    exec(compile(example, "card-example", "exec"), {"__name__": "card_example", "print": printed.append})
    [labels] = printed
    assert labels[0] in ("negative", "positive")


# -- approval -------------------------------------------------------------------------------------------------------

def run_in_thread(config) -> tuple[threading.Thread, dict]:
    """The flow in a thread (its Prefect settings and context copied): the test resumes it meanwhile."""
    from flows.finetune import finetune

    outcome: dict = {}

    def target():
        try:
            outcome["summary"] = finetune(config=config)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            outcome["error"] = err

    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)
    thread.start()
    return thread, outcome


def paused_run(name: str, outcome: dict, timeout_s: float = 300):
    """The finetune run of model ``name`` once it is Paused (fails the test after ``timeout_s``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            for run in client.read_flow_runs(flow_run_filter=paused):
                if run.parameters.get("config", {}).get("name") == name:
                    return run
            if outcome:
                pytest.fail(f"the flow ended without pausing: {outcome}")
            time.sleep(0.5)
    pytest.fail(f"no Paused flow run of {name} after {timeout_s}s")


def finished(thread: threading.Thread, outcome: dict) -> dict:
    thread.join(timeout=300)
    assert not thread.is_alive(), "the flow did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"]


def final_state(flow_run_id) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(str(flow_run_id))).state.type.value


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
def test_a_person_decides_through_the_api(approve, shared):
    from prefect.flow_runs import resume_flow_run

    name = f"approval-{'yes' if approve else 'no'}"
    registry = Registry(LocalStorage(shared[1]))
    thread, outcome = run_in_thread(tiny_config(shared, name, approval="required", approval_timeout_hours=0.05))
    paused = paused_run(name, outcome)
    assert registry.versions(name) == [1] and registry.alias(name, "production") is None  # registered, not promoted
    who, why = ("ana@example.com", "errors look fine") if approve else ("bob", "too few test rows")
    resume_flow_run(paused.id, run_input={"approve": approve, "decided_by": who, "comment": why})
    summary = finished(thread, outcome)

    assert final_state(paused.id) == "COMPLETED"
    assert list(summary["stages"]) == [*STAGES, "promote"] and summary["version"] == 1
    approval = summary["approval"]
    assert (approval["status"], approval["decided_by"], approval["comment"]) == (
        "approved" if approve else "rejected", who, why)
    assert summary["promoted"] is approve
    pointer = registry.alias(name, "production")
    if not approve:
        assert pointer is None and summary["promotion_note"] == f"not promoted: rejected by {who}: {why}"
        return
    [move] = pointer["history"]
    assert (move["from"], move["to"], move["by"]) == (None, 1, str(paused.id))
    assert (move["approval"], move["decided_by"], move["comment"]) == ("approved", who, why)
    assert move["decided_at"] and move["at"] >= move["decided_at"]  # the decision, then the move it allowed


def test_no_decision_in_time_leaves_the_version_unpromoted(shared):
    name = "approval-timeout"
    thread, outcome = run_in_thread(tiny_config(shared, name, approval="required", approval_timeout_hours=0.001))
    summary = finished(thread, outcome)  # 3.6 s: the run resumes itself
    assert summary["approval"]["status"] == "timed_out" and not summary["promoted"]
    assert summary["promotion_note"].startswith("not promoted: timed_out")
    registry = Registry(LocalStorage(shared[1]))
    assert registry.versions(name) == [1] and registry.alias(name, "production") is None
    assert final_state(registry.manifest(name, 1)["run_id"]) == "COMPLETED"  # not failed by Prefect's pause deadline
