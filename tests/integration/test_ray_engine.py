"""Training on a Ray cluster (``training.engine: ray``), for real: a local Ray head of this module's own and the
finetune flow on it with two CPU Ray Train workers (gloo), the multi-node code path on one machine.

- A worker SIGKILLed after the first complete checkpoint: the attempt fails as transient, Prefect retries, the
  retry resumes from that checkpoint in the storage root on two new workers, and the model it registers loads
  and predicts; ``training.json`` says 2 processes; the run's ``train.log`` has the workers' lines and the
  progress lines the launcher reads.
- Prepare on Ray Data (``data.engine: ray``), classification, regression and token classification, and new data
  for a fitted model: the prepared folders are byte for byte those the local engine writes for the same snapshot
  and seed, in batches of another size, also with the storage root on S3 (SeaweedFS; the workers have the
  cluster's credentials); an input error raised in a Ray worker reaches the stage as itself.
- An input error in one worker only (the training loop's test hook, sent to the workers with tuneline's other
  settings), through Ray Client (``ray://``, as a KubeRay head service is reached): the attempt fails as an input
  error and is not retried.

The head (``ray start --head --block``) listens on free ports, advertises 127.0.0.1, serves its dashboard on
127.0.0.1 only and takes a random auth token (Ray's GCS and raylet listen on every interface: the token keeps
others out). Its temp dir is short: Ray's unix sockets must fit 107 bytes, which a pytest tmp path does not leave.
It is stopped as ``ray stop`` stops a cluster, but only this one: SIGTERM to every process of its session,
SIGKILL to what is left after 3 s (the GCS and the raylet take longer than that to go; nothing of it is kept).
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config, missing, task_runs_of
from tuneline.config import parse_config
from tuneline.training.loop import FAULT_INPUT_ERROR_RANK

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_members(session: int) -> list[int]:
    """Every process of a session: the Ray head's, workers included (each worker has a process group of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == session and fields[0] != "Z":
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


