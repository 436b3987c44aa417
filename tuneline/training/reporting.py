"""The training child's experiment trackers (``training.report_to``), passed through to the HF Trainer.

Reads and writes ``candidates/<key>/mlflow-run.json``; TensorBoard event files go to
``candidates/<key>/tensorboard/``. Both trackers are HF's own callbacks (``TrainingArguments.report_to``),
pointed at this candidate through the environment variables they read:

- tensorboard: ``TENSORBOARD_LOGGING_DIR`` is the candidate's logdir on a local root, else the attempt's scratch
  folder, which the parent uploads after the attempt (``tuneline.tracking.publish_tensorboard``). Every attempt
  writes a new event file beside the earlier ones, so a resumed training continues the same curves.
- mlflow: the experiment is ``$MLFLOW_EXPERIMENT_NAME`` or the config's name, tagged with the model name and the
  candidate (``MLFLOW_TAGS``). The run's id is kept as soon as the run starts; a later attempt on the same
  candidate (a retry, a new run resuming a checkpoint) reopens that run (``MLFLOW_RUN_ID``) and does not log its
  parameters again (MLflow refuses to change one, and an out-of-memory retry changes the batch size).

The final validation pass after training is recorded in ``training.json``, not reported again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tuneline import keys, tracking
from tuneline.config import FinetuneConfig, ReportTo
from tuneline.storage import LocalStorage, Storage


def tensorboard_dir(storage: Storage, prefix: str, scratch: Path) -> Path:
    """Where the Trainer writes event files: the candidate's logdir on a local root, else the scratch folder."""
    if isinstance(storage, LocalStorage):
        return storage.local_dir(keys.tensorboard(prefix))
    return scratch / "tensorboard"


class Reporting:
    """``report_to`` for the TrainingArguments, the environment HF's callbacks read, and what training.json records."""

    def __init__(self, cfg: FinetuneConfig, storage: Storage, prefix: str, scratch: Path):
        self.trackers = cfg.training.report_to
        self.cfg, self.storage, self.prefix, self.scratch = cfg, storage, prefix, scratch
        self.mlflow_run: dict = {}

    @property
    def report_to(self) -> list[str]:
        return [tracker.value for tracker in self.trackers] or ["none"]

    def arguments(self) -> dict:
        """TrainingArguments: the trackers, and a run name telling candidates apart (``<name>-<key8>``)."""
        return {"report_to": self.report_to, "run_name": f"{self.cfg.name}-{self.prefix.rsplit('/', 1)[-1][:8]}"}

    def configure(self) -> list:
        """Set the variables HF's TensorBoardCallback and MLflowCallback read; the callbacks tuneline adds."""
        if ReportTo.tensorboard in self.trackers:
            logdir = tensorboard_dir(self.storage, self.prefix, self.scratch)
            logdir.mkdir(parents=True, exist_ok=True)
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(logdir)
        if ReportTo.mlflow not in self.trackers:
            return []
        os.environ["MLFLOW_EXPERIMENT_NAME"] = tracking.experiment_name(self.cfg)
        os.environ["MLFLOW_TAGS"] = json.dumps({**json.loads(os.environ.get("MLFLOW_TAGS") or "{}"),
                                                **tracking.run_tags(self.cfg, self.storage.uri(self.prefix))})
        earlier = self.earlier_run()
        if earlier:
            print(f"continuing MLflow run {earlier}", flush=True)
            os.environ["MLFLOW_RUN_ID"] = earlier
            os.environ["MLFLOW_MAX_LOG_PARAMS"] = "0"  # logged by the attempt that started the run
        return [self._run_recorder()]

    def earlier_run(self) -> str | None:
        """The run an earlier attempt on this candidate started, when it is on this server and experiment."""
        key = keys.mlflow_run(self.prefix)
        if not self.storage.exists(key):
            return None
        record = self.storage.read_json(key)
        same_place = (record.get("tracking_uri"), record.get("experiment")) == (
            tracking.tracking_uri(), tracking.experiment_name(self.cfg))
        return record.get("run_id") if same_place else None

    def _run_recorder(self):
        """A TrainerCallback (after HF's MLflowCallback, which starts the run) keeping the run's id."""
        from transformers import TrainerCallback

        reporting = self

        class RecordMlflowRun(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                import mlflow

                run = mlflow.active_run()
                if not state.is_world_process_zero or run is None:
                    return
                reporting.mlflow_run = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                                        "experiment": tracking.experiment_name(reporting.cfg),
                                        "tracking_uri": tracking.tracking_uri()}
                reporting.storage.write_json(keys.mlflow_run(reporting.prefix), reporting.mlflow_run)

        return RecordMlflowRun()

    def training_ended(self, trainer, failed: bool) -> None:
        """Stop reporting (the final validation pass is training.json's); a failed attempt's run is marked FAILED."""
        if ReportTo.mlflow not in self.trackers:
            return
        import mlflow
        from transformers.integrations import MLflowCallback

        trainer.remove_callback(MLflowCallback)
        try:
            if mlflow.active_run() is not None:  # HF ends the run when training ends; not when it raised
                mlflow.end_run(status="FAILED" if failed else "FINISHED")
        except Exception as err:  # noqa: BLE001 - must not hide why training failed (an OOM retry needs its kind)
            print(f"MLflow run not ended ({type(err).__name__}: {err})", flush=True)

    def record(self) -> dict:
        """training.json's view: where the event files are, which MLflow run holds the curves."""
        tensorboard = ReportTo.tensorboard in self.trackers
        return {"tensorboard_uri": self.storage.uri(keys.tensorboard(self.prefix)) if tensorboard else None,
                "mlflow_run_id": self.mlflow_run.get("run_id"),
                "mlflow_experiment_id": self.mlflow_run.get("experiment_id")}
