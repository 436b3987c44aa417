"""Benchmark: one training process vs two data-parallel ones (torchrun, gloo on CPU), same job, same effective batch.

The SMS-spam job of benchmarks/flow_vs_script.py (900 training rows, 1,000 test rows, all-MiniLM-L6-v2,
full fine-tuning), run through the flow with ``training.processes=1`` (batch 16) and ``training.processes=2``
(batch 8 per process: the same 16 rows per optimizer step), per seed. On this 2-core CPU the two ranks share the
cores one process used, so the point is the code path and the quality, not speed: the 2-rank model must
match the 1-rank one within the spread over seeds. On N GPUs each rank has its own device.

Prints one JSON line per run (processes, seed, test macro-F1, train-stage and loop seconds, samples/s, effective
batch from training.json) and the mean macro-F1 and train-stage seconds per process count. Needs ../shared/data.

Run: .venv/bin/python benchmarks/data_parallel.py [--seeds 0,1] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.learning_rates import SMS, sms_split  # noqa: E402
from tuneline.config import parse_config  # noqa: E402


def run(processes: int, seed: int, epochs: float, tsv: Path, tmp: Path) -> dict:
    from flows.finetune import finetune

    config = parse_config({
        "name": f"ddp-{processes}", "storage": str(tmp / f"store-{processes}-{seed}"),
        "data": {"source": str(tsv), "text_column": "SMS", "label_column": "Label", "split_column": "split"},
        "training": {"epochs": epochs, "batch_size": 16 // processes, "processes": processes, "seed": seed},
        "evaluation": {"metric": "f1_macro", "minimum": 0.0}})
    summary = finetune(config=config)
    record = json.loads(Path(summary["uri"]).parent.joinpath("manifest.json").read_text())["training"]
    return {"processes": record["processes"], "seed": seed, "f1_macro": round(summary["metrics"]["f1_macro"], 4),
            "train_stage_seconds": summary["stages"]["train"]["seconds"], "loop_seconds": record["train_seconds"],
            "samples_per_second": record["samples_per_second"], "effective_batch_size": record["effective_batch_size"],
            "global_step": record["global_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=float, default=1)
    args = parser.parse_args()
    if not SMS.exists():
        sys.exit(f"needs {SMS} (../shared/data)")
    from prefect.testing.utilities import prefect_test_harness

    rows = []
    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as tmp:
        tsv = sms_split(Path(tmp) / "sms.tsv")
        for seed in (int(s) for s in args.seeds.split(",")):
            for processes in (1, 2):
                rows.append(run(processes, seed, args.epochs, tsv, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    for processes in (1, 2):
        mine = [r for r in rows if r["processes"] == processes]
        print(f"processes {processes}: macro-F1 {statistics.mean(r['f1_macro'] for r in mine):.4f} "
              f"({min(r['f1_macro'] for r in mine):.4f}-{max(r['f1_macro'] for r in mine):.4f}), train stage "
              f"{statistics.mean(r['train_stage_seconds'] for r in mine):.1f}s, effective batch "
              f"{mine[0]['effective_batch_size']}", flush=True)


if __name__ == "__main__":
    main()