@pytest.fixture(scope="module")
def ray_cluster(request):
    """A local Ray head for this module: its GCS address, its Ray Client address (``ray://``, what a KubeRay head
    service offers) and the session of every Ray process it starts. Its workers have the session's S3 server's
    credentials in their environment, as a cluster's pods have theirs (none without SeaweedFS)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("ray is not installed: pip install 'tuneline[ray]' (the test extra has it)")
    try:
        cluster_s3 = {**request.getfixturevalue("s3_server").env(), "AWS_EC2_METADATA_DISABLED": "true"}
    except pytest.skip.Exception:
        cluster_s3 = {}
    temp = Path(tempfile.mkdtemp(prefix="tl-ray-"))
    port, client_port = free_port(), free_port()
    # the head and the flow's Ray driver: a token, and "127.0.0.1" kept as is (Ray swaps in the host's address)
    shared = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
              "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env = {**os.environ, **shared, **cluster_s3, "RAY_USAGE_STATS_ENABLED": "0"}
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", "2",
         "--port", str(port), "--node-ip-address", "127.0.0.1",
         # the dashboard serves the State API, which Ray Train's placement-group cleaner asks every second
         "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(client_port),
         "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
         "--object-store-memory", str(200 * 2**20), "--temp-dir", str(temp), "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    saved = {name: os.environ.get(name) for name in shared}
    os.environ.update(shared)  # the flow's training child (the Ray driver) inherits this environment
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (temp / "head.log").read_text():
            assert head.poll() is None, (temp / "head.log").read_text()
            assert time.monotonic() < deadline, "the Ray head did not start in 90 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", head.pid
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):  # as `ray stop` does, to this head only
            for pid in session_members(head.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while session_members(head.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def ray_workers(session: int) -> list[int]:
    """The Ray Train worker processes of the cluster (by their process title)."""
    found = []
    for pid in session_members(session):
        try:
            if b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def kill_a_worker_after_first_checkpoint(root: Path, session: int, killed: threading.Event, seen: dict) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        workers = ray_workers(session)
        seen["most"] = max(seen.get("most", 0), len(workers))
        if workers and list(root.glob("candidates/*/checkpoints/checkpoint-*/COMPLETE")):
            os.kill(workers[-1], signal.SIGKILL)
            killed.set()
            return
        time.sleep(0.05)


def ray_config(csv: Path, root: Path, tiny_bert: Path, address: str, **training):
    return parse_config(make_config(
        csv, root, model={"base": str(tiny_bert), "max_length": 32},
        training={"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 4, "checkpoint_every_minutes": None,
                  "engine": "ray", "ray": {"address": address, "workers": 2}, **training},
        retries={"attempts": 3, "backoff_seconds": 0}, evaluation={"metric": "f1_macro", "minimum": 0.0}))


def test_two_ray_workers_survive_a_killed_worker_and_register_a_model_that_predicts(
        ray_cluster, demo_csv, tmp_path, tiny_bert):
    import torch

    import tuneline
    from flows.finetune import finetune
    from tuneline.storage import LocalStorage

    address, _, session = ray_cluster
    root = tmp_path / "store"
    killed, seen = threading.Event(), {}
    watcher = threading.Thread(target=kill_a_worker_after_first_checkpoint, args=(root, session, killed, seen),
                               daemon=True)
    watcher.start()
    summary = finetune(config=ray_config(demo_csv, root, tiny_bert, address))
    watcher.join(5)

    assert killed.is_set() and seen["most"] == 2, f"two Ray Train workers ran and one was killed ({seen})"
    train = summary["stages"]["train"]
    assert train["status"] == "resumed" and train["attempts"] == 2, train
    assert train["resumed_from_step"] >= 4
    storage = LocalStorage(root)
    candidate = next(root.glob("candidates/*/training.json")).parent
    record = storage.read_json(f"{candidate.relative_to(root)}/training.json")
    assert record["processes"] == 2 and record["effective_batch_size"] == 16, "8 rows per worker per step"
    counts = storage.read_json(next(root.glob("prepared/*/meta.json")).relative_to(root).as_posix())["counts"]
    assert record["global_step"] == record["max_steps"] == 2 * math.ceil(counts["train"] / 16), counts
    [failed_log] = [p for p in candidate.iterdir() if p.name.startswith("train-failed")]
    assert "RayTrainWorker" in failed_log.read_text(), "the workers' lines reach the driver, so the run's log"
    log = (candidate / "train.log").read_text().splitlines()
    assert any(line.startswith("PROGRESS {") for line in log), "progress lines reach the launcher as the local child's"
    assert not (candidate / "ray").exists(), "Ray Train's run folder goes once training succeeded"

    model, tokenizer = tuneline.load_model(f"{summary['model']}:{summary['version']}", str(root))
    with torch.inference_mode():
        logits = model(**tokenizer(["great product", "broke in a day"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 2)


def test_an_input_error_in_one_ray_worker_fails_the_attempt_once(
        ray_cluster, demo_csv, tmp_path, tiny_bert, monkeypatch):
    from flows.finetune import finetune

    _, client_address, session = ray_cluster
    monkeypatch.setenv(FAULT_INPUT_ERROR_RANK, "1")  # sent to the workers with tuneline's other settings
    # through Ray Client this time: the ray://HEAD:10001 address of a KubeRay cluster
    root = tmp_path / "store"
    state = finetune(config=ray_config(demo_csv, root, tiny_bert, client_address), return_state=True)

    assert state.is_failed()
    with pytest.raises(Exception, match="a bad batch in rank 1"):
        state.result()
    [train] = [r for r in task_runs_of(state.state_details.flow_run_id, "train") if r.task_key.startswith("train")]
    # On a loaded machine the head's Ray Client server may fail to start for an attempt: an outage, retried. The
    # input error itself must end the task: it is the last attempt, and no attempt follows it.
    logs = sorted(root.glob("candidates/*/train-failed-*.log"))
    assert train.run_count == len(logs), [p.name for p in logs]
    assert "a bad batch in rank 1" in logs[-1].read_text(errors="replace"), "the input error ended the task"
    assert not any("a bad batch" in p.read_text(errors="replace") for p in logs[:-1]), "never retried after it"
    deadline = time.monotonic() + 30
    while ray_workers(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_workers(session), "the failed attempt's workers are gone"


# -- prepare on Ray Data ----------------------------------------------------------------------------------------------

def prepared_files(root: Path | str, source: Path, raw: dict, fitted: dict | None = None) -> tuple[dict, dict]:
    """Prepare ``source`` in the storage ``root`` with ``raw``'s settings (``fitted``: as new data for a model fitted
    with these values, every row in the test split): the stage's meta and every split file it wrote."""
    from tuneline.data.ingest import ingest_dataset
    from tuneline.stages.prepare import prepare_rows, prepare_splits
    from tuneline.storage import open_storage

    cfg = parse_config({**raw, "storage": str(root)})
    storage = open_storage(str(root))
    dataset = ingest_dataset(str(source), storage, cfg.data.format.value)
    prepared = (prepare_splits(storage, dataset, cfg) if fitted is None else
                prepare_rows(storage, dataset, cfg, fitted, Path(cfg.model.base), "the model's fingerprint"))
    folder = storage.local_dir(prepared.key)  # downloaded from S3
    meta = {k: v for k, v in prepared.stored().items() if k != "uri"}  # the uri names the root
    return meta, {p.relative_to(folder).as_posix(): p.read_bytes()
                  for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "meta.json"}


def prepare_source(tmp_path: Path, task: str) -> tuple[Path, dict]:
    import json

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    tmp_path.mkdir(parents=True, exist_ok=True)
    if task == "token_classification":
        source = tmp_path / "ner.jsonl"
        source.write_text("".join(json.dumps({"tokens": [f"w{i % 150}", "met", "Ada", "in", "Oslo"],
                                              "tags": ["O", "O", "B-PER", "O", "B-LOC" if i % 4 else "O"]}) + "\n"
                                  for i in range(260)), encoding="utf-8")
        return source, {}
    texts = [f"{rng.choice(['great', 'poor', 'fine'])} item {i % 230} " + "word " * int(rng.integers(0, 12))
             for i in range(260)]
    if task == "classification":
        source = tmp_path / "reviews.csv"
        pd.DataFrame({"text": texts, "label": rng.choice(["negative", "positive", "mixed"], 260)}).to_csv(
            source, index=False)
        return source, {"labels": None}
    source = tmp_path / "scores.csv"
    pd.DataFrame({"text": texts, "label": rng.uniform(0, 5, 260).round(2)}).to_csv(source, index=False)
    return source, {"scale_targets": "standard"}


