"""flows.sweep.run_trials: child flow runs in threads, at most max_concurrent at once, results in order.

The trial flow is replaced by a trivial one (no training); the Prefect API is the real test harness.
"""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow
from prefect.context import FlowRunContext

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_trials_run_as_concurrent_child_flows_in_grid_order(monkeypatch):
    import flows.sweep as sweep_flow

    running, peak, lock = [0], [0], threading.Lock()
    together = threading.Barrier(2, timeout=60)  # trials 1 and 2 pass only if they run at the same time

    @flow(name="fake-trial")
    def fake_trial(config, trial: int, parameters: dict) -> dict:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if trial in (1, 2):
            together.wait()
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        if trial == 3:
            raise RuntimeError("diverged")
        parent = FlowRunContext.get().flow_run.parent_task_run_id
        return {"trial": trial, "parameters": parameters, "validation": float(trial), "is_child": parent is not None}

    monkeypatch.setattr(sweep_flow, "sweep_trial", fake_trial)

    @flow(name="fake-sweep")
    def parent() -> list[dict]:
        return sweep_flow.run_trials([None] * 4, [{"x": i} for i in range(4)], max_concurrent=2)

    trials = parent()
    assert [t["trial"] for t in trials] == [0, 1, 2, 3]
    assert all(t["is_child"] for t in trials[:3])  # subflow runs of the sweep
    assert trials[3]["status"] == "failed" and "diverged" in trials[3]["error"]
    assert peak[0] == 2  # the first trial alone, then two at a time, never more
