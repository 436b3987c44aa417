"""Benchmark: what a re-run and a crash cost, as fractions of an uninterrupted run (same machine, same run).

(a) re-run of a completed config: wall time of the second run / the first run.
(b) training time lost to a SIGKILL at 50% and 90% of training: (train stage seconds with the
    kill and the resumed retry - uninterrupted train seconds) / uninterrupted train seconds.
    Restarting from step 0 would lose 0.5 and 0.9 plus start-up; resuming loses only the steps
    since the last checkpoint plus one process start.

Run: .venv/bin/python benchmarks/resume_cost.py [--epochs 4] [--checkpoint-every 8]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tuneline.config import parse_config  # noqa: E402


def config(root: Path, epochs: float, every: int):
    return parse_config({
        "name": "bench",
        "data": {"source": str(REPO / "examples/data/reviews.csv"), "labels": ["negative", "positive"],
                 "test_fraction": 0.2},
        "model": {"max_length": 48},
        "training": {"epochs": epochs, "checkpoint_every_steps": every, "checkpoint_every_minutes": None},
        "retries": {"attempts": 2, "backoff_seconds": 0},
        "storage": str(root),
    })


def training_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"tuneline.training.process" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def kill_after(seconds: float, fired: list):
    """SIGKILL the training process ``seconds`` after it starts."""
    while not training_pids():
        time.sleep(0.02)
    time.sleep(seconds)
    for pid in training_pids():
        os.kill(pid, signal.SIGKILL)
    fired.append(time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=8)
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from flows.finetune import finetune

    results = {}
    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        first = finetune(config=config(root / "a", args.epochs, args.checkpoint_every))
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        finetune(config=config(root / "a", args.epochs, args.checkpoint_every))
        results["rerun_fraction"] = round((time.perf_counter() - started) / first_s, 3)
        results["first_run_s"] = round(first_s, 1)

        plain_train = first["stages"]["train"]["seconds"]
        # The killable part: the child's training loop, measured from the process start.
        results["uninterrupted_train_s"] = plain_train
        for share in (0.5, 0.9):
            fired: list = []
            killer = threading.Thread(target=kill_after, args=(share * plain_train, fired), daemon=True)
            killer.start()
            summary = finetune(config=config(root / f"kill{int(share * 100)}", args.epochs, args.checkpoint_every))
            train = summary["stages"]["train"]
            results[f"kill_at_{int(share * 100)}"] = {
                "train_s": train["seconds"],
                "lost_fraction": round((train["seconds"] - plain_train) / plain_train, 3),
                "resumed_from_step": train.get("resumed_from_step"),
                "killed": bool(fired),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
