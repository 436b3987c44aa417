"""Fault: two runs with the same training key at once (an on-demand run beside the nightly one).

Caused for real: two ``tuneline run`` commands (each its own temporary Prefect server and flow run) on one
storage root; the second starts while the first trains. Without a lease both trained into the same
``candidates/<key>/`` and could delete each other's checkpoints or change ``model/`` under a registration.
Expected: the second waits for the lease, then reuses the finished training; one writer, one version. The
first run's training is held (SIGSTOP) until the second is seen waiting, so the overlap never depends on timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import pytest

from tests.faults.runs import command_line, descendants, tuneline_run

pytestmark = pytest.mark.slow

SETTINGS = ("training.epochs=2", "model.max_length=32")


def test_a_second_run_with_the_same_key_waits_for_the_first_and_reuses_its_training(tmp_path):
    store = tmp_path / "store"
    first = tuneline_run(store, tmp_path / "home-1", *SETTINGS, json_summary=True)
    second, frozen, lines = None, [], []
    try:
        deadline = time.monotonic() + 300
        while not (list(store.glob("candidates/*/lease.json")) and (frozen := training_children(first.pid))):
            assert first.poll() is None, first.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the first run never started training"
            time.sleep(0.05)
        for pid in frozen:  # hold the first run's training until the second run is waiting for it
            os.kill(pid, signal.SIGSTOP)
        second = tuneline_run(store, tmp_path / "home-2", *SETTINGS, json_summary=True)
        reader = threading.Thread(target=lambda: lines.extend(second.stdout), daemon=True)
        reader.start()
        while not any("another run is training this candidate" in line for line in lines):
            assert second.poll() is None or reader.is_alive(), "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "the second run never waited for the lease"
            time.sleep(0.1)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        outputs = [first.communicate(timeout=600)[0]]
        second.wait(600)
        reader.join(30)
        outputs.append("".join(lines))
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for run in (first, second):
            if run is not None and run.poll() is None:
                run.kill()
    assert [first.returncode, second.returncode] == [0, 0], outputs[1][-3000:] + outputs[0][-3000:]
    assert "another run is training this candidate" not in outputs[0]
    summaries = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert summaries[0]["version"] == summaries[1]["version"] == 1, "one candidate, registered once"
    assert summaries[1]["stages"]["train"]["status"] == "cached", "the second run reused the first's training"
    assert len(list(store.glob("candidates/*/training.json"))) == 1
    assert not list(store.glob("candidates/*/train-failed-*.log")), "neither run's training failed"
    candidate = next(store.glob("candidates/*/training.json")).parent
    assert json.loads((candidate / "lease.json").read_text())["released"], "the lease is released when done"


def training_children(pid: int) -> list[int]:
    return [child for child in descendants(pid) if b"tuneline.training.process" in command_line(child)]
