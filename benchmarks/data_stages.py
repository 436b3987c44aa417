"""Benchmark: seconds and peak memory of the data stages (ingest, validate, prepare) as the row count grows.

Synthetic SMS-like rows (a CSV of ``text,label``: 6-40 words, about 120 characters, 13% ``spam``,
2% exact copies of an earlier row, some texts with commas and quotes) at each size; each stage runs
alone in a fresh Python process on the previous stage's output (classification, labels ham / spam,
the embedded all-MiniLM-L6-v2 tokenizer, ``model.max_length`` 64, no cache reuse). Per stage and size
it prints: seconds of the stage call (imports excluded), seconds per million rows (flat when the time
grows linearly), CPU seconds of the stage's process tree (imports included; steadier than seconds on a
shared machine), the stage process's peak RSS (``wait4`` ``ru_maxrss``: the largest process of its
tree), the peak of the whole process tree's summed PSS (psutil, sampled every 0.2 s: the encoding
workers included, the pages they share with the parent counted once) and the RSS after imports,
before the stage (what the libraries alone take), and the 1-minute load average when the stage ended.
Nothing passes or fails: it is a table to compare code versions on the same machine.

Run: .venv/bin/python benchmarks/data_stages.py [--rows 10k,100k,1M] [--with-10m] [--code PATH]
     [--work DIR] [--stages ingest,validate,prepare] [--set key.path=value ...] [--json]
``--code``: a checkout whose ``tuneline`` the stage processes import (e.g. a ``git worktree`` of an older
commit, to measure before / after with the same virtualenv); default: this checkout.
``--set``: config overrides as ``tuneline run`` takes them (e.g. ``data.batch_rows=20000``).
The 10M case writes a 1.2 GB CSV and takes tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "validate", "prepare")
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}

WORDS = ("ok i u you the to a and is in me my it for your of have on that are call now can get so but not "
         "at be will just do with no we ur if all this lol go up know when what how out like got come got "
         "good day time love home lor going want need sorry still one see back later da text send tomorrow "
         "tonight free win won prize claim cash urgent mobile reply txt stop www com ringtone offer award "
         "guaranteed nokia camera service customer pls msg meet dinner wat haha yeah gonna wanna morning night "
         "week work class bus train leave ill ll hope thanks great dear babe miss friends phone number").split()
SPAM_WORDS = "free win won prize claim cash urgent reply txt stop award guaranteed ringtone offer".split()


# -- synthetic data -------------------------------------------------------------------------------

def write_sms_csv(path: Path, rows: int, seed: int = 0, chunk: int = 200_000) -> None:
    """``rows`` SMS-like rows (``text,label``) written chunk by chunk (the generator's memory stays flat)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words, spam_words = np.array(WORDS, dtype=object), np.array(SPAM_WORDS, dtype=object)
    recent: list[tuple[str, str]] = []
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            spam = rng.random(n) < 0.13
            lengths = rng.integers(6, 41, n)
            picks = rng.integers(0, len(words), (n, 40))
            spam_picks = rng.integers(0, len(spam_words), (n, 4))
            numbers = rng.integers(0, 10**7, n)
            copy = rng.random(n) < 0.02
            punctuation = rng.random(n)
            batch = []
            for i in range(n):
                earlier = batch or recent
                if copy[i] and earlier:
                    batch.append(earlier[int(numbers[i]) % len(earlier)])
                    continue
                tokens = list(words[picks[i, :lengths[i]]])
                if spam[i]:
                    tokens[:4] = spam_words[spam_picks[i]]
                text = " ".join(tokens) + f" {numbers[i]}"
                if punctuation[i] < 0.1:
                    text = text.replace(" ", ", ", 1)
                elif punctuation[i] < 0.12:
                    text = f'he said "{text}"'
                batch.append((text, "spam" if spam[i] else "ham"))
            writer.writerows(batch)
            recent = batch[-1000:]


# -- one stage in this process (the child side) ------------------------------------------------------

def stage_config(source: Path, root: Path, overrides: list[str]):
    import yaml

    from tuneline.config import parse_config

    raw = {"name": "bench", "data": {"source": str(source), "labels": ["ham", "spam"]},
           "model": {"max_length": 64}, "storage": str(root), "cache": False}
    for item in overrides:  # key.path=value, as `tuneline run --set` takes them
        path, _, value = item.partition("=")
        section = raw
        *parents, leaf = path.split(".")
        for name in parents:
            section = section.setdefault(name, {})
        section[leaf] = yaml.safe_load(value)
    return parse_config(raw)


def run_stage(stage: str, source: Path, root: Path, overrides: list[str]) -> dict:
    """Run one stage (imports first, then the timed call); returns seconds and memory as a dict."""
    import resource

    import psutil

    from tuneline.data.ingest import ingest_dataset
    from tuneline.results import Dataset
    from tuneline.stages.prepare import prepare_splits
    from tuneline.stages.validate import validate_dataset
    from tuneline.storage import LocalStorage

    cfg = stage_config(source, root, overrides)
    storage = LocalStorage(root)
    dataset_file = root / "dataset.json"
    if stage != "ingest":
        dataset = Dataset(**json.loads(dataset_file.read_text()))
        import great_expectations  # noqa: F401  (validate imports it lazily: an import, not the stage's work)
        import transformers  # noqa: F401
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    if stage == "ingest":
        dataset = ingest_dataset(str(source), storage, reuse=False)
        dataset_file.write_text(json.dumps(dataset.stored()))
        outcome = {"rows": dataset.rows}
    elif stage == "validate":
        outcome = {"expectations": validate_dataset(storage, dataset, cfg).expectations}
    else:
        outcome = {"counts": prepare_splits(storage, dataset, cfg).counts}
    seconds = time.perf_counter() - started
    import tuneline

    return {"stage": stage, "seconds": round(seconds, 2), "rss_before_mb": round(before / 2**20),
            "self_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "tuneline": str(Path(tuneline.__file__).parent.parent), **outcome}


# -- the parent: one fresh process per stage ------------------------------------------------------

def tree_pss(pid: int) -> int:
    """The summed PSS of a process and its descendants: pages shared by forked workers counted once."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def measure(stage: str, source: Path, root: Path, code: Path, overrides: list[str], timeout_s: float) -> dict:
    """Run ``stage`` in a fresh process importing tuneline from ``code``; its result plus wait4's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GX_ANALYTICS_ENABLED": "false"}
    out = root / f"{stage}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--source", str(source),
               "--work", str(root), "--out", str(out), *sum((["--set", s] for s in overrides), [])]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss(process.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    status, rusage = None, None
    while status is None:
        pid, code_, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            status, rusage = code_, usage
        elif time.perf_counter() - started > timeout_s:
            process.kill()
        else:
            time.sleep(0.1)
    process.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0 or not out.exists():
        return {"stage": stage, "failed": f"exit {process.returncode}", "wall_seconds": round(wall, 1)}
    result = json.loads(out.read_text())
    return {**result, "wall_seconds": round(wall, 1), "peak_rss_mb": round(rusage.ru_maxrss / 1024),
            "tree_peak_mb": round(peak[0] / 2**20), "cpu_seconds": round(rusage.ru_utime + rusage.ru_stime, 1),
            "load": round(os.getloadavg()[0], 1)}


def table(rows: list[dict]) -> str:
    header = ("rows", "stage", "seconds", "s per 1M rows", "CPU s (process tree)", "peak RSS MB", "tree peak PSS MB",
              "RSS after imports MB", "load")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in rows:
        if "failed" in row:
            failed = f"{row['failed']} after {row['wall_seconds']} s"
            lines.append(f"{row['size']} | {row['stage']} | {failed} |" + " |" * (len(header) - 3))
            continue
        per_million = row["seconds"] / (row["n"] / 1e6)
        lines.append(f"{row['size']} | {row['stage']} | {row['seconds']:.1f} | {per_million:.1f} | "
                     f"{row['cpu_seconds']} | {row['peak_rss_mb']} | {row['tree_peak_mb']} | {row['rss_before_mb']} | "
                     f"{row['load']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10k,100k,1M", help=f"comma-separated sizes: {', '.join(SIZES)} or a number")
    parser.add_argument("--with-10m", action="store_true", help="add the 10M-row case (tens of minutes)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose tuneline the stages import")
    parser.add_argument("--work", type=Path, help="folder for data and storage roots (kept); default: a temp dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one stage may run")
    parser.add_argument("--json", action="store_true", help="also print each result as a JSON line")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.out.write_text(json.dumps(run_stage(args.child, args.source, args.work, args.set)))
        return

    sizes = [s.strip() for s in args.rows.split(",") if s.strip()]
    if args.with_10m and "10M" not in sizes:
        sizes.append("10M")
    stages = [s for s in args.stages.split(",") if s]
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = args.work or Path(tmp)
        results = []
        print(f"code: {args.code.resolve()}", flush=True)
        for size in sizes:
            n = SIZES.get(size) or int(size)
            source = work / f"sms-{size}.csv"
            if not source.exists():
                started = time.perf_counter()
                write_sms_csv(source, n)
                print(f"{size}: wrote {source.stat().st_size / 2**20:.0f} MB in {time.perf_counter() - started:.0f} s",
                      flush=True)
            root = work / f"store-{size}-{os.getpid()}"
            root.mkdir(parents=True, exist_ok=True)
            for stage in stages:
                result = {**measure(stage, source, root, args.code, args.set, args.timeout), "size": size, "n": n}
                results.append(result)
                if args.json:
                    print(json.dumps(result), flush=True)
                else:
                    print(f"{size} {stage}: {result.get('seconds', result.get('failed'))} s, "
                          f"peak {result.get('peak_rss_mb')} MB", flush=True)
                if "failed" in result:
                    break
            shutil.rmtree(root, ignore_errors=True)  # the 10M case's encoded splits take gigabytes
        print()
        print(table(results))


if __name__ == "__main__":
    main()
