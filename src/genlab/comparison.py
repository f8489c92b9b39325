"""Which runs to compare, from what a user types: DVC experiment names, git revisions, run ids (full or short).

Pure functions of the runs table (mlflow.search_runs' frame: run_id, status, tags.*, params.*, metrics.*), so
they test without MLflow; `genlab compare` does the I/O. A comparison row is an evaluate run (each DVC experiment
has its own, see genlab.tracking); its figures come from the render run of the same checkpoint and experiment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from genlab.tracking import TAG_CHECKPOINT, TAG_EXPERIMENT, TAG_STAGE, commit_label

STAGE, EXPERIMENT, CHECKPOINT = f"tags.{TAG_STAGE}", f"tags.{TAG_EXPERIMENT}", f"tags.{TAG_CHECKPOINT}"
MIN_ID_PREFIX = 6  # a shorter prefix of a 32-digit run id would too often match several runs


def _is_run_id_prefix(selector: str) -> bool:
    return len(selector) >= MIN_ID_PREFIX and all(c in "0123456789abcdef" for c in selector.lower())


class SelectionError(ValueError):
    """A selector that names no run, or more than one where one was meant. The message says which and why."""


COLUMNS = ["run_id", "status", STAGE, EXPERIMENT, CHECKPOINT, "tags.git.commit"]


def _stage_runs(frame: pd.DataFrame, stage: str) -> pd.DataFrame:
    # A store with no genlab runs yet, or whose runs lack a tag (a first training still running), lacks columns.
    frame = frame.reindex(columns=[*frame.columns, *(c for c in COLUMNS if c not in frame.columns)])
    return frame[(frame[STAGE] == stage) & (frame["status"] == "FINISHED")]


def evaluated_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished evaluate runs, newest first, one per (checkpoint, experiment): re-evaluating the same model in the
    same experiment does not list it twice."""
    runs = _stage_runs(frame, "evaluate")
    return runs.drop_duplicates(subset=[CHECKPOINT, EXPERIMENT], keep="first")


def select(
    frame: pd.DataFrame, selectors: Sequence[str], resolve_revision: Callable[[str], str | None] = lambda _: None
) -> pd.DataFrame:
    """The evaluate runs named by `selectors`, in their order. A selector is, tried in this order:
    a run id or a prefix of one (at least 6 digits; the run list's IDs, or a training run's, meaning its
    evaluations); a DVC experiment name (every model it evaluated); a git revision that resolve_revision turns into
    a commit (the runs of plain `dvc repro` at that commit)."""
    evaluated = evaluated_runs(frame)
    chosen: list[pd.DataFrame] = []
    for selector in selectors:
        found = _match(frame, evaluated, selector, resolve_revision)
        if found.empty:
            raise SelectionError(
                f"{selector!r} names no evaluated run: give a run id (6+ digits), a DVC experiment name"
                " (dvc exp show) or a git revision whose pipeline ran; `genlab compare --list` shows what there is"
            )
        chosen.append(found)
    if not chosen:
        return evaluated.reset_index(drop=True)
    return pd.concat(chosen).drop_duplicates(subset="run_id").reset_index(drop=True)


def _match(
    frame: pd.DataFrame, evaluated: pd.DataFrame, selector: str, resolve_revision: Callable[[str], str | None]
) -> pd.DataFrame:
    if _is_run_id_prefix(selector) and len(frame):
        ids = frame[frame["run_id"].str.startswith(selector.lower())]
        if len(ids) > 1:
            raise SelectionError(f"{selector!r} is the start of {len(ids)} run ids; give more digits")
        if len(ids) == 1:
            run = ids.iloc[0]
            if run.get(STAGE) == "evaluate":  # also an older evaluation that evaluated_runs hides
                evaluations = _stage_runs(frame, "evaluate")
                return evaluations[evaluations["run_id"] == run["run_id"]]
            # A training (or render) run: the evaluations of its checkpoint.
            return evaluated[evaluated[CHECKPOINT] == run.get(CHECKPOINT)]
    by_name = evaluated[evaluated[EXPERIMENT] == selector]
    if not by_name.empty:
        return by_name
    commit = resolve_revision(selector)
    if commit is None:
        return evaluated.iloc[:0]
    # Runs of `dvc exp run` share their baseline's commit, and uncommitted edits are labelled <commit>+dirty: a
    # revision means the pipeline run at that commit itself.
    return evaluated[evaluated[EXPERIMENT] == commit_label(commit)]


