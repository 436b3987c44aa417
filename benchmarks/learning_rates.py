"""Benchmark: test macro-F1 per training method and learning rate (what the per-method defaults rest on).

For each method (full, freeze, lora) and each rate, the demo reviews (400 rows, 2 epochs, max_length 64)
and, when ../shared/data is present, SMS spam (the real-data test's split: 1,000 training rows, 1,000
test rows, 3 epochs) are fine-tuned from all-MiniLM-L6-v2 with everything else at the defaults. Prints
one line per run: data, method, rate, test macro-F1, train seconds. Quality, not speed, is the result.

Run: .venv/bin/python benchmarks/learning_rates.py [--data demo,sms] [--methods full,freeze,lora]
     [--rates freeze=1e-4,5e-4,1e-3,3e-3 ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tuneline.config import parse_config  # noqa: E402

SMS = REPO.parent / "shared" / "data" / "sms_spam" / "SMSSpamCollection"
RATES = {"full": [5e-5, 1e-4, 2e-4], "freeze": [1e-4, 5e-4, 1e-3, 3e-3], "lora": [1e-4, 5e-4, 1e-3, 2e-3]}


def sms_split(target: Path) -> Path:
    """The real-data test's sample: 1,000 training rows (100 of them validation), 1,000 test rows, stratified."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    messages = pd.read_csv(SMS, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    messages = messages.drop_duplicates("SMS")
    train, rest = train_test_split(messages, train_size=1000, stratify=messages["Label"], random_state=0)
    test, _ = train_test_split(rest, train_size=1000, stratify=rest["Label"], random_state=0)
    train_part, validation = train_test_split(train, test_size=100, stratify=train["Label"], random_state=0)
    frame = pd.concat([train_part.assign(split="train"), validation.assign(split="validation"),
                       test.assign(split="test")])
    frame.to_csv(target, sep="\t", index=False, quoting=csv.QUOTE_NONE)
    return target


def data_section(name: str, tmp: Path) -> tuple[dict, dict]:
    if name == "demo":
        return ({"source": str(REPO / "examples/data/reviews.csv"), "labels": ["negative", "positive"],
                 "test_fraction": 0.2}, {"max_length": 64}), {"epochs": 2}
    return ({"source": str(sms_split(tmp / "sms.tsv")), "text_column": "SMS", "label_column": "Label",
             "split_column": "split"}, {}), {}


def run(data: str, method: str, rate: float | None, tmp: Path, top_layers: int = 0) -> dict:
    from flows.finetune import finetune

    (section, model), training = data_section(data, tmp)
    if rate is not None:
        training = {**training, "learning_rate": rate}
    config = parse_config({"name": f"lr-{data}-{method}", "data": section, "model": {**model, "method": method,
                                                                            **({"unfreeze_top_layers": top_layers} if method == "freeze" else {})},
                           "training": training, "evaluation": {"minimum": 0.0},
                           "storage": str(tmp / f"store-{data}-{method}-{rate}")})
    summary = finetune(config=config)
    record = json.loads(Path(summary["uri"]).parent.joinpath("manifest.json").read_text())["training"]
    return {"data": data, "method": method, "unfreeze_top_layers": config.model.unfreeze_top_layers,
            "learning_rate": record["learning_rate"],
            "f1_macro": round(summary["metrics"]["f1_macro"], 4), "train_seconds": record["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo,sms")
    parser.add_argument("--methods", default="full,freeze,lora")
    parser.add_argument("--rates", action="append", default=[], metavar="METHOD=R1,R2",
                        help="rates for one method; 'default' means the method's default")
    parser.add_argument("--unfreeze-top-layers", type=int, default=0, help="freeze: also train this many top layers")
    args = parser.parse_args()
    rates = dict(RATES)
    for item in args.rates:
        method, _, values = item.partition("=")
        rates[method] = [None if v == "default" else float(v) for v in values.split(",")]
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as tmp:
        for data in args.data.split(","):
            if data == "sms" and not SMS.exists():
                print(f"skipped sms: {SMS} absent", flush=True)
                continue
            for method in args.methods.split(","):
                for rate in rates[method]:
                    print(json.dumps(run(data, method, rate, Path(tmp), args.unfreeze_top_layers)), flush=True)


if __name__ == "__main__":
    main()
