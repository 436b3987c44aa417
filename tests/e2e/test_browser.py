"""The Prefect UI: the on-demand deployment's custom-run form, filled in a real browser.

Opens /deployments/deployment/<id>/run in headless Debian chromium (Playwright, no downloaded
browsers), changes fields of the typed config form, submits, and checks through the API that
the flow run got those values and registered its model. Then a run with ``evaluation.approval:
required`` pauses after registering, and its promotion is approved on the run page (Resume, the
decision form). Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.e2e.conftest import ON_DEMAND, on_demand_config, runs_of, wait_for_run

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright  # in the test extra: a missing package is an error

    if not CHROMIUM.exists():
        missing("no /usr/bin/chromium: apt-get install -y chromium (Debian) to run the browser test")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def form_property(page, *labels: str):
    """The form property reached by its label path, e.g. ("Training", "Epochs")."""
    scope = page
    for label in labels:
        own_label = (f"./div[contains(@class, 'p-label__header')]//span[contains(@class, 'schema-form-property__label')]"
                     f"[normalize-space(.)='{label}' or normalize-space(.)='{label} (Optional)']")
        scope = scope.locator(f"xpath=.//div[contains(concat(' ', normalize-space(@class), ' '), "
                              f"' schema-form-property ')][{own_label}]").first
    return scope


def form_field(page, *labels: str):
    """The (first) input of that property."""
    return form_property(page, *labels).locator("input, textarea").first


def test_custom_run_from_the_form(prefect_stack, client, browser, tmp_path):
    deployment = client.read_deployment_by_name(ON_DEMAND)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{prefect_stack.url}/deployments/deployment/{deployment.id}/run")
    page.get_by_text("Registered model name.").wait_for(timeout=90_000)  # the config's field descriptions
    page.screenshot(path=str(tmp_path / "form.png"), full_page=True)

    # the defaults are shown; change what makes this a quick, distinct run
    assert form_field(page, "Name").input_value() == "demo-sentiment"
    assert form_field(page, "Data", "Source").input_value() == "examples/data/reviews.csv"
    form_field(page, "Name").fill("browser-run")
    form_field(page, "Training", "Epochs").fill("0.2")
    form_field(page, "Model", "Max Length").fill("32")
    form_field(page, "Evaluation", "Minimum").fill("0")
    page.screenshot(path=str(tmp_path / "form-filled.png"), full_page=True)
    form_property(page, "Training").screenshot(path=str(tmp_path / "form-training.png"))
    before = {run.id for run in runs_of(client, deployment.id)}
    assert form_field(page, "Evaluation", "Minimum").input_value() == "0", "the form took the changes"
    page.get_by_role("button", name="Submit").click()
    # a loaded CI machine (two workers training beside the server and the browser) can take a while here
    page.wait_for_url(re.compile(rf".*/deployments/deployment/{deployment.id}(\?.*)?$"), timeout=120_000)
    deadline = time.monotonic() + 90
    while not (new := [run for run in runs_of(client, deployment.id) if run.id not in before]):
        assert time.monotonic() < deadline, "no flow run was created by the form"
        time.sleep(0.5)
    [created] = new
    flow_run_id = str(created.id)

    run = wait_for_run(client, flow_run_id)
    assert run.state.type.value == "COMPLETED", run.state.message
    config = run.parameters["config"]
    assert config["name"] == "browser-run"
    assert float(config["training"]["epochs"]) == 0.2 and int(config["model"]["max_length"]) == 32
    assert config["data"]["source"] == "examples/data/reviews.csv"  # untouched default kept
    storage = Path(prefect_stack.extra_env["TUNELINE_STORAGE"])
    manifest = json.loads((storage / "registry" / "browser-run" / "versions" / "000001" / "manifest.json").read_text())
    assert manifest["run_id"] == flow_run_id and manifest["config"]["training"]["epochs"] == 0.2

    page.goto(f"{prefect_stack.url}/runs/flow-run/{flow_run_id}")
    page.get_by_text("Artifacts", exact=True).first.click()
    try:
        page.get_by_text("browser-run-metrics").first.wait_for(timeout=60_000)
    finally:
        page.screenshot(path=str(tmp_path / "run-artifacts.png"), full_page=True)
    print(f"screenshots in {tmp_path}")


def test_approve_a_promotion_on_the_paused_run_page(prefect_stack, client, browser, tmp_path):
    """evaluation.approval: required through the worker: the run pauses after registering; a person opens its
    page, presses Resume, fills the decision form (shown under the metrics) and submits; the run promotes."""
    from prefect.states import Cancelling

    storage = Path(prefect_stack.extra_env["TUNELINE_STORAGE"])  # the form test's: its training is reused
    config = on_demand_config(client, storage, name="browser-approval", **{
        "evaluation.approval": "required", "evaluation.approval_timeout_hours": 0.1})
    deployment = client.read_deployment_by_name(ON_DEMAND)
    flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        wait_for_paused(client, flow_run.id)
        page.goto(f"{prefect_stack.url}/runs/flow-run/{flow_run.id}")
        page.get_by_role("button", name="Resume").first.click()
        page.get_by_text("Promote browser-approval version 1 to production?").wait_for(timeout=90_000)
        form_field(page, "Decided By").fill("ana@example.com")
        form_field(page, "Comment").fill("approved in the browser")
        form_property(page, "Approve").locator("[role=switch], input[type=checkbox]").first.click()
        page.screenshot(path=str(tmp_path / "approval-form.png"), full_page=True)
        page.get_by_role("dialog").get_by_role("button", name=re.compile("Submit|Resume")).last.click()

        run = wait_for_run(client, flow_run.id)
        assert run.state.type.value == "COMPLETED", run.state.message
        pointer = json.loads((storage / "registry" / "browser-approval" / "aliases" / "production.json").read_text())
        [move] = pointer["history"]
        assert (move["to"], move["approval"], move["decided_by"], move["comment"]) == (
            1, "approved", "ana@example.com", "approved in the browser")
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        model_artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["browser-approval-model"])))  # register's, then promote's (the decision)
        latest = max(model_artifacts, key=lambda artifact: artifact.created)
        page.goto(f"{prefect_stack.url}/artifacts/artifact/{latest.id}")
        try:
            page.get_by_text("approved by ana@example.com", exact=False).first.wait_for(timeout=90_000)
        finally:
            page.screenshot(path=str(tmp_path / "approved-model-artifact.png"), full_page=True)
        print(f"approval screenshots: {tmp_path / 'approval-form.png'}, {tmp_path / 'approved-model-artifact.png'}")
    finally:
        page.close()
        current = client.read_flow_run(flow_run.id).state
        if not current.is_final():  # never leave a paused run holding the pool's only slot
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)


def wait_for_paused(client, flow_run_id, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not (state := client.read_flow_run(flow_run_id).state) or not state.is_paused():
        assert not (state and state.is_final()), f"the run ended {state.name} instead of pausing: {state.message}"
        assert time.monotonic() < deadline, f"flow run {flow_run_id} not Paused after {timeout_s}s ({state.name})"
        time.sleep(1)
