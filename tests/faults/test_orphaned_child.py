"""Fault: the process running the flow is SIGKILLed while its training child trains.

Caused for real: a parent process launches training (``train_candidate``: the real child process), the
test SIGKILLs the parent after the first complete checkpoint, and the child must stop within seconds and
publish nothing more (no newer checkpoint, no pruning, no model), instead of training on for ~25 s and
dying on a broken pipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import children_of, make_config
from tuneline.config import parse_config
from tuneline.data.ingest import ingest_dataset
from tuneline.stages.prepare import prepare_splits
from tuneline.storage import LocalStorage

pytestmark = pytest.mark.slow

PARENT = """
import json, sys
from tuneline.config import parse_config
from tuneline.results import Prepared
from tuneline.storage import LocalStorage
from tuneline.training.launcher import train_candidate
spec = json.load(open(sys.argv[1]))
train_candidate(LocalStorage(spec["root"]), Prepared(**spec["prepared"]), parse_config(spec["config"]))
"""


def test_the_training_child_stops_when_its_launcher_is_killed(tmp_path, demo_csv):
    root = tmp_path / "store"
    raw = make_config(demo_csv, root, model={"max_length": 32},
                      training={"epochs": 20, "checkpoint_every_steps": 4, "checkpoint_every_minutes": None})
    cfg = parse_config(raw)
    storage = LocalStorage(root)
    prepared = prepare_splits(storage, ingest_dataset(str(demo_csv), storage), cfg)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"root": str(root), "prepared": prepared.model_dump(mode="json"),
                                "config": cfg.model_dump(mode="json")}))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(spec)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE")):
            assert time.monotonic() < deadline and parent.poll() is None, "no checkpoint was written"
            time.sleep(0.1)
        trainers = children_of(parent.pid)
        assert trainers, "the training child is running"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(30)
        killed_at = time.monotonic()
        while any(Path(f"/proc/{pid}").exists() for pid in trainers):
            assert time.monotonic() - killed_at < 15, "the training child outlived its launcher"
            time.sleep(0.1)
        published = sorted(p.parent.name for p in root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE"))
        time.sleep(2)
        assert sorted(p.parent.name for p in root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE")) == published
        assert not list(root.glob("candidates/*/training.json")) and not list(root.glob("candidates/*/model"))
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in children_of(parent.pid):
            os.kill(pid, signal.SIGKILL)


def test_a_quiet_child_notices_its_launcher_is_gone(tmp_path):
    """The broken pipe stops a child only when it next prints; a child in a long, quiet step (a big model) is
    stopped by its watchdog: here a child that never prints, whose launcher (named in its environment) dies."""
    from tuneline.training.outcomes import EXIT_ORPHANED, PARENT_PID_ENV

    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    quiet = subprocess.Popen(
        [sys.executable, "-c", "import time; from tuneline.training.process import exit_with_the_launcher; "
                               "exit_with_the_launcher(0.2); time.sleep(600)"],
        env={**os.environ, PARENT_PID_ENV: str(launcher.pid)}, stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        assert quiet.poll() is None, "the child runs while its launcher lives"
        launcher.kill()
        launcher.wait(10)
        assert quiet.wait(10) == EXIT_ORPHANED
    finally:
        for process in (launcher, quiet):
            if process.poll() is None:
                process.kill()
