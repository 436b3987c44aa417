"""What the run page's artifacts say (the Prefect calls are checked in tests/e2e/test_deployments.py)."""

from tasks.artifacts import TrainingProgress, artifact_key, confusion_markdown


def test_artifact_keys_are_what_prefect_accepts():
    assert artifact_key("demo_sentiment.v2", "metrics") == "demo-sentiment-v2-metrics"


def test_confusion_matrix_markdown():
    text = confusion_markdown({"labels": ["neg", "pos"], "matrix": [[8, 2], [1, 9]]})
    assert "| true \\ predicted | neg | pos |" in text
    assert "| **neg** | 8 | 2 |" in text and "| **pos** | 1 | 9 |" in text


def test_progress_percent_and_description():
    report = {"step": 5, "max_steps": 20, "epoch": 0.25, "loss": 0.69314, "eval_loss": None}
    assert TrainingProgress.percent(report) == 25.0
    assert TrainingProgress.describe(report) == "step 5/20, epoch 0.25, loss 0.6931"
    assert TrainingProgress.percent({"step": 3, "max_steps": 0}) == 0.0
