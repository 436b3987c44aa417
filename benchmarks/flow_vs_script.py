"""Benchmark: the tuneline flow vs a hand-written HF Trainer script doing the same SMS-spam job.

The job: SMS spam, the real-data test's split (900 training, 100 validation, 1,000 test messages),
all-MiniLM-L6-v2, full fine-tuning, 3 epochs, batch 16, lr 1e-4, warmup 0.1, max_length 128,
evaluation on the validation split each epoch, test macro-F1 at the end, the model saved. The
script is what a user writes without tuneline: read the TSV, tokenize, ``Trainer`` with
``DataCollatorWithPadding`` (random, padded batches), ``save_pretrained``. Each contender runs as
its own process, as from a shell, one after the other:

- script: ``python benchmarks/flow_vs_script.py --script``;
- flow, padded: ``tuneline run`` with ``training.batching=padded`` (the script's batching: same settings);
- flow, default: ``tuneline run`` as shipped (length-grouped batches).

The flow also validates the data, snapshots it, checkpoints, writes a model card and registers the
version. Prints wall seconds, train-stage seconds, train samples/s and test macro-F1 of each, and the
ratios flow / script. Needs ../shared/data (SMS spam).

Run: .venv/bin/python benchmarks/flow_vs_script.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.learning_rates import SMS, sms_split  # noqa: E402

SETTINGS = {"batch_size": 16, "learning_rate": 1e-4, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_length": 128}


def hand_written(tsv: Path, out: Path, epochs: float) -> dict:
    """The script a user would write: the same job with plain transformers, datasets and scikit-learn."""
    import csv

    import pandas as pd
    from datasets import Dataset
    from sklearn.metrics import f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tuneline.models.base import embedded_base

    base = embedded_base("all-MiniLM-L6-v2").folder  # the pip-installed all-MiniLM-L6-v2 folder
    frame = pd.read_csv(tsv, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    labels = sorted(frame["Label"].unique())
    tokenizer = AutoTokenizer.from_pretrained(base)

    def encode(rows):
        data = Dataset.from_dict({"text": rows["SMS"].tolist(), "labels": [labels.index(v) for v in rows["Label"]]})
        return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=SETTINGS["max_length"]),
                        batched=True, remove_columns=["text"])

    train, validation, test = (encode(frame[frame["split"] == s]) for s in ("train", "validation", "test"))
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    arguments = TrainingArguments(str(out / "checkpoints"), num_train_epochs=epochs,
                                  per_device_train_batch_size=SETTINGS["batch_size"],
                                  learning_rate=SETTINGS["learning_rate"], warmup_steps=SETTINGS["warmup_ratio"],
                                  weight_decay=SETTINGS["weight_decay"], eval_strategy="epoch", save_strategy="no",
                                  seed=42, report_to="none", disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=arguments, train_dataset=train, eval_dataset=validation,
                      data_collator=DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - started
    predictions = trainer.predict(test)
    f1 = f1_score(predictions.label_ids, predictions.predictions.argmax(-1), average="macro")
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(out / "model")
    return {"train_seconds": round(train_seconds, 2), "f1_macro": round(float(f1), 4),
            "samples_per_second": output.metrics["train_samples_per_second"]}


def timed(command: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return time.perf_counter() - started, done.stdout


def run_flow(tsv: Path, tmp: Path, epochs: float, batching: str, env: dict) -> dict:
    import yaml

    config = tmp / f"sms-{batching}.yaml"
    config.write_text(yaml.safe_dump({
        "name": f"sms-{batching.replace('_', '-')}", "storage": str(tmp / f"store-{batching}"),
        "data": {"source": str(tsv), "text_column": "SMS", "label_column": "Label", "split_column": "split"},
        "model": {"max_length": SETTINGS["max_length"]},
        "training": {"epochs": epochs, "batching": batching, **{k: v for k, v in SETTINGS.items()
                                                                 if k != "max_length"}},
        "evaluation": {"metric": "f1_macro", "minimum": 0.0}}))
    wall, out = timed([str(REPO / ".venv/bin/tuneline"), "run", str(config), "--json"], env)
    summary = json.loads(out.strip().splitlines()[-1])
    record = json.loads(Path(summary["uri"]).parent.joinpath("manifest.json").read_text())["training"]
    return {"contender": f"flow ({batching})", "wall_seconds": round(wall, 1),
            "train_stage_seconds": summary["stages"]["train"]["seconds"],
            "samples_per_second": record["samples_per_second"], "f1_macro": round(summary["metrics"]["f1_macro"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--script", nargs=2, metavar=("TSV", "OUT"), help=argparse.SUPPRESS)  # the script itself
    args = parser.parse_args()
    if args.script:
        print(json.dumps(hand_written(Path(args.script[0]), Path(args.script[1]), args.epochs)))
        return
    if not SMS.exists():
        sys.exit(f"needs {SMS} (../shared/data)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tsv = sms_split(tmp / "sms.tsv")
        wall, out = timed([sys.executable, __file__, "--epochs", str(args.epochs), "--script", str(tsv),
                           str(tmp / "script")], env)
        script = {"contender": "script", "wall_seconds": round(wall, 1), **json.loads(out.strip().splitlines()[-1])}
        script["train_stage_seconds"] = script.pop("train_seconds")
        rows = [script] + [run_flow(tsv, tmp, args.epochs, b, env) for b in ("padded", "length_grouped")]
    print(f"{'contender':24} {'wall s':>8} {'train s':>8} {'samples/s':>10} {'macro-F1':>9} {'wall ratio':>11} "
          f"{'train ratio':>12}")
    for row in rows:
        print(f"{row['contender']:24} {row['wall_seconds']:8.1f} {row['train_stage_seconds']:8.1f} "
              f"{row['samples_per_second']:10.1f} {row['f1_macro']:9.4f} "
              f"{row['wall_seconds'] / script['wall_seconds']:10.2f}x "
              f"{row['train_stage_seconds'] / script['train_stage_seconds']:11.2f}x", flush=True)


if __name__ == "__main__":
    main()
