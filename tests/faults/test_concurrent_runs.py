"""Fault: two runs with the same training key at once (an on-demand run beside the nightly one).

Caused for real: two ``tuneline run`` commands (each its own temporary Prefect server and flow run) on one
storage root; the second starts while the first trains. Without a lease both trained into the same
``candidates/<key>/`` and could delete each other's checkpoints or change ``model/`` under a registration.
Expected: the second waits for the lease, then reuses the finished training; one writer, one version.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.runs import tuneline_run

pytestmark = pytest.mark.slow

SETTINGS = ("training.epochs=10", "model.max_length=32")


def test_a_second_run_with_the_same_key_waits_for_the_first_and_reuses_its_training(tmp_path):
    store = tmp_path / "store"
    first = tuneline_run(store, tmp_path / "home-1", *SETTINGS, json_summary=True)
    second = None
    try:
        deadline = time.monotonic() + 300
        while not list(store.glob("candidates/*/lease.json")):
            assert first.poll() is None, first.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the first run never started training"
            time.sleep(0.1)
        second = tuneline_run(store, tmp_path / "home-2", *SETTINGS, json_summary=True)
        outputs = [run.communicate(timeout=600)[0] for run in (first, second)]
    finally:
        for run in (first, second):
            if run is not None and run.poll() is None:
                run.kill()
    assert [first.returncode, second.returncode] == [0, 0], outputs[1][-3000:] + outputs[0][-3000:]
    assert "another run is training this candidate" in outputs[1]
    assert "another run is training this candidate" not in outputs[0]
    summaries = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert summaries[0]["version"] == summaries[1]["version"] == 1, "one candidate, registered once"
    assert len(list(store.glob("candidates/*/training.json"))) == 1
    assert not list(store.glob("candidates/*/train-failed-*.log")), "neither run's training failed"
    candidate = next(store.glob("candidates/*/training.json")).parent
    assert json.loads((candidate / "lease.json").read_text())["released"], "the lease is released when done"
