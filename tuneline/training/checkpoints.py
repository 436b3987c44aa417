"""Training checkpoints that survive a crash: complete-or-ignored, synced to the storage root.

Reads and writes ``candidates/<key>/checkpoints/checkpoint-<step>/`` (HF Trainer's
format: weights, optimizer, scheduler, RNG state, trainer state with the data
position). A checkpoint counts only once its ``COMPLETE`` marker exists, written
after every file is saved, fsynced (and uploaded, for S3). The marker lists every file's size
and sha256: a checkpoint whose files no longer match (a truncated or altered file) is discarded
on resume and the previous complete one is used. Older checkpoints are pruned only
after a newer one is complete, and the checkpoint that trainer_state.json names as
``best_model_checkpoint`` (early stopping) is never pruned while it is the best.
A half-written checkpoint is never loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

from tuneline.fingerprints import folder_files, sha256_file
from tuneline.storage import LocalStorage, Storage

MARKER = "COMPLETE"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
KEEP = 2  # the newest complete checkpoint, plus one older in case the newest's files are damaged


def step_of(name: str) -> int:
    match = CHECKPOINT.match(name)
    return int(match[1]) if match else -1


class CheckpointStore:
    """Where a training run keeps checkpoints: a local folder, mirrored to the storage root."""

    def __init__(self, storage: Storage, prefix: str, scratch: Path):
        self.storage = storage
        self.prefix = f"{prefix}/checkpoints"
        # On a local root the Trainer writes straight into it; otherwise into a scratch folder.
        self.mirrored = not isinstance(storage, LocalStorage)
        self.local = scratch / "checkpoints" if self.mirrored else storage.local_dir(self.prefix)
        self.local.mkdir(parents=True, exist_ok=True)

    def complete_steps(self) -> list[int]:
        """Steps of the complete checkpoints in the storage root, oldest first."""
        names = self.storage.list_children(self.prefix)
        return sorted(step_of(n) for n in names
                      if step_of(n) >= 0 and self.storage.exists(f"{self.prefix}/{n}/{MARKER}"))

    def newest_complete(self) -> Path | None:
        """A local folder with the newest intact complete checkpoint (downloaded if needed), or None.

        A complete checkpoint whose files no longer match its marker is discarded, and the one before it used.
        """
        steps = self.complete_steps()
        local = None
        while steps:
            local = self._fetch(f"checkpoint-{steps[-1]}")
            damage = self.damage(local, steps[-1])
            if not damage:
                break
            print(f"checkpoint-{steps[-1]} is damaged ({damage}); discarding it and resuming from an older one",
                  flush=True)
            self._discard(f"checkpoint-{steps.pop()}")
            local = None
        if local is None:
            return None
        best = self.best_step(local)
        if best is not None and best in steps:  # early stopping: the best one must be here to restore it
            self._fetch(f"checkpoint-{best}")
            self._point_best_at(local, self.local / f"checkpoint-{best}")
        return local

    def _fetch(self, name: str) -> Path:
        """The local folder of a complete checkpoint, downloaded first when mirrored."""
        local = self.local / name
        if self.mirrored and not (local / MARKER).exists():
            shutil.rmtree(local, ignore_errors=True)
            for key in self.storage.list_keys(f"{self.prefix}/{name}"):
                self.storage.get_file(key, local / key[len(f"{self.prefix}/{name}/"):])
        return local

    @staticmethod
    def best_step(checkpoint: Path) -> int | None:
        """The step of trainer_state.json's ``best_model_checkpoint`` in ``checkpoint``, if any."""
        state_file = checkpoint / "trainer_state.json"
        if not state_file.is_file():
            return None
        best = json.loads(state_file.read_text()).get("best_model_checkpoint")
        step = step_of(Path(best).name) if best else -1
        return step if step >= 0 else None

    @staticmethod
    def _point_best_at(checkpoint: Path, best: Path) -> None:
        """Rewrite best_model_checkpoint to this process's folder (a retry may run in a new scratch dir)."""
        state_file = checkpoint / "trainer_state.json"
        state = json.loads(state_file.read_text())
        if state.get("best_model_checkpoint") == str(best):
            return
        state["best_model_checkpoint"] = str(best)
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True))

    def damage(self, local: Path, step: int) -> str | None:
        """What is wrong with a complete checkpoint's files compared with its marker, or None."""
        expected = json.loads(self.storage.read_bytes(f"{self.prefix}/checkpoint-{step}/{MARKER}")).get("files")
        for relative, entry in (expected or {}).items():  # markers before checksums list no files
            path = local / relative
            if not path.is_file():
                return f"{relative} is missing"
            if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                return f"{relative} does not match its checksum"
        return None

    def _discard(self, name: str) -> None:
        self.storage.delete_prefix(f"{self.prefix}/{name}")
        shutil.rmtree(self.local / name, ignore_errors=True)

    def mark_complete(self, step: int) -> None:
        """Publish ``checkpoint-<step>``: fsync its files, upload it (S3), write the marker last (with every
        file's size and sha256), prune older ones."""
        name = f"checkpoint-{step}"
        local = self.local / name
        sync_folder(local)
        marker = json.dumps({"step": step, "completed_at": time.time(),
                             "files": {k: v for k, v in folder_files(local).items() if k != MARKER}}).encode()
        if self.mirrored:
            self.storage.put_dir(local, f"{self.prefix}/{name}")
        self.storage.write_bytes(f"{self.prefix}/{name}/{MARKER}", marker)
        if self.mirrored:
            (local / MARKER).write_bytes(marker)
        self.prune(keep_from=step)

    def prune(self, keep_from: int) -> None:
        """Drop complete checkpoints beyond the newest ``KEEP`` (but never the best), and incomplete ones older
        than ``keep_from``."""
        complete = self.complete_steps()
        keep = set(complete[-KEEP:])
        best = self.best_step(self.local / f"checkpoint-{keep_from}")
        if best is not None:
            keep.add(best)
        for name in self.storage.list_children(self.prefix):
            step = step_of(name)
            if 0 <= step < keep_from and step not in keep:
                self.storage.delete_prefix(f"{self.prefix}/{name}")
        if self.mirrored:
            for local in self.local.iterdir():
                if 0 <= step_of(local.name) < keep_from and step_of(local.name) not in keep:
                    shutil.rmtree(local, ignore_errors=True)

    def discard_incomplete(self) -> None:
        """Remove half-written checkpoints a killed process left behind (never loaded anyway)."""
        for name in self.storage.list_children(self.prefix):
            if step_of(name) >= 0 and not self.storage.exists(f"{self.prefix}/{name}/{MARKER}"):
                self.storage.delete_prefix(f"{self.prefix}/{name}")
        if self.mirrored:
            for local in self.local.iterdir():
                if step_of(local.name) >= 0 and not (local / MARKER).exists():
                    shutil.rmtree(local, ignore_errors=True)

    def clear(self) -> None:
        self.storage.delete_prefix(self.prefix)
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)