def trained_checkpoints(
    frame: pd.DataFrame, selector: str, resolve_revision: Callable[[str], str | None] = lambda _: None
) -> set[str]:
    """The checkpoint hashes of the training runs a selector names (a run id prefix, a DVC experiment name, a git
    revision), whether or not they were evaluated yet."""
    trained = _stage_runs(frame, "train")
    if _is_run_id_prefix(selector):
        by_id = trained[trained["run_id"].str.startswith(selector.lower())]
        if len(by_id):
            return set(by_id[CHECKPOINT])
    by_name = trained[trained[EXPERIMENT] == selector]
    if len(by_name):
        return set(by_name[CHECKPOINT])
    commit = resolve_revision(selector)
    return set(trained[trained[EXPERIMENT] == commit_label(commit)][CHECKPOINT]) if commit else set()


def render_run_of(frame: pd.DataFrame, evaluation: pd.Series) -> str | None:
    """The newest render run of the same checkpoint in the same experiment as this evaluate run, or None."""
    renders = _stage_runs(frame, "render")
    if renders.empty:
        return None
    same = renders[(renders[CHECKPOINT] == evaluation[CHECKPOINT]) & (renders[EXPERIMENT] == evaluation[EXPERIMENT])]
    return None if same.empty else str(same.iloc[0]["run_id"])


# `genlab exp`: the columns people compare, per (experiment, model), from `dvc exp show --json`. DVC's own table has
# a column per metric of every metrics file and per param (186 here), one very wide line per experiment.
HEADLINE = [
    "fid", "knn_precision", "knn_recall", "max_class_share", "c2st_accuracy", "conditional_accuracy", "test_loss"
]  # fmt: skip
# From the identity@<model> stage (genlab.identity): when the fixed inputs' digits settle, and whether they still
# move at the end.
IDENTITY_HEADLINE = ["settle_epoch", "identity_flips_last10"]


def _revisions(shown: list[dict]) -> list[tuple[str, dict]]:
    """(label, data) of the workspace, each baseline commit and each of its experiments, as exp show lists them."""
    found = []
    for entry in shown:
        label = entry.get("name") or (entry["rev"] if entry["rev"] == "workspace" else entry["rev"][:7])
        if entry.get("data"):
            found.append((label, entry["data"]))
        for experiment in entry.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("data"):
                    found.append((rev.get("name") or rev["rev"][:7], rev["data"]))
    return found


def experiments_table(shown: list[dict], headline: list[str] = HEADLINE) -> pd.DataFrame:
    """One row per (experiment, model): the headline evaluation metrics the model has, and the params of its
    section that differ between the experiments listed (`name=value`, as `dvc exp show --only-changed`)."""
    rows = []
    for label, data in _revisions(shown):
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics") or {}
        directory = params.get("paths", {}).get("metrics_dir", "metrics")
        for model in params.get("models") or {}:
            evaluation = metrics.get(f"{directory}/{model}_eval.json", {}).get("data", {})
            identity = metrics.get(f"{directory}/{model}_identity.json", {}).get("data", {})
            section = {k: v for k, v in (params.get(model) or {}).items() if not isinstance(v, dict)}
            rows.append({"experiment": label, "model": model, **{k: evaluation.get(k) for k in headline},
                         **{k: identity.get(k) for k in IDENTITY_HEADLINE}, "params": section})  # fmt: skip
    # The params that differ come right after the names: they say what each experiment is, and stay on the first
    # block's line when a wide table wraps.
    table = pd.DataFrame(rows, columns=["experiment", "model", "params", *headline, *IDENTITY_HEADLINE])
    # Params that differ between the rows of the same model, shown as name=value.
    changed: dict[str, set[str]] = {}
    for model, group in table.groupby("model"):
        keys = {k for p in group["params"] for k in p}
        changed[str(model)] = {k for k in keys if len({repr(p.get(k)) for p in group["params"]}) > 1}
    pairs = zip(table["model"], table["params"], strict=True)
    table["params"] = [" ".join(f"{k}={p[k]}" for k in sorted(changed[m]) if k in p) for m, p in pairs]
    if not any(table["params"]):
        table = table.drop(columns="params")
    return table.dropna(axis=1, how="all")
