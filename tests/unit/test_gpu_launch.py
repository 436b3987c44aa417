"""The training launch command: plain on CPU / one GPU, torchrun with one process per GPU otherwise."""

import sys

import pytest

from tuneline.training.gpu_launch import training_command, visible_gpu_count

PLAIN = [sys.executable, "-m", "tuneline.training.process", "/tmp/spec.json"]


@pytest.mark.parametrize("visible, count", [("0", 1), ("0,1", 2), ("0, 1, 2, 3", 4), ("", 0), ("-1", 0),
                                            ("2,-1,3", 1), ("GPU-5d0e1c2a-uuid,GPU-77f0-uuid", 2)])
def test_counts_cuda_visible_devices(visible, count):
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": visible}) == count


def test_one_gpu_or_none_runs_the_plain_process():
    assert training_command("/tmp/spec.json", {"CUDA_VISIBLE_DEVICES": "0"}) == PLAIN
    assert training_command("/tmp/spec.json", {"CUDA_VISIBLE_DEVICES": ""}) == PLAIN


def test_several_gpus_run_one_process_each_under_torchrun():
    command = training_command("/tmp/spec.json", {"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--nproc_per_node") + 1] == "3"
    assert command[-3:] == ["-m", "tuneline.training.process", "/tmp/spec.json"]


def test_without_cuda_visible_devices_asks_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpu_count({}) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_command("/tmp/spec.json", {}) == PLAIN