PREPARE_TASKS = ("classification", "regression", "token_classification")


def prepare_raw(tmp_path: Path, task: str, tiny_bert: Path, address: str, **data) -> tuple[Path, dict]:
    source, extra = prepare_source(tmp_path, task)
    return source, {"name": "p", "task": task, "model": {"base": str(tiny_bert), "max_length": 16},
                    "data": {"source": str(source), **extra, **data}, "training": {"ray": {"address": address}}}


def prepare_on_ray_in_a_fresh_process(tmp_path: Path, tiny_bert: Path, address: str, s3_root: str | None) -> dict:
    """Run the Ray side in a new process, as a flow worker started with the cluster's environment does (Ray reads
    its auth token and loopback switch when it is imported, which this test process did long before). With
    ``s3_root``, classification once more with the storage root on S3: the workers read the snapshot there."""
    import pickle
    import textwrap

    out = tmp_path / "ray-side.pickle"
    code = textwrap.dedent(f"""
        import pickle, sys
        from pathlib import Path
        from tests.integration.test_ray_engine import PREPARE_TASKS, prepare_raw, prepared_files, input_error_case
        tmp, bert, address = Path({str(tmp_path)!r}), Path({str(tiny_bert)!r}), {address!r}
        found = {{}}
        for task in PREPARE_TASKS:
            source, raw = prepare_raw(tmp / task, task, bert, address, engine="ray", batch_rows=23, num_proc=2)
            found[task] = prepared_files(tmp / task / "ray", source, raw)
        found["new data"] = prepared_files(tmp / "new" / "ray", source, raw, found[task][0]["fitted"])
        if {s3_root!r}:
            source, raw = prepare_raw(tmp / "classification", "classification", bert, address, engine="ray",
                                      batch_rows=23)
            found["s3"] = prepared_files({s3_root!r}, source, raw)
        found["input error"] = input_error_case(address)
        Path({str(out)!r}).write_bytes(pickle.dumps(found))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    return pickle.loads(out.read_bytes())


def input_error_case(address: str) -> str:
    """The error a stage sees when a Ray Data worker raises an input error on one row."""
    from tuneline.errors import DataError
    from tuneline.stages import prepare_on_ray

    cfg = parse_config({"name": "p", "data": {"source": "unused.csv", "engine": "ray"},
                        "training": {"ray": {"address": address}}})
    with prepare_on_ray.ray_data(cfg) as ray:
        rows = ray.data.range(40).map_batches(lambda batch: prepare_on_ray.payload(lambda: fail_on_row_30(batch)),
                                              batch_format="pandas", batch_size=10)
        try:
            list(prepare_on_ray.payloads(rows))
        except DataError as err:
            return f"DataError: {err}"
    return "no error"


def fail_on_row_30(batch):
    from tuneline.errors import DataError

    if (batch["id"] == 30).any():
        raise DataError("row 30 is bad")
    return len(batch)


def test_prepare_on_ray_data_writes_the_local_engines_bytes(ray_cluster, tmp_path, tiny_bert, request):
    address = ray_cluster[0]
    try:
        s3_root = request.getfixturevalue("s3_root")  # the AWS variables for the flow's process: this one's child
    except pytest.skip.Exception:
        s3_root = None
    on_ray = prepare_on_ray_in_a_fresh_process(tmp_path, tiny_bert, address, s3_root)
    for task in PREPARE_TASKS:
        source, raw = prepare_raw(tmp_path / task, task, tiny_bert, address)
        local_meta, local_files = prepared_files(tmp_path / task / "local", source, raw)
        ray_meta, ray_files = on_ray[task]
        assert ray_meta == local_meta, task  # key, counts, fitted labels or scaling, stats
        assert sorted(ray_files) == sorted(local_files) and len(local_files) == 9, (task, sorted(local_files))
        for name, content in local_files.items():
            assert ray_files[name] == content, f"{task}: {name} differs"
        assert sum(local_meta["counts"].values()) == 260 and all(local_meta["counts"].values()), task
        if task == "classification" and s3_root:
            assert on_ray["s3"] == (local_meta, local_files), "Ray workers reading the snapshot on S3"
        if task == PREPARE_TASKS[-1]:  # a registered model's fitted values on new data: every row, one split
            new_meta, new_files = prepared_files(tmp_path / "new" / "local", source, raw, local_meta["fitted"])
            assert on_ray["new data"] == (new_meta, new_files) and new_meta["counts"]["test"] == 260
    assert on_ray["input error"] == "DataError: row 30 is bad"
