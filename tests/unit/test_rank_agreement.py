"""Every rank saves and stops at the same steps (tuneline/training/checkpoints.py ``agreed_by_all``), with two real
gloo processes driving the checkpoint callback as the HF Trainer does: a save has collectives (a barrier with early
stopping) and each rank writes its RNG state into the checkpoint, so a rank that saves alone hangs the others or
leaves a checkpoint without its RNG state.

- The minute timer: the ranks' clocks differ (rank 1 is slower per step), and only rank 0 publishes a checkpoint.
- SIGTERM to one rank only (a node's preemption notice reaching one process first): both save and stop together.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


class Published:
    """Where rank 0's callback publishes each saved checkpoint (the CheckpointStore's part the callback uses)."""

    def __init__(self):
        self.steps = []

    def mark_complete(self, step: int) -> None:
        self.steps.append(step)


def drive(rank: int, port: int, out: str) -> None:
    """One rank: two runs of 40 steps of the callback, saving when it says so (the second with a SIGTERM to rank 1
    at step 25); what it decided, written to ``out``."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    found = {case: steps(rank, sigterm_rank) for case, sigterm_rank in (("timer", None), ("sigterm", 1))}
    Path(out).write_text(json.dumps(found))
    dist.destroy_process_group()


def steps(rank: int, sigterm_rank: int | None) -> dict:
    from transformers import TrainerControl, TrainerState

    from tuneline.training.checkpoints import checkpoint_callback

    store = Published()
    callback = checkpoint_callback(store, every_minutes=0.1 / 60)  # a save every 0.1 s of the rank's own clock
    args, saved, stopped = SimpleNamespace(device="cpu"), [], None
    for step in range(1, 41):
        time.sleep(0.01 + 0.012 * rank)  # rank 1's steps take longer: the clocks drift apart
        if step == 25 and rank == sigterm_rank:
            os.kill(os.getpid(), signal.SIGTERM)
        state = TrainerState(global_step=step, max_steps=40, is_world_process_zero=rank == 0)
        control = callback.on_step_end(args, state, TrainerControl())
        if control.should_save:
            saved.append(step)
            callback.on_save(args, state, control)
        if control.should_training_stop:
            stopped = step
            break
    return {"saved": saved, "stopped": stopped, "published": store.steps}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of two gloo ranks decided, in both runs."""
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("ranks")
    outs = [str(folder / f"rank{rank}.json") for rank in range(2)]
    port = free_port()
    context = mp.get_context("spawn")
    processes = [context.Process(target=drive, args=(rank, port, outs[rank])) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0, f"a rank failed or hung (exit {process.exitcode})"
    return [json.loads(Path(out).read_text()) for out in outs]


@pytest.mark.skipif(sys.platform == "win32", reason="gloo processes and SIGTERM")
def test_ranks_save_at_the_same_steps_whatever_their_clocks(ranks):
    rank0, rank1 = (found["timer"] for found in ranks)
    assert len(rank0["saved"]) >= 3, rank0  # the timer fired several times in 40 steps
    assert rank1["saved"] == rank0["saved"], (rank0, rank1)
    assert rank0["published"] == rank0["saved"] and rank1["published"] == [], "rank 0 alone publishes"
    assert rank0["stopped"] is rank1["stopped"] is None


@pytest.mark.skipif(sys.platform == "win32", reason="gloo processes and SIGTERM")
def test_sigterm_to_one_rank_stops_both_at_the_same_step_with_a_save(ranks):
    rank0, rank1 = (found["sigterm"] for found in ranks)
    assert rank0["stopped"] == rank1["stopped"] == 25, (rank0, rank1)
    assert rank0["saved"] == rank1["saved"] and rank0["saved"][-1] == 25, (rank0, rank1)
