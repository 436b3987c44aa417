"""The speed settings a run makes on this machine, and the throughput it reports (tuneline/training/speed.py)."""

from __future__ import annotations

import pytest
import torch

from tuneline.config import parse_config
from tuneline.training.outcomes import TrainingInputError
from tuneline.training.speed import Throughput, peak_bf16_flops, set_attention, speed_settings


def training_section(**values):
    return parse_config({"name": "x", "data": {"source": "a.csv"}, "training": values}).training


def test_cpu_gets_no_gpu_only_settings():
    settings = speed_settings(training_section(), batch_size=16)
    assert settings["optim"] == "adamw_torch"  # fused AdamW is CUDA-only
    assert settings["dataloader_num_workers"] == 0 and not settings["dataloader_pin_memory"]
    assert settings["tf32"] is None
    assert not settings["torch_compile"] and not settings["activation_checkpointing"]


def test_opt_in_settings_reach_the_trainer_arguments():
    settings = speed_settings(training_section(compile=True, gradient_checkpointing=True, dataloader_workers=3), 8)
    assert settings["torch_compile"] and settings["activation_checkpointing"]  # transformers 5's gradient checkpointing
    assert settings["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert settings["dataloader_num_workers"] == 3 and settings["dataloader_persistent_workers"]


def test_padded_batches_count_real_and_computed_tokens():
    meter = Throughput()
    meter.count({"input_ids": torch.ones(2, 4, dtype=torch.long),
                 "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])})
    meter.count({"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long)})
    record = meter.record(seconds=2.0, parameters=1000, device=torch.device("cpu"))
    assert record["trained_tokens"] == 9
    assert record["padding_efficiency"] == pytest.approx(9 / 11, abs=1e-4)
    assert record["tokens_per_second"] == 4.5 and record["samples_per_second"] == 1.5
    assert record["peak_memory_mb"] > 10 and record["mfu"] is None  # no MFU without a known GPU


def test_packed_batches_count_rows_by_position_restarts():
    meter = Throughput(processes=2)
    meter.count({"input_ids": torch.ones(1, 7, dtype=torch.long),
                 "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1]])})
    record = meter.record(seconds=1.0, parameters=10, device=torch.device("cpu"))
    assert record["padding_efficiency"] == 1.0
    assert record["samples_per_second"] == 6  # three rows on each of two processes
    assert record["tokens_per_second"] == 14


def test_known_gpus_have_their_peak_and_the_pcie_h100_is_not_the_sxm_one():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("Some Future GPU") is None


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, vocab_size=100))


def test_attention_auto_is_sdpa_without_flash_attn_and_eager_can_be_chosen():
    assert set_attention(tiny_bert(), "auto") == "sdpa"
    assert set_attention(tiny_bert(), "eager") == "eager"


def test_flash_attention_on_a_cpu_is_a_clear_input_error():
    with pytest.raises(TrainingInputError, match="training.attention: flash_attention_2 needs a CUDA GPU"):
        set_attention(tiny_bert(), "flash_attention_2")
