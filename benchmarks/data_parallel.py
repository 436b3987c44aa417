"""Benchmark: one training process vs two data-parallel ones (torchrun, gloo on CPU), same job, same effective batch.

The SMS-spam job of benchmarks/flow_vs_script.py (900 training rows, 1,000 test rows, all-MiniLM-L6-v2,
full fine-tuning), run through the flow with ``training.processes=1`` (batch 16) and ``training.processes=2``
(batch 8 per process: the same 16 rows per optimizer step), per seed. On this 2-core CPU the two ranks share the
cores one process used, so the point is the code path and the quality, not speed: the 2-rank model must
match the 1-rank one within the spread over seeds. On N GPUs each rank has its own device.

Prints one JSON line per run (processes, seed, test macro-F1, train-stage and loop seconds, samples/s, effective
batch from training.json) and the mean macro-F1 and train-stage seconds per process count. Needs ../shared/data.

With ``--ray`` a third contender per seed: ``training.engine: ray`` with 2 Ray Train workers (batch 8 each) on a
local Ray head this script starts (loopback, 2 CPUs) and stops: the same ranks as torchrun, through Ray.

Run: .venv/bin/python benchmarks/data_parallel.py [--seeds 0,1] [--epochs 1] [--ray]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.learning_rates import SMS, sms_split  # noqa: E402
from tuneline.config import parse_config  # noqa: E402


def run(processes: int, seed: int, epochs: float, tsv: Path, tmp: Path, ray_address: str | None = None) -> dict:
    from flows.finetune import finetune

    engine = {"engine": "ray", "ray": {"address": ray_address, "workers": processes}} if ray_address else {
        "processes": processes}
    contender = f"ray {processes} workers" if ray_address else f"torchrun {processes}" if processes > 1 else "local 1"
    config = parse_config({
        "name": f"ddp-{processes}", "storage": str(tmp / f"store-{contender.replace(' ', '-')}-{seed}"),
        "data": {"source": str(tsv), "text_column": "SMS", "label_column": "Label", "split_column": "split"},
        "training": {"epochs": epochs, "batch_size": 16 // processes, "seed": seed, **engine},
        "evaluation": {"metric": "f1_macro", "minimum": 0.0}})
    summary = finetune(config=config)
    record = json.loads(Path(summary["uri"]).parent.joinpath("manifest.json").read_text())["training"]
    return {"contender": contender, "processes": record["processes"], "seed": seed,
            "f1_macro": round(summary["metrics"]["f1_macro"], 4),
            "train_stage_seconds": summary["stages"]["train"]["seconds"], "loop_seconds": record["train_seconds"],
            "samples_per_second": record["samples_per_second"], "effective_batch_size": record["effective_batch_size"],
            "global_step": record["global_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--ray", action="store_true", help="also 2 Ray Train workers on a local Ray head")
    args = parser.parse_args()
    if not SMS.exists():
        sys.exit(f"needs {SMS} (../shared/data)")
    from prefect.testing.utilities import prefect_test_harness

    rows = []
    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as tmp, \
            local_ray_head(Path(tmp) / "ray", args.ray) as ray_address:
        tsv = sms_split(Path(tmp) / "sms.tsv")
        for seed in (int(s) for s in args.seeds.split(",")):
            for processes, address in ((1, None), (2, None), *(((2, ray_address),) if ray_address else ())):
                rows.append(run(processes, seed, args.epochs, tsv, Path(tmp), address))
                print(json.dumps(rows[-1]), flush=True)
    for contender in dict.fromkeys(r["contender"] for r in rows):
        mine = [r for r in rows if r["contender"] == contender]
        print(f"{contender}: macro-F1 {statistics.mean(r['f1_macro'] for r in mine):.4f} "
              f"({min(r['f1_macro'] for r in mine):.4f}-{max(r['f1_macro'] for r in mine):.4f}), train stage "
              f"{statistics.mean(r['train_stage_seconds'] for r in mine):.1f}s, loop "
              f"{statistics.mean(r['loop_seconds'] for r in mine):.1f}s, effective batch "
              f"{mine[0]['effective_batch_size']}", flush=True)


@contextmanager
def local_ray_head(folder: Path, wanted: bool):
    """A Ray head on loopback with 2 CPUs for the Ray contender (its address), stopped afterwards; None unwanted."""
    if not wanted:
        yield None
        return
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder.mkdir(parents=True)
    import secrets

    # the head and the training child (the Ray driver) share these: keep 127.0.0.1, and a token keeps others out
    os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
                      RAY_AUTH_TOKEN=secrets.token_hex(32))
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--port", str(port), "--node-ip-address",
                    "127.0.0.1", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                    "--temp-dir", str(folder), "--disable-usage-stats"], check=True, capture_output=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


if __name__ == "__main__":
    main()