def sync_folder(folder: Path) -> None:
    """fsync every file and the folders holding them: the data is on disk before the marker says so."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for directory in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# Where the training loop runs outside the main thread (a Ray Train worker: tuneline/training/ray_engine.py), no
# signal reaches it: the engine sets this event instead.
STOP_REQUESTED = threading.Event()


def agreed_by_all(flags: tuple[bool, ...], device) -> tuple[bool, ...]:
    """Each flag, true when it is true on any rank (one all-reduce; the flags as they are on one process).

    Every rank must save at the same steps: a save has collectives (a barrier with early stopping) and each rank
    writes its RNG state into the checkpoint, so a rank that saves alone hangs the others or leaves a checkpoint
    that cannot resume exactly. The ranks' clocks and their SIGTERMs differ by moments: they agree here."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    tensor = torch.tensor([int(flag) for flag in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(value) for value in tensor.tolist())


def checkpoint_callback(store: CheckpointStore, every_minutes: float | None):
    """A TrainerCallback: saves on a timer and on SIGTERM (or ``STOP_REQUESTED``), and publishes each saved
    checkpoint."""
    from transformers import TrainerCallback

    class Checkpointing(TrainerCallback):
        def __init__(self):
            self.last_save = time.monotonic()
            self.preempted = False
            self.in_main_thread = threading.current_thread() is threading.main_thread()
            if self.in_main_thread:  # signal handlers can only be set there
                signal.signal(signal.SIGTERM, self._on_sigterm)

        def _on_sigterm(self, signum, frame):
            print("SIGTERM received: saving a checkpoint, then stopping", flush=True)
            self.preempted = True

        def on_step_end(self, args, state, control, **kwargs):
            asked = self.preempted or (not self.in_main_thread and STOP_REQUESTED.is_set())
            overdue = bool(every_minutes) and time.monotonic() - self.last_save >= every_minutes * 60
            stop, overdue = agreed_by_all((asked, overdue), args.device)  # every rank saves at the same steps
            if stop and not self.preempted:
                if not asked:
                    print("another rank was asked to stop: saving a checkpoint, then stopping", flush=True)
                elif not self.in_main_thread:
                    print("asked to stop: saving a checkpoint, then stopping", flush=True)
                self.preempted = True
            if self.preempted or overdue:
                control.should_save = True
            if self.preempted:
                control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()  # on every rank: each one's timer starts again
            if not state.is_world_process_zero:  # under torchrun, rank 0 publishes
                return
            store.mark_complete(state.global_step)
            print(f"checkpoint saved at step {state.global_step}/{state.max_steps}", flush=True)

    return Checkpointing()
