"""Deployments on a real Prefect server with a process worker on pool `gpu`.

deployments/prefect.yaml deploys as the README says; the on-demand deployment runs through
the worker with a parameter override and registers its model; a bad parameter is refused by
the server before any work; the schedule is there; every infra template and the failure
automation are accepted by the server, and the automation fires on a failed run; the alert
block keeps its webhook URL in its secret field.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.e2e.conftest import ON_DEMAND, SCHEDULED, on_demand_config, runs_of, wait_for_run
from scripts.prefect_stack import REPO

pytestmark = pytest.mark.slow


def run_deployment(stack, config: dict) -> tuple[str | None, str]:
    """`prefect deployment run` with a config override; (flow run id or None, CLI output)."""
    done = stack.run("deployment", "run", ON_DEMAND, "--params", json.dumps({"config": config}), check=False)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
    return (found.group(1) if found else None), done.stdout + done.stderr


def test_both_deployments_on_the_gpu_pool(client):
    on_demand, scheduled = client.read_deployment_by_name(ON_DEMAND), client.read_deployment_by_name(SCHEDULED)
    for deployment in (on_demand, scheduled):
        assert deployment.work_pool_name == "gpu"
        assert deployment.entrypoint == "flows/finetune.py:finetune"
        assert deployment.enforce_parameter_schema is True
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert on_demand.schedules == []
    sweep = client.read_deployment_by_name("sweep/sweep-on-demand")
    assert (sweep.work_pool_name, sweep.entrypoint, sweep.schedules) == ("gpu", "flows/sweep.py:sweep", [])
    assert sweep.parameters["grid"] == {"training.learning_rate": [5e-5, 1e-4]}
    assert on_demand.parameters["config"]["data"]["source"] == "examples/data/reviews.csv"
    [schedule] = scheduled.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 2 * * *", "Europe/Berlin", True)
    assert scheduled.parameters["config"]["data"]["source"].startswith("s3://")
    # the typed config is the form: sections, descriptions, enums, defaults
    schema = on_demand.parameter_openapi_schema
    definitions = schema.get("definitions") or schema.get("$defs")
    training = definitions["TrainingConfig"]["properties"]
    assert training["epochs"]["default"] == 3 and training["epochs"]["description"]
    assert definitions["Precision"]["enum"] == ["auto", "fp32", "bf16", "fp16"]
    assert schema["required"] == ["config"]


def test_prediction_deployments_with_the_nightly_schedule_off(client):
    nightly = client.read_deployment_by_name("predict/score-nightly")
    on_demand = client.read_deployment_by_name("predict/predict-on-demand")
    for deployment in (nightly, on_demand):
        assert (deployment.work_pool_name, deployment.entrypoint) == ("gpu", "flows/predict.py:predict")
        assert deployment.enforce_parameter_schema is True
        assert set(deployment.parameter_openapi_schema["required"]) == {"ref", "data", "out"}
    [schedule] = nightly.schedules
    assert (schedule.schedule.cron, schedule.active) == ("0 3 * * *", False), "off until someone turns it on"
    assert nightly.parameters["out"].startswith("s3://") and on_demand.schedules == []


def test_a_bad_parameter_is_refused_before_any_work(prefect_stack, client, tmp_path):
    deployment = client.read_deployment_by_name(ON_DEMAND).id
    before = len(runs_of(client, deployment))  # not the nightly's scheduled runs
    for change, field, reason in ((("training.precision", "fp8"), "config.training.precision", "is not one of"),
                                  (("training.epochs", -1), "config.training.epochs", "minimum"),
                                  (("data.seed", "forty-two"), "config.data.seed", "is not of type 'integer'")):
        config = on_demand_config(client, tmp_path / "store", **dict([change]))
        flow_run_id, output = run_deployment(prefect_stack, config)
        assert flow_run_id is None, output
        flat = " ".join(output.split())
        assert f"Validation failed for field '{field}'" in flat and reason in flat, output
    assert len(runs_of(client, deployment)) == before  # nothing was created, no work started


def test_on_demand_run_through_the_worker_registers_the_model(prefect_stack, client, tmp_path):
    storage = tmp_path / "store"
    config = on_demand_config(client, storage, name="e2e-on-demand")
    started = time.monotonic()
    flow_run_id, output = run_deployment(prefect_stack, config)
    assert flow_run_id, output
    run = wait_for_run(client, flow_run_id)
    assert run.state.type.value == "COMPLETED", (run.state.message, (prefect_stack.home / "worker.log").read_text()[-3000:])
    print(f"on-demand run through the worker: {time.monotonic() - started:.1f}s")
    assert run.parameters["config"]["training"]["epochs"] == 0.2
    manifest = json.loads((storage / "registry" / "e2e-on-demand" / "versions" / "000001" / "manifest.json").read_text())
    assert manifest["config"]["training"]["epochs"] == 0.2 and manifest["config"]["model"]["max_length"] == 32
    assert manifest["run_id"] == flow_run_id
    # the run page's artifacts: validation, metrics, per-class, confusion matrix, model, progress
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    by_key = {a.key: a for a in artifacts if a.key}
    assert {"e2e-on-demand-validation", "e2e-on-demand-metrics", "e2e-on-demand-per-class",
            "e2e-on-demand-confusion-matrix", "e2e-on-demand-model"} <= set(by_key)
    assert by_key["e2e-on-demand-validation"].type == "table"
    assert "expect_column_to_exist" in json.dumps(by_key["e2e-on-demand-validation"].data)
    assert "f1_macro" in json.dumps(by_key["e2e-on-demand-metrics"].data)
    assert "true \\\\ predicted" in json.dumps(by_key["e2e-on-demand-confusion-matrix"].data)
    assert "**Version:** 1" in by_key["e2e-on-demand-model"].data
    assert str(storage) in by_key["e2e-on-demand-model"].data
    [progress] = [a for a in artifacts if a.type == "progress"]
    assert progress.data == 100.0 and "Trained" in progress.description
    # the train task carries the tag of the GPU concurrency limit
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert {t.name.split("-")[0]: "gpu-train" in t.tags for t in tasks} == {
        "ingest": False, "validate": False, "preprocess": False, "train": True, "evaluate": False, "register": False}


def test_infra_templates_are_accepted_by_the_server(prefect_stack, client):
    for pool_type in ("process", "docker", "kubernetes"):
        template = REPO / "infra" / "work-pools" / f"{pool_type}.json"
        prefect_stack.run("work-pool", "create", f"accept-{pool_type}", "--type", pool_type,
                          "--base-job-template", str(template))
        pool = client.read_work_pool(f"accept-{pool_type}")
        assert pool.type == pool_type
        assert pool.base_job_template == json.loads(template.read_text())
    gpu = client.read_work_pool("gpu")
    assert gpu.type == "process" and gpu.concurrency_limit == 1
    assert client.read_concurrency_limit_by_tag("gpu-train").concurrency_limit == 1


def test_failure_automation_is_accepted_and_notifies(prefect_stack, client, webhook, tmp_path):
    [automation] = client.read_automations_by_name("tuneline-run-failed")
    assert automation.enabled and automation.actions[0].type == "send-notification"
    # the file as committed (block id filled in) is accepted by the CLI too
    spec = json.loads(json.dumps(__import__("yaml").safe_load(
        (REPO / "infra" / "automations" / "notify-on-failure.yaml").read_text())))
    spec["name"] = "cli-accepts-it"
    spec["actions"][0]["block_document_id"] = str(automation.actions[0].block_document_id)
    path = tmp_path / "automation.json"
    path.write_text(json.dumps(spec))
    prefect_stack.run("automation", "create", "--from-file", str(path))
    assert client.read_automations_by_name("cli-accepts-it")
    # a run that fails (its data is missing) sends the notification
    config = on_demand_config(client, tmp_path / "store", name="e2e-fails",
                              **{"data.source": str(tmp_path / "missing.csv"), "retries.attempts": 1})
    flow_run_id, output = run_deployment(prefect_stack, config)
    run = wait_for_run(client, flow_run_id)
    assert run.state.type.value == "FAILED"
    deadline = time.monotonic() + 120
    alerts = []
    while len(alerts) < 2:  # one per automation: the set-up one and the one the CLI created
        if time.monotonic() > deadline:
            pytest.fail(f"not two notifications for failed run {run.name}; received {webhook.received}")
        time.sleep(0.5)
        alerts = [body for body in webhook.received if run.name in json.dumps(body)]
    print("alert:", alerts[0]["text"])
    assert len(alerts) == 2, alerts
    for alert in alerts:
        assert "Failed" in alert["text"] and "missing.csv" in alert["text"], alert


def test_the_webhook_url_is_kept_in_the_alert_blocks_secret_field(prefect_stack, client, webhook):
    """The block's plain fields (shown in the UI and returned by the API) hold a template, not the URL."""
    [automation] = client.read_automations_by_name("tuneline-run-failed")
    block_id = automation.actions[0].block_document_id
    shown = client.read_block_document(block_id, include_secrets=False)
    assert shown.name == "tuneline-alerts"
    assert webhook.url not in json.dumps(shown.data, default=str), shown.data
    assert "127.0.0.1" not in json.dumps(shown.data, default=str)
    assert shown.data["url"] == "{{webhook_url}}"
    stored = client.read_block_document(block_id, include_secrets=True)  # what the notification uses
    assert stored.data["secrets"] == {"webhook_url": webhook.url}
