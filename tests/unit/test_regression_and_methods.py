"""Plain functions behind regression, gating direction, target scaling, fine-tuning methods and
early stopping: checked against values worked out by hand, no training."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tuneline.training.checkpoints import MARKER, CheckpointStore
from tuneline.config import parse_config
from tuneline.errors import ConfigError
from tuneline.stages.gate import gate_decision
from tuneline.metrics import regression_metrics
from tuneline.stages.prepare import split_rows
from tuneline.storage import LocalStorage
from tuneline.objectives.regression import fit_scaling, scale, unscale
from tuneline.stages.validate import validate_frame


def config(**sections):
    raw = {"name": "m", "data": {"source": "x.csv"}}
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return parse_config(raw, where="test.yaml")


def config_error(**sections) -> str:
    with pytest.raises(ConfigError) as caught:
        config(**sections)
    return str(caught.value)


# -- regression metrics -------------------------------------------------------

Y_TRUE = [1.0, 2.0, 3.0, 4.0]
Y_PRED = [1.0, 3.0, 2.0, 6.0]  # errors 0, 1, -1, 2


def test_regression_metrics_match_the_hand_computed_values():
    m = regression_metrics(Y_TRUE, Y_PRED)
    assert m["mse"] == pytest.approx((0 + 1 + 1 + 4) / 4)          # 1.5
    assert m["rmse"] == pytest.approx(math.sqrt(1.5))
    assert m["mae"] == pytest.approx((0 + 1 + 1 + 2) / 4)          # 1.0
    assert m["r2"] == pytest.approx(1 - 6 / 5)                     # SS_res 6, SS_tot 5 -> -0.2
    # Pearson: deviations t = (-1.5,-.5,.5,1.5), p = (-2, 0, -1, 3) -> sum of products 3 + 0 - .5 + 4.5 = 7; r = 7 / sqrt(5 * 14)
    assert m["pearson"] == pytest.approx(7 / math.sqrt(5 * 14))
    # Spearman: ranks (1,2,3,4) vs (1,3,2,4) -> 1 - 6*2 / (4*15) = 0.8
    assert m["spearman"] == pytest.approx(0.8)
    assert m["support"] == 4
    json.dumps(m)


def test_constant_predictions_give_zero_correlation_not_nan():
    m = regression_metrics(Y_TRUE, [2.0] * 4)
    assert m["pearson"] == 0.0 and m["spearman"] == 0.0 and not math.isnan(m["mse"])


# -- target scaling -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["none", "standard", "minmax"])
def test_scaling_round_trips_to_the_original_units(kind):
    values = np.array([0.0, 1.5, 2.5, 5.0])
    params = fit_scaling(values, kind)
    assert params["kind"] == kind
    scaled = scale(values, params)
    assert np.allclose(unscale(scaled, params), values)
    if kind == "standard":
        assert scaled.mean() == pytest.approx(0) and scaled.std() == pytest.approx(1)
    if kind == "minmax":
        assert scaled.min() == 0 and scaled.max() == 1
    json.dumps(params)  # stored in prepared meta and the model's config.json


def test_scaling_a_constant_target_does_not_divide_by_zero():
    for kind in ("standard", "minmax"):
        params = fit_scaling([3.0, 3.0], kind)
        assert np.allclose(unscale(scale([3.0], params), params), [3.0])


# -- the gate's direction -----------------------------------------------------

def test_lower_is_better_metric_passes_under_the_maximum_and_fails_above():
    cfg = config(task="regression", evaluation={"metric": "rmse", "maximum": 1.0})
    assert gate_decision({"rmse": 0.8}, None, cfg)["passed"]
    rejected = gate_decision({"rmse": 1.2}, None, cfg)
    assert not rejected["passed"] and "above the maximum 1.0" in rejected["reason"]
    assert rejected["direction"] == "lower"


def test_lower_is_better_metric_beats_the_champion_by_being_smaller_than_it_minus_the_margin():
    cfg = config(task="regression", evaluation={"metric": "mse", "margin": 0.1})
    champion = {"alias": "production", "version": 1, "metrics": {"mse": 1.0}}
    assert gate_decision({"mse": 0.85}, champion, cfg)["promote"]
    assert not gate_decision({"mse": 0.95}, champion, cfg)["promote"], "better, but not by more than the margin"
    assert not gate_decision({"mse": 1.2}, champion, cfg)["promote"], "a larger error never wins"


def test_a_champion_that_cannot_be_compared_keeps_its_alias_and_says_why():
    cfg = config(task="regression", evaluation={"metric": "mse"})
    champion = {"alias": "production", "version": 3, "why": "it predicts other labels: ['a', 'b']"}
    gate = gate_decision({"mse": 0.1}, champion, cfg)
    assert gate["passed"] and not gate["promote"] and gate["decision"] == "keep"
    assert gate["reason"] == "champion v3 is not comparable (it predicts other labels: ['a', 'b']); promote by hand"


def test_higher_is_better_regression_metric_keeps_the_minimum_semantics():
    cfg = config(task="regression", evaluation={"metric": "pearson", "minimum": 0.7})
    assert not gate_decision({"pearson": 0.6}, None, cfg)["passed"]
    champion = {"alias": "production", "version": 1, "metrics": {"pearson": 0.8}}
    assert gate_decision({"pearson": 0.85}, champion, cfg)["promote"]


# -- config validation --------------------------------------------------------

def test_regression_defaults_to_pearson():
    assert config(task="regression").evaluation.metric.value == "pearson"
    assert config().evaluation.metric.value == "f1_macro"


def test_a_classification_metric_for_regression_is_rejected_naming_the_key():
    message = config_error(task="regression", evaluation={"metric": "f1_macro"})
    assert "evaluation.metric: f1_macro is not a regression metric" in message and "test.yaml" in message


def test_a_regression_metric_for_classification_is_rejected_naming_the_key():
    assert "evaluation.metric: rmse is not a classification metric" in config_error(evaluation={"metric": "rmse"})


def test_minimum_for_a_lower_is_better_metric_and_maximum_for_a_higher_one_are_rejected():
    assert "evaluation.minimum: mse is lower-is-better" in config_error(
        task="regression", evaluation={"metric": "mse", "minimum": 0.5})
    assert "evaluation.maximum: pearson is higher-is-better" in config_error(
        task="regression", evaluation={"metric": "pearson", "maximum": 0.5})


def test_settings_for_the_other_task_are_rejected_and_all_reported_together():
    message = config_error(data={"scale_targets": "standard"}, validation={"target_min": 0},
                           model={"unfreeze_top_layers": 2})
    assert "3 problem(s)" in message
    for key in ("data.scale_targets", "validation.target_min", "model.unfreeze_top_layers"):
        assert f"  {key}" in message
    assert "training.class_weights: not for task: regression (only for task: classification)" in config_error(
        task="regression", training={"class_weights": "balanced"})


def test_early_stopping_needs_a_validation_split():
    assert "training.early_stopping_patience: needs a validation split" in config_error(
        data={"validation_fraction": 0}, training={"early_stopping_patience": 2})
    assert config(data={"split_column": "split", "validation_fraction": 0},
                  training={"early_stopping_patience": 2}).training.early_stopping_patience == 2


def test_method_and_lora_settings_parse_with_defaults():
    cfg = config(model={"method": "lora", "lora": {"r": 4}})
    assert cfg.model.method.value == "lora" and cfg.model.lora.r == 4 and cfg.model.lora.alpha == 16
    assert "model.method" in config_error(model={"method": "adapters"})
    assert "model.lora.rank: unknown key" in config_error(model={"lora": {"rank": 4}})


# -- validation and splits for numeric targets --------------------------------

def regression_frame(targets) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"sentence number {i}" for i in range(len(targets))],
                         "label": [str(t) for t in targets]})


def failed(report: dict) -> dict[str, dict]:
    return {r["expectation"]: r for r in report["results"] if not r["success"]}


def test_numeric_targets_pass_and_no_per_class_check_applies():
    cfg = config(task="regression", validation={"target_min": 0, "target_max": 5})
    report = validate_frame(regression_frame(np.linspace(0, 5, 40).round(2)), cfg)
    assert report["success"], failed(report)
    names = {r["expectation"] for r in report["results"]}
    assert "expect_rows_per_class_to_be_at_least" not in names
    assert {"expect_column_values_to_be_numeric", "expect_column_values_to_be_between"} <= names


def test_unparseable_and_out_of_range_targets_are_counted():
    targets = [str(v) for v in np.linspace(0, 5, 40).round(2)]
    targets[3], targets[7], targets[9] = "high", "7.5", "-1"
    report = validate_frame(regression_frame(targets), config(task="regression",
                                                              validation={"target_min": 0, "target_max": 5}))
    bad = failed(report)
    assert bad["expect_column_values_to_be_numeric"]["unexpected_count"] == 1
    assert bad["expect_column_values_to_be_numeric"]["examples"] == ["high"]
    assert bad["expect_column_values_to_be_between"]["unexpected_count"] == 2


def test_regression_splits_are_stratified_by_target_quantile():
    frame = regression_frame(np.arange(200) / 10)
    splits = split_rows(frame, config(task="regression"))
    targets = frame["label"].astype(float)
    for split in ("validation", "test"):  # every fifth of the range is represented in the held-out splits
        bins = pd.qcut(targets[splits == split], [0, 0.2, 0.4, 0.6, 0.8, 1.0], labels=False)
        assert targets[splits == split].min() < 4 and targets[splits == split].max() > 16, split
        assert bins.nunique() == 5


# -- checkpoints: the best one survives pruning -------------------------------

def checkpoint(store: CheckpointStore, step: int, best: int | None) -> None:
    folder = store.local / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    state = {"global_step": step, "best_model_checkpoint": str(store.local / f"checkpoint-{best}") if best else None}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    store.mark_complete(step)


def test_the_best_checkpoint_is_never_pruned_while_it_is_the_best(tmp_path):
    store = CheckpointStore(LocalStorage(tmp_path / "root"), "candidates/abc", tmp_path / "scratch")
    checkpoint(store, 10, best=10)
    checkpoint(store, 20, best=10)
    checkpoint(store, 30, best=10)
    checkpoint(store, 40, best=10)
    assert store.complete_steps() == [10, 30, 40], "the newest two plus the best"
    checkpoint(store, 50, best=50)
    assert store.complete_steps() == [40, 50], "once no longer the best, it goes"


def test_resume_points_the_best_checkpoint_at_this_attempts_folder(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    first = CheckpointStore(storage, "candidates/abc", tmp_path / "scratch-1")
    checkpoint(first, 10, best=10)
    checkpoint(first, 20, best=10)
    state = json.loads((first.local / "checkpoint-20" / "trainer_state.json").read_text())
    state["best_model_checkpoint"] = "/elsewhere/old-scratch/checkpoint-10"  # as written by an earlier attempt
    (first.local / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(state))
    resumed = CheckpointStore(storage, "candidates/abc", tmp_path / "scratch-2").newest_complete()
    best = json.loads((resumed / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert best == str(resumed.parent / "checkpoint-10") and (resumed.parent / "checkpoint-10" / MARKER).exists()


# -- training plumbing: schedules, patience on resume, class weights, adapter folders ----------

def test_early_stopping_evaluates_and_saves_together_every_epoch_or_checkpoint_interval():
    from tuneline.training.loop import evaluation_schedule

    cfg = config(task="regression", evaluation={"metric": "rmse"},
                 training={"early_stopping_patience": 2, "checkpoint_every_steps": 200})
    schedule = evaluation_schedule(cfg, True, train_rows=320, batch_size=16, accumulation=1)  # 20 steps / epoch
    assert schedule["eval_steps"] == schedule["save_steps"] == 20
    assert schedule["load_best_model_at_end"] and schedule["metric_for_best_model"] == "rmse"
    assert schedule["greater_is_better"] is False, "rmse: lower is better"
    cfg = config(training={"early_stopping_patience": 2, "checkpoint_every_steps": 5})
    assert evaluation_schedule(cfg, True, 320, 16, 1)["eval_steps"] == 5
    assert evaluation_schedule(cfg, True, 320, 16, 1)["greater_is_better"] is True
    assert "load_best_model_at_end" not in evaluation_schedule(config(), True, 320, 16, 1)


def test_the_patience_count_is_restored_from_the_checkpoint_state():
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from tuneline.training.loop import early_stopping_callback

    callback = early_stopping_callback(3)
    state = TrainerState()
    state.stateful_callbacks = {type(callback).__name__: {
        "args": {"early_stopping_patience": 3}, "attributes": {"early_stopping_patience_counter": 2}}}
    args = SimpleNamespace(load_best_model_at_end=True, metric_for_best_model="f1_macro", eval_strategy="steps")
    callback.on_train_begin(args, state, TrainerControl())
    assert callback.early_stopping_patience_counter == 2
    assert callback.state()["attributes"]["early_stopping_patience_counter"] == 2, "saved again in checkpoints"


def test_balanced_class_weights_weigh_rare_classes_up():
    import torch

    from tuneline.objectives.classification import Classification

    labels = ["a", "b", "c"]
    cfg = config(training={"class_weights": "balanced"})
    loss = Classification().loss(cfg, {"labels": [0] * 6 + [1] * 3 + [2] * 1}, {"labels": labels})
    expected = torch.tensor([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 0])
    assert torch.allclose(loss({"logits": logits}, target),
                          torch.nn.functional.cross_entropy(logits, target, weight=expected))
    assert Classification().loss(config(), {"labels": [0, 1]}, {"labels": labels}) is None, "off by default"


def test_registry_accepts_an_adapter_folder_and_still_refuses_pickles(tmp_path):
    from tuneline.errors import RegistryError
    from tuneline.registry import check_model_folder

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    check_model_folder(folder)
    (folder / "training_args.bin").write_bytes(b"pickle")
    with pytest.raises(RegistryError, match="pickled"):
        check_model_folder(folder)


def test_an_unset_learning_rate_takes_the_method_default_and_an_explicit_one_wins():
    from tuneline.config import METHOD_LEARNING_RATES, learning_rate

    for method in ("full", "freeze", "lora"):
        assert learning_rate(config(model={"method": method})) == METHOD_LEARNING_RATES[method]
    assert METHOD_LEARNING_RATES["full"] < METHOD_LEARNING_RATES["freeze"] < METHOD_LEARNING_RATES["lora"]
    assert learning_rate(config(model={"method": "lora"}, training={"learning_rate": 3e-4})) == 3e-4
