"""Training checkpoints that survive a crash: complete-or-ignored, synced to the storage root.

Reads and writes ``candidates/<key>/checkpoints/checkpoint-<step>/`` (HF Trainer's
format: weights, optimizer, scheduler, RNG state, trainer state with the data
position). A checkpoint counts only once its ``COMPLETE`` marker exists, written
after every file is saved (and uploaded, for S3); older checkpoints are pruned only
after a newer one is complete. A half-written checkpoint is never loaded.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

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
        """A local folder with the newest complete checkpoint (downloaded if needed), or None."""
        steps = self.complete_steps()
        if not steps:
            return None
        name = f"checkpoint-{steps[-1]}"
        local = self.local / name
        if self.mirrored and not (local / MARKER).exists():
            shutil.rmtree(local, ignore_errors=True)
            for key in self.storage.list_keys(f"{self.prefix}/{name}"):
                self.storage.get_file(key, local / key[len(f"{self.prefix}/{name}/"):])
        return local

    def mark_complete(self, step: int) -> None:
        """Publish ``checkpoint-<step>``: upload it (S3), write the marker last, prune older ones."""
        name = f"checkpoint-{step}"
        local = self.local / name
        marker = json.dumps({"step": step, "completed_at": time.time()}).encode()
        if self.mirrored:
            self.storage.put_dir(local, f"{self.prefix}/{name}")
        self.storage.write_bytes(f"{self.prefix}/{name}/{MARKER}", marker)
        if self.mirrored:
            (local / MARKER).write_bytes(marker)
        self.prune(keep_from=step)

    def prune(self, keep_from: int) -> None:
        """Drop complete checkpoints beyond the newest ``KEEP``, and incomplete ones older than ``keep_from``."""
        complete = self.complete_steps()
        keep = set(complete[-KEEP:])
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


def checkpoint_callback(store: CheckpointStore, every_minutes: float | None):
    """A TrainerCallback: saves on a timer and on SIGTERM, and publishes each saved checkpoint."""
    from transformers import TrainerCallback

    class Checkpointing(TrainerCallback):
        def __init__(self):
            self.last_save = time.monotonic()
            self.preempted = False
            signal.signal(signal.SIGTERM, self._on_sigterm)

        def _on_sigterm(self, signum, frame):
            print("SIGTERM received: saving a checkpoint, then stopping", flush=True)
            self.preempted = True

        def on_step_end(self, args, state, control, **kwargs):
            overdue = every_minutes and time.monotonic() - self.last_save >= every_minutes * 60
            if self.preempted or overdue:
                control.should_save = True
            if self.preempted:
                control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kwargs):
            store.mark_complete(state.global_step)
            self.last_save = time.monotonic()
            print(f"checkpoint saved at step {state.global_step}/{state.max_steps}", flush=True)

    return Checkpointing()
