"""Benchmark: padded vs length-grouped batches for encoders: speed, padding, and the quality they keep.

Runs the fine-tuning flow on each dataset twice per seed, ``training.batching=padded`` (random rows,
padded to each batch's longest: what tuneline did before) and ``length_grouped`` (the default now),
everything else equal, and reads training.json and the test metrics:

- demo: the example reviews (examples/data/reviews.csv, 2 epochs, max_length 64), macro-F1;
- sms: SMS spam, the real-data test's split (900 training rows, 1,000 test rows), 1 epoch, macro-F1;
- stsb: STS-B sentence pairs as regression (1,800 training pairs, 1,000 test pairs), 1 epoch, Pearson.

Prints one JSON line per run, then per dataset the ratio length_grouped / padded of train samples/s
(mean over seeds), both padding efficiencies, and both quality means with their spread over seeds: a
faster run that learns less does not count. sms and stsb need ../shared/data (skipped when absent).

Run: .venv/bin/python benchmarks/batching.py [--data demo,sms,stsb] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import csv
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

STSB = REPO.parent / "shared" / "data" / "stsb_en"


def stsb_split(target: Path) -> Path:
    """The real-data test's sample: 1,800 training pairs, 200 validation, 1,000 test pairs, none in two splits."""
    import pandas as pd

    def read(name: str):
        return pd.read_csv(STSB / f"stsb-en-{name}.csv", header=None, names=["sentence1", "sentence2", "score"],
                           dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)

    train = read("train").drop_duplicates(["sentence1", "sentence2"]).sample(2000, random_state=0)
    test = read("test").drop_duplicates(["sentence1", "sentence2"])
    test = test[~test.set_index(["sentence1", "sentence2"]).index.isin(
        train.set_index(["sentence1", "sentence2"]).index)].sample(1000, random_state=0)
    frame = pd.concat([train.assign(split=["validation"] * 200 + ["train"] * 1800), test.assign(split="test")])
    frame.to_csv(target, index=False)
    return target


def job(data: str, tmp: Path) -> dict:
    """The config sections of one dataset's job, and its quality metric."""
    if data == "demo":
        return {"data": {"source": str(REPO / "examples/data/reviews.csv"), "labels": ["negative", "positive"],
                         "test_fraction": 0.2}, "model": {"max_length": 64}, "training": {"epochs": 2},
                "metric": "f1_macro"}
    if data == "sms":
        return {"data": {"source": str(sms_split(tmp / "sms.tsv")), "text_column": "SMS", "label_column": "Label",
                         "split_column": "split"}, "model": {}, "training": {"epochs": 1}, "metric": "f1_macro"}
    return {"task": "regression", "metric": "pearson", "model": {}, "training": {"epochs": 1},
            "data": {"source": str(stsb_split(tmp / "stsb.csv")), "text_column": "sentence1",
                     "text_pair_column": "sentence2", "label_column": "score", "split_column": "split"}}


def run(data: str, batching: str, seed: int, tmp: Path) -> dict:
    from flows.finetune import finetune

    spec = job(data, tmp)
    config = parse_config({"name": f"batching-{data}", "task": spec.get("task", "classification"),
                           "data": spec["data"], "model": spec["model"],
                           "training": {**spec["training"], "batching": batching, "seed": seed},
                           "evaluation": {"metric": spec["metric"], "minimum": -1.0 if spec["metric"] == "pearson"
                                          else 0.0},
                           "storage": str(tmp / f"store-{data}-{batching}-{seed}")})
    summary = finetune(config=config)
    record = json.loads(Path(summary["uri"]).parent.joinpath("manifest.json").read_text())["training"]
    return {"data": data, "batching": batching, "seed": seed, spec["metric"]: round(summary["metrics"][spec["metric"]], 4),
            "samples_per_second": record["samples_per_second"], "tokens_per_second": record["tokens_per_second"],
            "padding_efficiency": record["padding_efficiency"], "train_seconds": record["train_seconds"]}


def summarise(rows: list[dict]) -> None:
    print("\ndata  | samples/s grouped/padded | padding eff. padded -> grouped | quality padded -> grouped (mean, range)")
    for data in dict.fromkeys(r["data"] for r in rows):
        of = {b: [r for r in rows if r["data"] == data and r["batching"] == b] for b in ("padded", "length_grouped")}
        if not all(of.values()):
            continue
        metric = next(k for k in ("f1_macro", "pearson") if k in of["padded"][0])

        def mean(batching, key):
            return statistics.mean(r[key] for r in of[batching])

        def spread(batching):
            values = [r[metric] for r in of[batching]]
            return f"{statistics.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"

        ratio = mean("length_grouped", "samples_per_second") / mean("padded", "samples_per_second")
        print(f"{data:5} | {ratio:24.2f}x | {mean('padded', 'padding_efficiency'):.3f} -> "
              f"{mean('length_grouped', 'padding_efficiency'):.3f}{'':15} | {metric} {spread('padded')} -> "
              f"{spread('length_grouped')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo,sms,stsb")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    rows = []
    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as tmp:
        for data in args.data.split(","):
            if (data == "sms" and not SMS.exists()) or (data == "stsb" and not STSB.exists()):
                print(f"skipped {data}: ../shared/data absent", flush=True)
                continue
            for seed in (int(s) for s in args.seeds.split(",")):
                for batching in ("padded", "length_grouped"):  # side by side, so load on the machine hits both
                    rows.append(run(data, batching, seed, Path(tmp)))
                    print(json.dumps(rows[-1]), flush=True)
    summarise(rows)


if __name__ == "__main__":
    main()
