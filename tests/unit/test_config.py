"""The run config: YAML + --set overrides -> validated FinetuneConfig, errors with key paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuneline.config import Precision, apply_override, load_config, parse_config
from tuneline.errors import ConfigError


def minimal(**data) -> dict:
    """The smallest valid raw config; ``data`` entries are merged into the data section."""
    return {"name": "reviews", "data": {"source": "reviews.csv", **data}}


def write_config(folder: Path, raw: dict, name: str = "config.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def config_error(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, where="test.yaml")
    return str(caught.value)


# -- parse_config -------------------------------------------------------------


def test_minimal_config_takes_the_documented_defaults():
    cfg = parse_config(minimal())
    assert cfg.data.source == "reviews.csv"
    assert cfg.data.text_column == "text" and cfg.data.label_column == "label"
    assert cfg.model.base == "all-MiniLM-L6-v2"
    assert cfg.training.precision is Precision.auto


def test_unknown_key_is_rejected_with_its_dotted_path():
    message = config_error(minimal(lables=["negative", "positive"]))
    assert "data.lables: unknown key" in message
    assert "test.yaml" in message


def test_unknown_top_level_section_is_rejected():
    raw = {**minimal(), "trainig": {"epochs": 1}}
    assert "trainig: unknown key" in config_error(raw)


def test_several_errors_are_reported_together_in_one_message():
    raw = minimal(lables=["a", "b"])
    raw["training"] = {"precision": "fp8", "epochs": 0}
    raw["storag"] = "/tmp/x"
    message = config_error(raw)
    expected_paths = ["data.lables", "training.precision", "training.epochs", "storag"]
    for path in expected_paths:
        assert f"\n  {path}: " in message, path
    assert f"({len(expected_paths)} problem(s))" in message


def test_missing_data_source_is_reported():
    raw = {"name": "reviews", "data": {"labels": ["negative", "positive"]}}
    assert "data.source: required key is missing" in config_error(raw)


def test_missing_data_section_is_reported():
    assert "data: required key is missing" in config_error({"name": "reviews"})


def test_bad_enum_value_names_the_key_and_the_allowed_values():
    raw = {**minimal(), "training": {"precision": "fp8"}}
    message = config_error(raw)
    line = next(l for l in message.splitlines() if "training.precision" in l)
    for allowed in Precision:
        assert allowed.value in line


def test_enum_values_parse_to_the_enum():
    cfg = parse_config({**minimal(), "training": {"precision": "bf16"}})
    assert cfg.training.precision is Precision.bf16


def test_bad_model_name_is_rejected():
    raw = {**minimal(), "name": "My Model!"}
    assert "name:" in config_error(raw)


def test_config_that_is_not_a_mapping_is_rejected():
    message = config_error(["name", "data"])
    assert "expected a mapping" in message and "list" in message


@pytest.mark.parametrize("validation_fraction,test_fraction", [(0.5, 0.4), (0.6, 0.35), (0.0, 0.95)])
def test_fractions_leaving_less_than_ten_percent_for_training_are_rejected(validation_fraction, test_fraction):
    message = config_error(minimal(validation_fraction=validation_fraction, test_fraction=test_fraction))
    assert "data:" in message
    assert "at least 10%" in message


@pytest.mark.parametrize("validation_fraction,test_fraction,train_rows", [(0.45, 0.4, 15), (0.5, 0.39, 11),
                                                                         (0.0, 0.89, 11)])
def test_fractions_leaving_more_than_ten_percent_for_training_are_accepted(validation_fraction, test_fraction,
                                                                            train_rows):
    """Accepted as given, and the split of 100 distinct rows really leaves that share for training
    (test first, then validation's share of the rest: 100 - 40 - 45 = 15 for the first case)."""
    import pandas as pd

    from tuneline.data.splits import INPUT, STRATUM, assign_splits

    cfg = parse_config(minimal(validation_fraction=validation_fraction, test_fraction=test_fraction))
    assert (cfg.data.validation_fraction, cfg.data.test_fraction) == (validation_fraction, test_fraction)
    frame = pd.DataFrame({INPUT: [f"row {i}" for i in range(100)], STRATUM: "all"})
    splits = assign_splits(frame, cfg.data)
    test_rows = round(100 * test_fraction)
    assert [int((splits == name).sum()) for name in ("train", "validation", "test")] == [
        train_rows, 100 - train_rows - test_rows, test_rows]


def test_numeric_labels_are_coerced_to_strings():
    cfg = parse_config(minimal(labels=[0, 1, 2]))
    assert cfg.data.labels == ["0", "1", "2"]


def test_numeric_labels_from_yaml_are_coerced_to_strings(tmp_path):
    text = "name: digits\ndata:\n  source: d.csv\n  labels: [0, 1]\n"
    (tmp_path / "digits.yaml").write_text(text, encoding="utf-8")
    assert load_config(tmp_path / "digits.yaml").data.labels == ["0", "1"]


# -- apply_override -----------------------------------------------------------


def test_override_values_are_typed_by_yaml():
    raw = minimal()
    for assignment in ("training.epochs=1", "training.learning_rate=2.0e-5", "data.labels=[neg, pos]",
                       "register.keep_failed=true", "storage="):
        apply_override(raw, assignment)
    assert raw["training"]["epochs"] == 1 and isinstance(raw["training"]["epochs"], int)
    assert raw["training"]["learning_rate"] == pytest.approx(2e-5)
    assert raw["data"]["labels"] == ["neg", "pos"]
    assert raw["register"]["keep_failed"] is True
    assert raw["storage"] is None


def test_override_replaces_an_existing_value_and_keeps_its_siblings():
    raw = minimal(seed=1, test_fraction=0.3)
    apply_override(raw, "data.seed=7")
    assert raw["data"]["seed"] == 7
    assert raw["data"]["test_fraction"] == 0.3


def test_override_into_a_non_section_is_a_config_error():
    raw = minimal()
    with pytest.raises(ConfigError) as caught:
        apply_override(raw, "data.source.path=x.csv")
    assert "data.source is not a section" in str(caught.value)
    assert raw["data"]["source"] == "reviews.csv"


@pytest.mark.parametrize("assignment", ["training.epochs", "=3", "  =3"])
def test_override_without_key_and_value_is_a_config_error(assignment):
    with pytest.raises(ConfigError) as caught:
        apply_override(minimal(), assignment)
    assert "expected key.path=value" in str(caught.value)


# -- load_config --------------------------------------------------------------


def test_load_config_applies_overrides_and_validates_them(tmp_path):
    path = write_config(tmp_path, {**minimal(), "training": {"epochs": 3}})
    cfg = load_config(path, ["training.epochs=1", "training.precision=fp32"])
    assert cfg.training.epochs == 1
    assert cfg.training.precision is Precision.fp32


def test_load_config_reports_a_bad_override_with_the_file_name(tmp_path):
    path = write_config(tmp_path, minimal())
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["training.epochs=many"])
    assert "training.epochs" in str(caught.value)
    assert str(path) in str(caught.value)


