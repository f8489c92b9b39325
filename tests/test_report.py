"""The comparison report's tables, from a runs table shaped like mlflow.search_runs' (no MLflow needed)."""

from __future__ import annotations

import pandas as pd

from genlab.report import FLOOR, build_report


def runs_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"run_id": "a" * 32, "tags.genlab.model": "cgan", "metrics.eval/fid": 40.0,
             "metrics.eval/conditional_accuracy": 0.98, "metrics.eval/conditional_accuracy_by_class.3": 0.97,
             "metrics.eval/num_samples": 2000.0, "metrics.eval/a_new_kinds_metric": 1.5, "metrics.floor/fid": 2.8,
             "params.cgan.lr": "0.0002"},
            {"run_id": "b" * 32, "tags.genlab.model": "vae", "metrics.eval/fid": 130.0,
             "metrics.eval/test_loss": 97.9, "metrics.eval/num_samples": 2000.0, "metrics.floor/fid": 2.8,
             "params.cgan.lr": None},
        ]
    )  # fmt: skip


def test_every_model_gets_its_rows_and_unknown_metrics_appear_by_name():
    report = build_report(runs_frame(), {})
    table = report.metrics
    assert table.loc["Domain FID ↓", FLOOR] == 2.8
    assert table.loc["Conditional accuracy ↑ (requested digit recognised)"].iloc[0] == 0.98
    assert table.loc["VAEs: test −ELBO, nats/image ↓"].iloc[1] == 97.9
    assert table.loc["a_new_kinds_metric"].iloc[0] == 1.5  # a metric no label names is still shown
    assert not any("by_class" in row or "num_samples" in row for row in table.index)  # breakdowns stay in MLflow
    assert "Samples: 2,000 per model" in report.markdown  # the count the runs logged, not a fixed 10,000
