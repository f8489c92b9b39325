"""The comparison report: runs side by side, from the table mlflow.search_runs returns (see tracking.Tracker).

Pure functions of a pandas DataFrame (one row per run, columns run_id, params.*, metrics.*, tags.*) and the
paths of each run's final image grid; `genlab compare` does the I/O. A row is an evaluate run (genlab.comparison).
The numbers are its MLflow metrics unchanged, which the evaluate stage logged from metrics/<name>_eval.json: the
report, `dvc metrics show` and the MLflow UI show the same values.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# (row label, metric name under eval/ and floor/). Arrows say which way is better.
SAMPLE_METRICS = [
    ("Domain FID ↓", "fid"),
    ("Precision ↑ (fidelity, k-NN manifolds)", "knn_precision"),
    ("Recall ↑ (coverage, k-NN manifolds)", "knn_recall"),
    ("Classes present, > 2% of samples ↑", "classes_present"),
    ("Largest class share (uniform: 0.1)", "max_class_share"),
    ("KL(classes ‖ uniform), nats ↓", "class_kl_uniform"),
    ("Classifier score ↑ (at most 10)", "classifier_score"),
    ("C2ST accuracy (indistinguishable: 0.5)", "c2st_accuracy"),
]
# Conditional models: did they draw the digit asked for?
CONDITIONAL_METRICS = [
    ("Conditional accuracy ↑ (requested digit recognised)", "conditional_accuracy"),
    ("Conditional accuracy, worst digit ↑", "conditional_accuracy_min"),
    ("Domain FID of the worst digit ↓", "fid_by_class_max"),
]
# Each kind's own metrics (GenerativeModel.evaluation_metrics). A kind's metric without a label here is shown by
# its name: a new model needs no edit of this file.
MODEL_METRICS = [
    ("GANs: own discriminator's accuracy", "discriminator_accuracy"),
    ("VAEs: test −ELBO, nats/image ↓", "test_loss"),
    ("VAEs: test NLL by IWAE, nats/image ↓", "test_nll_iwae"),
    ("VAEs: BCE floor (pixel entropy), nats/image", "bce_floor_per_image"),
    ("VAEs: reconstruction MSE per pixel ↓", "mse_per_pixel"),
]
# Counts and per-class breakdowns: in MLflow and evaluate's JSON, not in the one-screen table.
HIDDEN = ("num_", "class_share.", "conditional_accuracy_by_class.", "fid_by_class.", "classifier_test_accuracy")
FLOOR = "real data (floor)"


@dataclass(frozen=True)
class Report:
    markdown: str
    html: str
    metrics: pd.DataFrame  # rows: metric labels; columns: run labels and the floor
    params: pd.DataFrame  # rows: params that differ between runs of one model; columns: run labels


def run_label(run: Mapping) -> str:
    """'gan-stable · brisk-lamb · 1a2b3c4d': the model (and its variant), the DVC experiment or commit it was
    evaluated in, and the start of the evaluate run's id."""
    model = run.get("tags.genlab.model") or "?"
    variant = run.get(f"params.{model}.variant")
    experiment = run.get("tags.genlab.experiment")
    head = f"{model}-{variant}" if isinstance(variant, str) and variant else model
    parts = (head, experiment if isinstance(experiment, str) else "", run["run_id"][:8])
    return " · ".join(part for part in parts if part)


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def format_value(v) -> str:
    if not _present(v):
        return "—"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def metrics_table(runs: pd.DataFrame) -> pd.DataFrame:
    labels = [run_label(r) for _, r in runs.iterrows()]
    rows = {}
    known = SAMPLE_METRICS + CONDITIONAL_METRICS + MODEL_METRICS
    named = {name for _, name in known}
    others = sorted(
        name
        for c in runs.columns
        if c.startswith("metrics.eval/")
        and (name := c.removeprefix("metrics.eval/")) not in named
        and not name.startswith(HIDDEN)
    )
    for label, name in known + [(name, name) for name in others]:
        values = [r.get(f"metrics.eval/{name}") for _, r in runs.iterrows()]
        floors = [r.get(f"metrics.floor/{name}") for _, r in runs.iterrows()]
        floor = next((f for f in floors if _present(f)), None)
        if any(_present(v) for v in values):
            rows[label] = [*values, floor]
    return pd.DataFrame.from_dict(rows, orient="index", columns=[*labels, FLOOR])


