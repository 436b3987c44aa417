"""Model-folder transfer speed: tuneline's S3Storage vs plain boto3 defaults, same server, same run.

Writes a ~500 MB model-like folder (one 450 MB safetensors-like file of random bytes plus a
config, tokenizer and a few small files) to a temp dir, starts SeaweedFS (scripts/s3_service.py),
then for each round and each side uploads the folder and downloads it again:

  ours   S3Storage.put_dir / S3Storage.local_dir (TransferConfig tuned for big files,
         files in flight together)
  plain  boto3 client.upload_file / download_file per file with default settings

Prints MB/s per direction and the ratio ours / plain, as the median and the best of the
rounds (rounds alternate which side goes first; on a small shared machine the spread is wide).

    .venv/bin/python benchmarks/s3_transfer.py [--big-mb 450] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.s3_service import SeaweedS3  # noqa: E402

MB = 1024 * 1024


def make_model_folder(folder: Path, big_mb: int) -> int:
    """A model-like folder; returns its total size in bytes."""
    folder.mkdir(parents=True)
    with (folder / "model.safetensors").open("wb") as handle:
        for _ in range(big_mb):
            handle.write(os.urandom(MB))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 384}))
    (folder / "tokenizer.json").write_bytes(os.urandom(700 * 1024))
    (folder / "vocab.txt").write_bytes(os.urandom(230 * 1024))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    return sum(p.stat().st_size for p in folder.iterdir())


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def ours(bucket: str, folder: Path, prefix: str, cache: Path) -> tuple[float, float]:
    from tuneline.storage.s3 import S3Storage

    os.environ["TUNELINE_CACHE"] = str(cache)
    storage = S3Storage(bucket, prefix)
    up = timed(lambda: storage.put_dir(folder, "model"))
    result = {}
    down = timed(lambda: result.setdefault("dir", storage.local_dir("model")))
    assert digest(result["dir"]) == digest(folder), "ours: downloaded folder differs"
    return up, down


def plain(bucket: str, folder: Path, prefix: str, target: Path) -> tuple[float, float]:
    import boto3

    client = boto3.session.Session().client("s3")  # endpoint, credentials from AWS_*; default settings
    names = sorted(p.name for p in folder.iterdir())

    def upload():
        for name in names:
            client.upload_file(str(folder / name), bucket, f"{prefix}/model/{name}")

    def download():
        target.mkdir(parents=True)
        for name in names:
            client.download_file(bucket, f"{prefix}/model/{name}", str(target / name))

    up = timed(upload)
    down = timed(download)
    assert digest(target) == digest(folder), "plain: downloaded folder differs"
    return up, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mb", type=int, default=450, help="size of the weights file in MB")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tuneline-s3-bench-"))
    try:
        total = make_model_folder(work / "model", args.big_mb)
        print(f"folder: {total / MB:.0f} MB in {len(list((work / 'model').iterdir()))} files; "
              f"SeaweedFS weed mini, a fresh server per measurement; cores: {os.cpu_count()}")
        seconds = {"ours": ([], []), "plain": ([], [])}  # (upload times, download times)
        for round_ in range(args.rounds):
            for side in ("ours", "plain") if round_ % 2 == 0 else ("plain", "ours"):
                up, down = measure(side, work, round_)
                print(f"round {round_ + 1} {side:5s}  up {total / MB / up:7.1f} MB/s  "
                      f"down {total / MB / down:7.1f} MB/s")
                seconds[side][0].append(up)
                seconds[side][1].append(down)
        for label, pick in (("median", statistics.median), ("best", min)):
            rate = {side: [total / MB / pick(times) for times in seconds[side]] for side in seconds}
            print(f"\n{label} of {args.rounds}   upload MB/s   download MB/s")
            for side in ("ours", "plain"):
                print(f"  {side:5s}          {rate[side][0]:8.1f}      {rate[side][1]:8.1f}")
            print(f"  ours/plain     {rate['ours'][0] / rate['plain'][0]:8.2f}x     "
                  f"{rate['ours'][1] / rate['plain'][1]:8.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(side: str, work: Path, round_: int) -> tuple[float, float]:
    """One upload + download on a fresh, empty server (a server that already holds GBs reads slower)."""
    server = SeaweedS3(work / f"seaweedfs-{side}-{round_}", bucket="bench").start()
    os.environ.update(server.env())
    try:
        if side == "ours":
            return ours(server.bucket, work / "model", "ours", work / f"cache-{round_}")
        return plain(server.bucket, work / "model", "plain", work / f"plain-{round_}")
    finally:
        server.stop()
        for leftover in (f"seaweedfs-{side}-{round_}", f"cache-{round_}", f"plain-{round_}"):
            shutil.rmtree(work / leftover, ignore_errors=True)


if __name__ == "__main__":
    main()
