"""Fault: SIGTERM to the process running the flow (Prefect cancellation, ``docker stop``, preemption).

Caused for real: ``tuneline run`` (its own temporary Prefect server, the real training child) gets SIGTERM
while the child trains. The child must get SIGTERM and its grace period, save a checkpoint and exit; no
process the command started may be left running (the temporary server included); the next run resumes
from that checkpoint. Also: with ``--json`` the summary is the very last line of the combined output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import EXAMPLES
from tests.faults.runs import alive, command_line, complete_steps, descendants, tuneline_run

pytestmark = pytest.mark.slow

EVERY = 40  # steps between periodic checkpoints: far more than a stopped child could train in its last second
SETTINGS = ("training.epochs=4", f"training.checkpoint_every_steps={EVERY}", "training.checkpoint_every_minutes=null",
            "model.max_length=32")


def test_sigterm_to_the_run_checkpoints_leaves_nothing_running_and_the_next_run_resumes(tmp_path):
    store, home = tmp_path / "store", tmp_path / "prefect-home"
    run = tuneline_run(store, home, *SETTINGS)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while EVERY not in complete_steps(store):
            assert run.poll() is None, run.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no periodic checkpoint was written"
            started |= descendants(run.pid)
            time.sleep(0.1)
        started |= descendants(run.pid)
        assert any(b"tuneline.training.process" in command_line(pid) for pid in started), "the child trains"
        assert any(b"uvicorn" in command_line(pid) for pid in started), "the temporary Prefect server runs"
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=120)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert_all_gone(started, output)
    saved = complete_steps(store)
    assert saved[-1] > EVERY and saved[-1] < 2 * EVERY, f"no checkpoint on SIGTERM (complete: {saved})"

    again = tuneline_run(store, home, *SETTINGS, json_summary=True)
    output = again.communicate(timeout=400)[0]
    assert again.returncode == 0, output[-3000:]
    summary = json.loads(output.strip().splitlines()[-1])  # what `2>&1 | tail -1` gives
    assert summary["model"] == "demo-sentiment" and summary["version"] == 1 and summary["gate"]["passed"]
    assert list(summary["stages"]) == ["ingest", "validate", "preprocess", "train", "evaluate", "register"]
    assert all({"status", "seconds", "attempts"} <= set(stage) for stage in summary["stages"].values())
    assert summary["stages"]["train"]["status"] == "resumed"
    assert summary["stages"]["train"]["resumed_from_step"] == saved[-1]
    assert summary["stages"]["ingest"]["status"] == "cached", "the killed run's finished stages are reused"
    assert summary["metrics"]["f1_macro"] == summary["gate"]["value"]
    trained = json.loads(next(store.glob("candidates/*/training.json")).read_text())
    assert trained["resumed_from_step"] == saved[-1]


def test_sigterm_to_a_sweep_checkpoints_every_concurrent_trial(tmp_path):
    """Trials of ``--max-concurrent 2`` train in worker threads, where no signal arrives: the flow stops their
    trainings itself (each checkpoints), instead of waiting for them to finish."""
    store = tmp_path / "store"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    overrides = [f"storage={store}", f"training.checkpoint_every_steps={EVERY}", "model.max_length=32",
                 "training.checkpoint_every_minutes=null"]
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "sweep", str(EXAMPLES / "sweep.yaml"),
                            "--grid", "training.epochs=0.2,8,9", "--max-concurrent", "2",
                            *(arg for setting in overrides for arg in ("--set", setting))],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 400
        while len(list(store.glob(f"candidates/*/checkpoints/checkpoint-{EVERY}/COMPLETE"))) < 2:
            assert run.poll() is None, run.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the two concurrent trials never both checkpointed"
            started |= descendants(run.pid)
            time.sleep(0.1)
        started |= descendants(run.pid)
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=180)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert_all_gone(started, output)
    trials = {p.parent.parent.parent for p in store.glob(f"candidates/*/checkpoints/checkpoint-{EVERY}/COMPLETE")}
    assert len(trials) == 2
    for candidate in trials:
        steps = sorted(int(p.parent.name.split("-")[1]) for p in candidate.glob("checkpoints/*/COMPLETE"))
        assert EVERY < steps[-1] < 2 * EVERY, f"{candidate.name}: no checkpoint on SIGTERM ({steps})"


def assert_all_gone(pids: set[int], output: str) -> None:
    """None of ``pids`` is alive within 10 s (reaping by init can lag the command's exit a little)."""
    deadline = time.monotonic() + 10
    while [pid for pid in pids if alive(pid)]:
        assert time.monotonic() < deadline, f"left running after the command ended:\n{output[-2000:]}"
        time.sleep(0.1)
