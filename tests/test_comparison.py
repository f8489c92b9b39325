"""Choosing runs to compare by what a user types, from a runs table shaped like mlflow.search_runs' frame."""

from __future__ import annotations

import pandas as pd
import pytest

from genlab.comparison import SelectionError, evaluated_runs, render_run_of, select

COMMIT = "c0ffee" + "0" * 34


def run(run_id: str, stage: str, experiment: str, checkpoint: str, model: str = "gan") -> dict:
    return {"run_id": run_id, "status": "FINISHED", "tags.genlab.stage": stage, "tags.genlab.model": model,
            "tags.genlab.experiment": experiment, "tags.genlab.checkpoint_sha256": checkpoint,
            "tags.git.commit": COMMIT}  # fmt: skip


def frame() -> pd.DataFrame:
    # Newest first, as search_runs orders them. Two experiments share the checkpoint "k1" (a cached model).
    return pd.DataFrame(
        [
            run("e3" + "0" * 30, "evaluate", "c0ffee0", "k3", model="vae"),
            run("e2" + "0" * 30, "evaluate", "lucid-owl", "k1"),
            run("r2" + "0" * 30, "render", "lucid-owl", "k1"),
            run("e1b" + "0" * 29, "evaluate", "brisk-lamb", "k1"),
            run("e1a" + "0" * 29, "evaluate", "brisk-lamb", "k1"),  # an older evaluation of the same: hidden
            run("r1" + "0" * 30, "render", "brisk-lamb", "k1"),
            run("abcdef" + "0" * 26, "train", "brisk-lamb", "k1"),
        ]
    )


def ids(runs: pd.DataFrame) -> list[str]:
    return [r[:3] for r in runs["run_id"]]


def test_every_experiment_keeps_its_own_evaluation_of_a_shared_checkpoint():
    assert ids(evaluated_runs(frame())) == ["e30", "e20", "e1b"]


def test_selectors_name_experiments_run_ids_and_revisions_in_the_order_given():
    revisions = {"HEAD": COMMIT}
    chosen = select(frame(), ["lucid-owl", "e1b000", "HEAD"], revisions.get)
    assert ids(chosen) == ["e20", "e1b", "e30"]
    # An older evaluation, hidden from the default list, is still there by its id.
    assert ids(select(frame(), ["e1a000"])) == ["e1a"]
    # A revision means the plain dvc repro at that commit, not its uncommitted (+dirty) runs.
    dirty = pd.concat([pd.DataFrame([run("ed" + "0" * 30, "evaluate", "c0ffee0+dirty", "k4")]), frame()])
    assert ids(select(dirty, ["HEAD"], revisions.get)) == ["e30"]
    # A training run's id means the evaluations of its checkpoint, in every experiment.
    assert ids(select(frame(), ["abcdef"])) == ["e20", "e1b"]
    assert ids(select(frame(), [])) == ["e30", "e20", "e1b"]


@pytest.mark.parametrize(
    ("selectors", "message"),
    [(["no-such-exp"], "names no evaluated run"), (["e00000"], "names no evaluated run")],
)
def test_a_selector_that_names_nothing_says_so(selectors, message):
    with pytest.raises(SelectionError, match=message):
        select(frame(), selectors)


def test_an_ambiguous_run_id_prefix_asks_for_more_digits():
    table = pd.concat([frame(), pd.DataFrame([run("abcdef1" + "0" * 25, "evaluate", "x", "k9")])])
    with pytest.raises(SelectionError, match="start of 2 run ids"):
        select(table, ["abcdef"])


def test_the_figures_come_from_the_render_run_of_the_same_experiment():
    table = frame()
    evaluations = evaluated_runs(table).set_index("run_id", drop=False)
    assert render_run_of(table, evaluations.loc["e2" + "0" * 30])[:2] == "r2"
    assert render_run_of(table, evaluations.loc["e1b" + "0" * 29])[:2] == "r1"
    assert render_run_of(table, evaluations.loc["e3" + "0" * 30]) is None


def exp_show_entry(name: str, lr: float, fid: float, test_loss: float | None = None) -> dict:
    evaluation = {
        "fid": fid,
        "knn_precision": 0.5,
        "num_samples": 100,
        **({"test_loss": test_loss} if test_loss else {}),
    }
    return {
        "rev": "0123456789abcdef",
        "name": name,
        "data": {
            "params": {"params.yaml": {"data": {"models": {"gan": "gan"}, "paths": {"metrics_dir": "metrics"},
                                                "gan": {"lr": lr, "epochs": 2, "variants": {"stable": {}}}}}},
            "metrics": {"metrics/gan_eval.json": {"data": evaluation}},
        },
    }  # fmt: skip


def test_the_experiments_table_has_a_row_per_experiment_and_model_with_what_differs():
    from genlab.comparison import experiments_table

    workspace = {**exp_show_entry("", 2e-4, 30.0), "rev": "workspace", "name": None}
    baseline = {**exp_show_entry("", 2e-4, 30.0), "name": "main"}
    baseline["experiments"] = [{"revs": [exp_show_entry("brisk-lamb", 1e-4, 25.0)]}]
    table = experiments_table([workspace, baseline])
    assert list(table["experiment"]) == ["workspace", "main", "brisk-lamb"]
    assert list(table.columns) == ["experiment", "model", "params", "fid", "knn_precision"]  # no empty columns
    assert list(table["params"]) == ["lr=0.0002", "lr=0.0002", "lr=0.0001"]  # epochs is the same everywhere
    assert table.loc[2, "fid"] == 25.0
    # The identity stage's settle epoch and late flips join the row when the experiment has them.
    baseline["experiments"][0]["revs"][0]["data"]["metrics"]["metrics/gan_identity.json"] = {
        "data": {"settle_epoch": 61, "identity_flips_last10": 0.02, "most_drifting": []}
    }
    table = experiments_table([workspace, baseline]).set_index("experiment")
    assert table.loc["brisk-lamb", "settle_epoch"] == 61 and pd.isna(table.loc["main", "settle_epoch"])
    assert table.loc["brisk-lamb", "identity_flips_last10"] == 0.02


def test_a_store_without_genlab_runs_selects_nothing_rather_than_failing():
    bare = pd.DataFrame([{"run_id": "f" * 32, "status": "RUNNING", "tags.genlab.stage": "train"}])
    assert select(bare, []).empty and evaluated_runs(pd.DataFrame()).empty
    with pytest.raises(SelectionError):
        select(bare, ["brisk-lamb"])


def test_training_runs_name_checkpoints_before_they_are_evaluated():
    from genlab.comparison import trained_checkpoints

    assert trained_checkpoints(frame(), "brisk-lamb") == {"k1"}
    assert trained_checkpoints(frame(), "abcdef") == {"k1"}
    assert trained_checkpoints(frame(), "nothing") == set()
