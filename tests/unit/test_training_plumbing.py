"""The machinery around training: the child-process launcher, checkpoint bookkeeping, OOM batch plans."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tuneline.training.checkpoints import MARKER, CheckpointStore
from tuneline.training.child import RateLimitedLog, run_process
from tuneline.storage import LocalStorage
from tuneline.training.loop import TrainingInputError, halve_batch


def test_rate_limited_log_passes_few_lines_and_counts_the_rest():
    seen, now = [], [1000.0]
    log = RateLimitedLog(seen.append, per_second=2, clock=lambda: now[0])
    for i in range(100):
        log(f"line {i}")
        now[0] += 0.001
    assert seen == ["line 0"]
    now[0] = 1000.5
    log("later")
    assert seen[-1] == "later  (99 lines not shown; see the full log)"


def test_run_process_streams_every_line_to_the_log_file(tmp_path):
    shown = []
    ended = run_process([sys.executable, "-c", "for i in range(500): print(i)"],
                        RateLimitedLog(shown.append), tmp_path / "out.log")
    assert (ended.code, ended.stopped_for) == (0, None)
    assert (tmp_path / "out.log").read_text().split() == [str(i) for i in range(500)]
    assert 1 <= len(shown) < 50, "the log sink sees a rate-limited sample, the file gets everything"


def test_timeout_stops_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    ended = run_process([sys.executable, "-c", script], lambda line: None, tmp_path / "log",
                        timeout_s=2, grace_s=1)
    assert ended.stopped_for == "timeout" and ended.code < 0
    grandchild = Path(f"/proc/{int(pid_file.read_text())}")
    deadline = time.monotonic() + 10
    while grandchild.exists() and "Z" not in (grandchild / "stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the grandchild outlived the timeout"
        time.sleep(0.05)


CHECKPOINTS_ON_SIGTERM = (
    "import signal, sys, time\n"
    "def stop(*_):\n"
    "    open(sys.argv[1], 'w').write('checkpoint')\n"
    "    print('saved', flush=True)\n"
    "    sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('started', flush=True)\n"
    "while True:\n"
    "    time.sleep(0.1)\n"
)


def test_a_silent_child_is_stopped_as_stalled_and_checkpoints_first(tmp_path):
    ended = run_process([sys.executable, "-c", CHECKPOINTS_ON_SIGTERM, str(tmp_path / "ckpt")], lambda line: None,
                        tmp_path / "log", stall_s=1.5, grace_s=10)
    assert (ended.stopped_for, ended.code) == ("stall", 143)
    assert (tmp_path / "ckpt").read_text() == "checkpoint"


def test_a_stopped_caller_lets_its_child_checkpoint_then_goes_on_stopping(tmp_path):
    """SIGTERM to the flow process reaches the caller as an exception (Prefect's TerminationSignal) while it reads
    the child's output: the child gets SIGTERM and its grace period, its last lines still reach the log file."""
    def interrupt(line):
        if line == "started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_process([sys.executable, "-c", CHECKPOINTS_ON_SIGTERM, str(tmp_path / "ckpt")], interrupt,
                    tmp_path / "log", grace_s=10)
    assert (tmp_path / "ckpt").read_text() == "checkpoint"
    assert (tmp_path / "log").read_text().split() == ["started", "saved"]


def test_the_callers_stop_event_kills_at_once_without_a_checkpoint(tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    ended = run_process([sys.executable, "-c", CHECKPOINTS_ON_SIGTERM, str(tmp_path / "ckpt")], lambda line: None,
                        tmp_path / "log", stop=stop)
    assert (ended.stopped_for, ended.code) == ("stop", -9)
    assert not (tmp_path / "ckpt").exists()


def test_precision_resolves_to_what_this_machine_can_run():
    import torch

    from tuneline.config import Precision
    from tuneline.errors import ConfigError
    from tuneline.training.launcher import resolve_precision

    cuda = torch.cuda.is_available()
    expected = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    assert resolve_precision(Precision.auto) == expected
    assert resolve_precision(Precision.fp32) == "fp32" and resolve_precision(Precision.bf16) == "bf16"
    if not cuda:
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            resolve_precision(Precision.fp16)


def test_halving_the_batch_keeps_the_effective_batch():
    plan = {"batch_size": 16, "gradient_accumulation": 1, "oom_retries": 0}
    halved = halve_batch(plan)
    assert halved == {"batch_size": 8, "gradient_accumulation": 2, "oom_retries": 1}
    assert halved["batch_size"] * halved["gradient_accumulation"] == 16
    with pytest.raises(TrainingInputError, match="batch of 1"):
        halve_batch({"batch_size": 1, "gradient_accumulation": 16, "oom_retries": 4})


def fake_checkpoint(store: CheckpointStore, step: int, complete: bool) -> Path:
    folder = store.local / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:
        store.mark_complete(step)
    return folder


def test_half_written_checkpoints_are_never_chosen_and_get_cleaned_up(tmp_path):
    store = CheckpointStore(LocalStorage(tmp_path / "root"), "candidates/abc", tmp_path / "scratch")
    fake_checkpoint(store, 10, complete=True)
    fake_checkpoint(store, 20, complete=False)  # the process died while writing this one
    assert store.newest_complete().name == "checkpoint-10"
    store.discard_incomplete()
    assert sorted(p.name for p in store.local.iterdir()) == ["checkpoint-10"]


def test_older_checkpoints_are_pruned_only_after_a_newer_one_is_complete(tmp_path):
    store = CheckpointStore(LocalStorage(tmp_path / "root"), "candidates/abc", tmp_path / "scratch")
    for step in (10, 20):
        fake_checkpoint(store, step, complete=True)
    fake_checkpoint(store, 30, complete=False)
    assert store.complete_steps() == [10, 20], "an incomplete newer checkpoint prunes nothing"
    (store.local / "checkpoint-30" / MARKER).write_text("{}")
    store.prune(keep_from=30)
    assert store.complete_steps() == [20, 30]
