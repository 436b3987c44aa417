"""The training launch command: plain for one process, torchrun for several (one per GPU by default)."""

import sys

import pytest

from tuneline.errors import ConfigError
from tuneline.training.gpu_launch import training_command, training_processes, visible_gpu_count

PLAIN = [sys.executable, "-m", "tuneline.training.process", "/tmp/spec.json"]


@pytest.mark.parametrize("visible, count", [("0", 1), ("0,1", 2), ("0, 1, 2, 3", 4), ("", 0), ("-1", 0),
                                            ("2,-1,3", 1), ("GPU-5d0e1c2a-uuid,GPU-77f0-uuid", 2)])
def test_counts_cuda_visible_devices(visible, count):
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": visible}) == count


def test_one_gpu_or_none_runs_the_plain_process():
    for visible in ("0", ""):
        processes = training_processes(None, {"CUDA_VISIBLE_DEVICES": visible})
        assert processes == 1 and training_command("/tmp/spec.json", processes) == PLAIN


def test_several_gpus_run_one_process_each_under_torchrun():
    command = training_command("/tmp/spec.json", training_processes(None, {"CUDA_VISIBLE_DEVICES": "0,1,2"}))
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--nproc_per_node") + 1] == "3"
    assert command[-3:] == ["-m", "tuneline.training.process", "/tmp/spec.json"]


def test_processes_are_chosen_up_to_the_gpus_and_freely_on_cpu():
    assert training_processes(2, {"CUDA_VISIBLE_DEVICES": "0,1,2"}) == 2
    assert training_processes(3, {"CUDA_VISIBLE_DEVICES": ""}) == 3  # CPU: gloo processes
    with pytest.raises(ConfigError, match=r"training.processes: 4, but this worker sees 2 GPU\(s\)"):
        training_processes(4, {"CUDA_VISIBLE_DEVICES": "0,1"})


def test_without_cuda_visible_devices_asks_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpu_count({}) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_processes(None, {}) == 1
