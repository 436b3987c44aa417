"""How to launch the training process: one process, or one per GPU under torchrun.

Reads ``CUDA_VISIBLE_DEVICES`` (what the worker assigned to this flow run) or, when it
is unset, ``torch.cuda.device_count()``; writes nothing. ``tuneline.training.launcher`` runs the
returned command; HF Trainer picks up torchrun's environment and trains data-parallel.
"""

from __future__ import annotations

import os
import sys


def visible_gpu_count(environ: dict[str, str] | None = None) -> int:
    """GPUs this process may use: the entries of CUDA_VISIBLE_DEVICES when set, else what torch sees."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid entry ("-1", "" or "none" hide every GPU)
        count = 0
        for entry in entries:
            if entry.startswith("-") or entry.lower() in ("none", "void"):
                break
            count += 1
        return count
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def training_command(spec_path: str, environ: dict[str, str] | None = None) -> list[str]:
    """``python -m tuneline.training.process SPEC``; under ``torch.distributed.run`` with one process per GPU when N > 1."""
    gpus = visible_gpu_count(environ)
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
                "-m", "tuneline.training.process", str(spec_path)]
    return [sys.executable, "-m", "tuneline.training.process", str(spec_path)]