def test_load_config_rejects_an_override_of_an_unknown_key(tmp_path):
    path = write_config(tmp_path, minimal())
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["training.epoch=1"])
    assert "training.epoch: unknown key" in str(caught.value)


def test_relative_source_resolves_against_the_config_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    data_file = project / "data" / "reviews.csv"
    data_file.parent.mkdir(parents=True)
    data_file.write_text("text,label\nfine,positive\n", encoding="utf-8")
    path = write_config(project, minimal() | {"data": {"source": "data/reviews.csv"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cfg = load_config(path)

    assert Path(cfg.data.source).is_absolute()
    assert Path(cfg.data.source) == data_file.resolve()


def test_config_folder_wins_over_the_same_relative_path_in_the_cwd(tmp_path, monkeypatch):
    """Two projects with the same layout: the config must read its own data, not the cwd's."""
    ours, cwd = tmp_path / "ours", tmp_path / "cwd"
    for folder in (ours, cwd):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "reviews.csv").write_text(f"text,label\n{folder.name},positive\n", encoding="utf-8")
    path = write_config(ours, minimal() | {"data": {"source": "data/reviews.csv"}})
    monkeypatch.chdir(cwd)
    assert Path(load_config(path).data.source) == (ours / "data" / "reviews.csv").resolve()


def test_absolute_source_is_kept(tmp_path):
    data_file = tmp_path / "abs.csv"
    data_file.write_text("text,label\nfine,positive\n", encoding="utf-8")
    path = write_config(tmp_path / "conf", minimal() | {"data": {"source": str(data_file)}})
    assert load_config(path).data.source == str(data_file)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "not found" in str(caught.value) and "nope.yaml" in str(caught.value)


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "not valid YAML" in str(caught.value) and "broken.yaml" in str(caught.value)


def test_empty_config_file_reports_the_missing_keys(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "name: required key is missing" in str(caught.value)
    assert "data: required key is missing" in str(caught.value)
