"""The speed settings a training run makes, and the throughput it reports.

Reads the training config and the machine (CUDA device, its capability, installed packages);
writes nothing. ``speed_settings`` picks what is safe to turn on by default (recorded in
``training.json`` as ``settings``); ``Throughput`` counts real and computed tokens per step and
turns them, the wall time and the device's peak memory into ``training.json``'s throughput fields.

Defaults and why:
- attention: flash_attention_2 on CUDA when the ``flash-attn`` package is installed and the model
  supports it, else SDPA (fused kernels on GPU; the default of recent transformers), else the model's own;
- TF32 matmuls on Ampere and newer (compute capability >= 8): ~10 bits of mantissa in fp32 matmuls,
  several times faster, harmless for fine-tuning;
- fused AdamW on CUDA (one kernel for all parameters instead of one per tensor);
- two data-loader workers and pinned memory on CUDA (the GPU never waits on collation); none on CPU,
  where the training threads need every core;
- evaluation batches 4x the training batch on CUDA (no gradients, no optimizer state);
- ``training.compile`` and ``training.gradient_checkpointing`` are opt-in: compile costs minutes of
  warm-up and checkpointing ~30% speed, each only pays off for some runs.
"""

from __future__ import annotations

import importlib.util
import resource
import time

# Dense bf16 peak FLOP/s (no sparsity) of known GPUs, by a substring of torch.cuda.get_device_name();
# the first match wins, so longer names come first. Sources: the vendors' data sheets.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM and NVL
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 6000 Ada", 364e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak FLOP/s, or None for a device not in the table."""
    for name, flops in PEAK_BF16_FLOPS:
        if name in device_name:
            return flops
    return None


def cuda_capability() -> tuple[int, int] | None:
    import torch

    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def attention_choice(requested: str, model, on_cuda: bool) -> str | None:
    """The attention kernel to set on ``model`` (None: keep the model's own)."""
    if requested == "auto":
        if on_cuda and getattr(model, "_supports_flash_attn", False) and importlib.util.find_spec("flash_attn"):
            return "flash_attention_2"
        return "sdpa" if getattr(model, "_supports_sdpa", False) else None
    return requested


def set_attention(model, requested: str) -> str:
    """Set the run's attention kernel on the model (a PEFT wrapper's base too); returns the one in use."""
    from tuneline.training.outcomes import TrainingInputError

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    on_cuda = cuda_capability() is not None
    chosen = attention_choice(requested, inner, on_cuda)
    if chosen == "flash_attention_2" and not (on_cuda and importlib.util.find_spec("flash_attn")):
        raise TrainingInputError("training.attention: flash_attention_2 needs a CUDA GPU and the flash-attn package "
                                 "(pip install flash-attn); use auto or sdpa")
    if chosen and chosen != inner.config._attn_implementation:
        try:
            inner.set_attn_implementation(chosen)
        except (ValueError, ImportError) as err:
            raise TrainingInputError(f"training.attention: {chosen} does not work with this model: {err}") from None
    return inner.config._attn_implementation or "eager"


def speed_settings(training, batch_size: int) -> dict:
    """TrainingArguments for speed, from ``training`` (the config section) and the machine."""
    capability = cuda_capability()
    on_cuda = capability is not None
    workers = training.dataloader_workers if training.dataloader_workers is not None else (2 if on_cuda else 0)
    settings = {
        "tf32": True if capability and capability[0] >= 8 else None,  # None: leave torch's default
        "optim": "adamw_torch_fused" if on_cuda else "adamw_torch",
        "dataloader_num_workers": workers,
        "dataloader_pin_memory": on_cuda,
        "dataloader_persistent_workers": workers > 0,
        "per_device_eval_batch_size": batch_size * 4 if on_cuda else max(batch_size, 32),
        "torch_compile": training.compile,
        "activation_checkpointing": training.gradient_checkpointing,  # transformers 5's name for it
    }
    if training.gradient_checkpointing:  # non-reentrant: works with frozen embeddings (LoRA, freeze)
        settings["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    return settings


def recorded_settings(arguments, batching: str, attention: str) -> dict:
    """training.json's ``settings``: every speed choice the run made."""
    return {"batching": batching, "attention": attention, "tf32": bool(arguments.tf32),
            "optimizer": str(getattr(arguments.optim, "value", arguments.optim)),
            "dataloader_workers": arguments.dataloader_num_workers, "pin_memory": arguments.dataloader_pin_memory,
            "eval_batch_size": arguments.per_device_eval_batch_size, "compile": arguments.torch_compile,
            "gradient_checkpointing": arguments.activation_checkpointing}


class Throughput:
    """Real (non-padding) and computed tokens and rows of the training steps this process ran."""

    def __init__(self, processes: int = 1):
        self.real = self.computed = self.rows = None  # device tensors: summed without a sync per step
        self.started = None
        self.processes = processes

    def count(self, inputs: dict) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        real = mask.sum() if mask is not None else ids.new_tensor(ids.numel())
        position = inputs.get("position_ids")
        if mask is None and position is not None:  # packed rows: one sequence, positions restart per row
            rows = (position == 0).sum()
        else:
            rows = ids.new_tensor(ids.shape[0])
        computed = ids.new_tensor(ids.numel())
        self.real = real if self.real is None else self.real + real
        self.computed = computed if self.computed is None else self.computed + computed
        self.rows = rows if self.rows is None else self.rows + rows

    def tokens_per_second(self) -> float | None:
        """Real tokens per second so far (all processes: this one's count x ``processes``)."""
        if self.real is None:
            return None
        return round(int(self.real) * self.processes / max(time.perf_counter() - self.started, 1e-9), 1)

    def record(self, seconds: float, parameters: int, device) -> dict:
        """training.json's throughput fields over ``seconds`` of the training loop, all processes together
        (under torchrun each rank trains on as many rows: rank 0's counts x ``processes``)."""
        real, computed, rows = (int(t) * self.processes if t is not None else 0
                                for t in (self.real, self.computed, self.rows))
        tokens_per_second = real / seconds if seconds > 0 else None
        record = {
            "tokens_per_second": round(tokens_per_second, 1) if tokens_per_second else None,
            "samples_per_second": round(rows / seconds, 2) if seconds > 0 and rows else None,
            "padding_efficiency": round(real / computed, 4) if computed else None,
            "trained_tokens": real,
            "peak_memory_mb": peak_memory_mb(device),
            "mfu": None,
        }
        peak = peak_bf16_flops(device_name(device))
        if peak and tokens_per_second:  # model-FLOPs utilisation: 6 FLOPs per parameter per token (fwd + bwd),
            record["mfu"] = round(6 * parameters * tokens_per_second / (peak * self.processes), 4)  # per GPU
        return record


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if getattr(device, "type", str(device)) == "cuda" else "cpu"


def peak_memory_mb(device) -> float:
    """Peak memory of this process: allocated on the CUDA device, else the peak resident set size."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
