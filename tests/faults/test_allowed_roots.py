"""A worker reads and writes only under the roots it accepts ($TUNELINE_ALLOWED_ROOTS).

Before: data.source, storage and model.base were free text in the deployment form; a UI user could
point data.source at any file the worker can read (/etc/passwd) and get it back in the validation
report, the logs and a Parquet snapshot. Now the flows refuse such a run first, before any read.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import EXAMPLES, make_config
from tuneline.access import ALLOWED_ROOTS, allowed_roots, check_allowed_roots
from tuneline.config import parse_config
from tuneline.errors import ConfigError


@pytest.fixture
def area(tmp_path):
    """tmp/allowed (with store/ and data.csv) and tmp/outside (with secret.csv)."""
    (tmp_path / "allowed" / "store").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    shutil.copy(EXAMPLES / "data" / "reviews.csv", tmp_path / "allowed" / "data.csv")
    shutil.copy(EXAMPLES / "data" / "reviews.csv", tmp_path / "outside" / "secret.csv")
    return tmp_path


def config(source, storage, **sections):
    return parse_config(make_config(source, storage, **sections))


def refused(cfg) -> str:
    with pytest.raises(ConfigError) as failure:
        check_allowed_roots(cfg)
    return str(failure.value)


def test_unset_or_blank_allows_everything(monkeypatch, area):
    monkeypatch.delenv(ALLOWED_ROOTS, raising=False)
    assert allowed_roots() is None
    check_allowed_roots(config("/etc/passwd", area / "anywhere"))
    monkeypatch.setenv(ALLOWED_ROOTS, " , ")
    assert allowed_roots() is None
    check_allowed_roots(config("/etc/passwd", area / "anywhere"))


def test_a_path_under_an_allowed_folder_passes_and_one_outside_is_named(monkeypatch, area):
    allowed = area / "allowed"
    monkeypatch.setenv(ALLOWED_ROOTS, f"{allowed}, s3://corp-ml/")
    check_allowed_roots(config(allowed / "data.csv", allowed / "store"))
    message = refused(config("/etc/passwd", allowed / "store"))
    assert message == (f"data.source '/etc/passwd' is outside the roots this worker accepts "
                       f"({ALLOWED_ROOTS}={allowed}, s3://corp-ml/)")
    message = refused(config(allowed / "data.csv", area / "outside" / "store"))
    assert message.startswith(f"storage '{area / 'outside' / 'store'}' is outside")


def test_dot_dot_out_of_an_allowed_folder_is_refused(monkeypatch, area):
    monkeypatch.setenv(ALLOWED_ROOTS, str(area / "allowed"))
    sneaky = f"{area}/allowed/../outside/secret.csv"
    message = refused(config(sneaky, area / "allowed" / "store"))
    assert f"data.source {sneaky!r} (it resolves to '{area}/outside/secret.csv') is outside" in message


def test_a_symlink_escaping_an_allowed_folder_is_refused(monkeypatch, area):
    monkeypatch.setenv(ALLOWED_ROOTS, str(area / "allowed"))
    link = area / "allowed" / "innocent.csv"
    link.symlink_to(area / "outside" / "secret.csv")
    folder_link = area / "allowed" / "more"
    folder_link.symlink_to(area / "outside", target_is_directory=True)
    assert "resolves to" in refused(config(link, area / "allowed" / "store"))
    assert "data.source" in refused(config(folder_link, area / "allowed" / "store"))
    assert refused(config(area / "allowed" / "data.csv", folder_link / "store")).startswith("storage ")
    # a link that stays inside is fine, and so is an allowed entry that is itself a link
    (area / "allowed" / "alias.csv").symlink_to(area / "allowed" / "data.csv")
    check_allowed_roots(config(area / "allowed" / "alias.csv", area / "allowed" / "store"))
    (area / "entry").symlink_to(area / "allowed", target_is_directory=True)
    monkeypatch.setenv(ALLOWED_ROOTS, str(area / "entry"))
    check_allowed_roots(config(area / "allowed" / "data.csv", area / "entry" / "store"))


def test_a_folder_allows_only_whole_path_segments(monkeypatch, area):
    (area / "allowed-secret").mkdir()
    monkeypatch.setenv(ALLOWED_ROOTS, str(area / "allowed"))
    assert "data.source" in refused(config(area / "allowed-secret" / "x.csv", area / "allowed" / "store"))


def test_s3_entries_match_bucket_and_prefix_on_segment_boundaries(monkeypatch, area):
    monkeypatch.setenv(ALLOWED_ROOTS, f"s3://data s3://corp-ml/team/ {area / 'allowed'}")
    roots = allowed_roots()
    assert roots.allows_s3("s3://data/any/thing.csv") and roots.allows_s3("s3://data")
    assert not roots.allows_s3("s3://data-secret/x.csv")
    assert roots.allows_s3("s3://corp-ml/team/a/b.csv") and roots.allows_s3("s3://corp-ml/team/")
    assert not roots.allows_s3("s3://corp-ml/team-x/b.csv")
    assert not roots.allows_s3("s3://corp-ml/other/team/b.csv") and not roots.allows_s3("s3://corp-ml")
    assert not roots.allows_s3("s3://corp-ml/team/../secret/b.csv")
    store = area / "allowed" / "store"
    check_allowed_roots(config("s3://corp-ml/team/reviews.csv", store))
    message = refused(config("s3://data-secret/reviews.csv", store))
    assert message.startswith("data.source 's3://data-secret/reviews.csv' is outside the roots")
    message = refused(config(area / "allowed" / "data.csv", "s3://corp-ml/elsewhere"))
    assert message.startswith("storage 's3://corp-ml/elsewhere' is outside")


def test_hub_entries_allow_all_of_the_hub_an_organisation_or_one_repository(monkeypatch, area):
    allowed = area / "allowed"
    cases = {"hub:": {"acme/bert": True, "evil/model": True},
             "hub:acme/": {"acme/bert": True, "acme-evil/bert": False, "ACME/bert": False},
             "hub:acme": {"acme/bert": True, "evil/model": False},
             "hub:acme/bert": {"acme/bert": True, "acme/bert-large": False, "acme/other": False}}
    for entry, bases in cases.items():
        monkeypatch.setenv(ALLOWED_ROOTS, f"{allowed},{entry}")
        for base, ok in bases.items():
            cfg = config(allowed / "data.csv", allowed / "store", model={"base": base})
            if ok:
                check_allowed_roots(cfg)
            else:
                message = refused(cfg)
                assert message.startswith(f"model.base {base!r} (a Hugging Face Hub id: hub: entries allow it) is "
                                          f"outside the roots this worker accepts ({ALLOWED_ROOTS}={allowed},{entry})")
    monkeypatch.setenv(ALLOWED_ROOTS, str(allowed))  # no hub entry: no Hub model
    assert "model.base 'acme/bert'" in refused(config(allowed / "data.csv", allowed / "store",
                                                     model={"base": "acme/bert"}))


def test_base_model_folders_s3_registry_and_embedded(monkeypatch, area):
    allowed = area / "allowed"
    (allowed / "my-model").mkdir()
    (area / "outside" / "their-model").mkdir()
    monkeypatch.setenv(ALLOWED_ROOTS, f"{allowed} s3://models/")
    for base in (str(allowed / "my-model"), "s3://models/bert/", "registry:earlier@production", "all-MiniLM-L6-v2"):
        check_allowed_roots(config(allowed / "data.csv", allowed / "store", model={"base": base}))
    for base in (str(area / "outside" / "their-model"), "s3://other/bert/", "/etc"):
        assert refused(config(allowed / "data.csv", allowed / "store", model={"base": base})).startswith(
            f"model.base {base!r}")
    # a registry: base reads the run's storage: refused with it (the storage is named first)
    cfg = config(allowed / "data.csv", area / "outside" / "store", model={"base": "registry:earlier@production"})
    assert refused(cfg).startswith("storage ")


def test_the_default_storage_root_is_checked_too(monkeypatch, area):
    monkeypatch.setenv(ALLOWED_ROOTS, str(area / "allowed"))
    monkeypatch.chdir(area / "outside")
    cfg = parse_config({**make_config(area / "allowed" / "data.csv", ""), "storage": None})
    assert refused(cfg).startswith("storage (the default) './.tuneline' (it resolves to ")
    monkeypatch.setenv("TUNELINE_STORAGE", str(area / "allowed" / "store"))
    check_allowed_roots(cfg)


def test_an_entry_that_is_not_absolute_is_a_config_error_naming_the_variable(monkeypatch, area):
    monkeypatch.setenv(ALLOWED_ROOTS, "data,s3://corp-ml/")
    with pytest.raises(ConfigError, match=rf"{ALLOWED_ROOTS}: entry 'data' is not an absolute folder"):
        check_allowed_roots(config(area / "allowed" / "data.csv", area / "allowed" / "store"))


# -- real flow runs on the Prefect test harness ----------------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_a_finetune_run_with_data_outside_the_roots_fails_before_any_stage(monkeypatch, area):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.finetune import finetune

    store = area / "allowed" / "store"
    monkeypatch.setenv(ALLOWED_ROOTS, f"{area / 'allowed'},s3://corp-ml/")
    cfg = config(area / "outside" / "secret.csv", store, retries={"attempts": 3, "backoff_seconds": 5})
    state = finetune(config=cfg, return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError) as failure:
        state.result()
    assert str(failure.value) == (f"data.source '{area / 'outside' / 'secret.csv'}' is outside the roots this worker "
                                  f"accepts ({ALLOWED_ROOTS}={area / 'allowed'},s3://corp-ml/)")
    assert list(store.iterdir()) == []  # ingest and validate never ran: nothing snapshotted, no report
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert tasks == [] and run.run_count == 1  # no stage started, the flow was not retried
    assert "is outside the roots" in state.message


@pytest.mark.usefixtures("prefect_harness")
def test_a_sweep_whose_grid_leaves_the_roots_fails_before_any_trial(monkeypatch, area):
    from flows.sweep import sweep

    store = area / "allowed" / "store"
    monkeypatch.setenv(ALLOWED_ROOTS, str(area / "allowed"))
    cfg = config(area / "allowed" / "data.csv", store)
    grid = {"data.source": [str(area / "allowed" / "data.csv"), str(area / "outside" / "secret.csv")]}
    with pytest.raises(ConfigError, match=r"data.source '.*/outside/secret.csv' is outside the roots"):
        sweep(config=cfg, grid=grid)
    assert list(store.iterdir()) == []  # not even the first (allowed) trial ran
