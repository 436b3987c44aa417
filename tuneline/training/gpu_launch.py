"""How to launch the training process: one process, or several data-parallel ones under torchrun.

Reads ``training.processes`` and ``CUDA_VISIBLE_DEVICES`` (what the worker assigned to this flow
run) or, when it is unset, ``torch.cuda.device_count()``; writes nothing. The default is one process
per visible GPU (one without a GPU). ``tuneline.training.launcher`` runs the returned command; HF
Trainer picks up torchrun's environment and trains data-parallel: NCCL on GPUs, gloo on CPU (several
CPU processes: the same code path as several GPUs, proven on machines without one).
"""

from __future__ import annotations

import os
import sys

from tuneline.errors import ConfigError


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


def training_processes(requested: int | None, environ: dict[str, str] | None = None) -> int:
    """Training processes: ``training.processes``, else one per visible GPU (1 without a GPU). With GPUs,
    no more processes than GPUs (each process owns one); on CPU any number (gloo)."""
    gpus = visible_gpu_count(environ)
    if requested is None:
        return max(1, gpus)
    if gpus and requested > gpus:
        raise ConfigError(f"training.processes: {requested}, but this worker sees {gpus} GPU(s) "
                          f"(CUDA_VISIBLE_DEVICES); use at most {gpus}, or leave it unset for one per GPU")
    return requested


def training_command(spec_path: str, processes: int = 1) -> list[str]:
    """``python -m tuneline.training.process SPEC``; under ``torch.distributed.run`` when ``processes`` > 1."""
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                "-m", "tuneline.training.process", str(spec_path)]
    return [sys.executable, "-m", "tuneline.training.process", str(spec_path)]
