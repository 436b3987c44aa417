"""The Prefect UI: the on-demand deployment's custom-run form, filled in a real browser.

Opens /deployments/deployment/<id>/run in headless Debian chromium (Playwright, no downloaded
browsers), changes fields of the typed config form, submits, and checks through the API that
the flow run got those values and registered its model. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.e2e.conftest import ON_DEMAND, runs_of, wait_for_run

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
    page.get_by_text("Registered model name.").wait_for(timeout=30_000)  # the config's field descriptions
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
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(rf".*/deployments/deployment/{deployment.id}(\?.*)?$"), timeout=30_000)
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