def params_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Params whose values differ between runs of the same model; '—' where a param does not apply."""
    labels = [run_label(r) for _, r in runs.iterrows()]
    differing = []
    for column in sorted(c for c in runs.columns if c.startswith("params.")):
        for _, group in runs.groupby("tags.genlab.model"):
            values = {str(v) for v in group[column] if _present(v)}
            if len(values) > 1:
                differing.append(column)
                break
    table = runs[differing].T if differing else pd.DataFrame(index=[], columns=range(len(runs)))
    table.index = [c.removeprefix("params.") for c in differing]
    table.columns = labels
    return table


def feature_extractor_note(runs: pd.DataFrame) -> tuple[str, bool]:
    """One line naming the classifier the metrics were computed with; False if the runs used different ones."""
    hashes = sorted({h for h in runs.get("tags.genlab.classifier_sha256", pd.Series(dtype=str)) if _present(h)})
    accs = sorted({a for a in runs.get("metrics.eval/classifier_test_accuracy", pd.Series(dtype=float)) if _present(a)})
    acc = ", ".join(f"{a:.4f}" for a in accs) or "unknown"
    shown = ", ".join(h[:12] for h in hashes) or "unknown"
    return f"Feature extractor: MNIST CNN, test accuracy {acc}, weights sha256 {shown}.", len(hashes) <= 1


def samples_note(runs: pd.DataFrame) -> str:
    """The number of generated samples the runs were scored on, as logged (eval/num_samples)."""
    counts = sorted({int(v) for v in runs.get("metrics.eval/num_samples", pd.Series(dtype=float)) if _present(v)})
    return " or ".join(f"{c:,}" for c in counts) or "an unknown number of"


def _markdown_table(df: pd.DataFrame, index_name: str) -> str:
    header = [index_name, *df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in df.iterrows():
        lines.append("| " + " | ".join([str(index), *(format_value(v) for v in row)]) + " |")
    return "\n".join(lines)


def _html_table(df: pd.DataFrame, index_name: str) -> str:
    shown = df.map(format_value)
    shown.columns.name = index_name  # top-left cell, rather than an extra header row
    return shown.to_html(escape=True, border=0, classes="runs")


def build_report(runs: pd.DataFrame, grids: Mapping[str, Path], *, image_dir: str = "images") -> Report:
    """runs: the selected runs (newest first); grids: run_id -> the run's final image grid (PNG), if any."""
    metrics = metrics_table(runs)
    params = params_table(runs)
    note, consistent = feature_extractor_note(runs)
    warning = (
        ""
        if consistent
        else "**Warning:** these runs were scored with different feature extractors; their FID, precision and"
        " recall do not compare."
    )
    labels = {r["run_id"]: run_label(r) for _, r in runs.iterrows()}
    md = ["# genlab: run comparison", "", note, ""]
    if warning:
        md += [warning, ""]
    md += [
        "## Metrics",
        "",
        f"Samples: {samples_note(runs)} per model against the test images; the floor scores real training images"
        " the same way. Conditional models draw balanced digits. Arrows say which way is better.",
        "",
        _markdown_table(metrics, "metric"),
        "",
        "## Params that differ",
        "",
        _markdown_table(params, "param") if len(params) else "No params differ between runs of the same model.",
        "",
        "## Final grids",
        "",
        "The last rendered epoch of each run: samples from fixed noise (conditional models: row k asks for digit"
        " k), VAE reconstructions of fixed test images.",
        "",
    ]
    if grids:
        md += [
            "| " + " | ".join(labels[r] for r in grids) + " |",
            "|" + "---|" * len(grids),
            "| " + " | ".join(f"![{labels[r]}]({image_dir}/{p.name})" for r, p in grids.items()) + " |",
        ]

    figures = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(labels[run_id])}</figcaption></figure>"
        for run_id, path in grids.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>genlab: run comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table.runs {{ border-collapse: collapse; }}
table.runs td, table.runs th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
table.runs th:first-child, table.runs tbody th {{ text-align: left; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ width: 360px; image-rendering: pixelated; }}
</style></head><body>
<h1>genlab: run comparison</h1>
<p>{html.escape(note)}</p>{f"<p><strong>{html.escape(warning.replace('**', ''))}</strong></p>" if warning else ""}
<h2>Metrics</h2>
{_html_table(metrics, "metric")}
<h2>Params that differ</h2>
{_html_table(params, "param") if len(params) else "<p>No params differ between runs of the same model.</p>"}
<h2>Final grids</h2>
<p>The last rendered epoch of each run: samples from fixed noise (conditional models: row k asks for digit k),
VAE reconstructions of fixed test images.</p>
{figures}
</body></html>
"""
    return Report(markdown="\n".join(md), html=page, metrics=metrics, params=params)
