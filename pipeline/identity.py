"""Stage identity@<name>: which digit the classifier sees in each of the model's fixed inputs at every epoch
(genlab.identity): per-epoch identity flips and settled share (a CSV for `dvc plots`, metrics with the epoch as
step in MLflow), the settle epoch and the inputs that changed digit most often (DVC metrics), a strip of every
input across all epochs and a GIF of the fixed inputs' grid. Usage: python pipeline/identity.py NAME"""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import sys

import torch

from genlab.checkpoints import read_weights_only
from genlab.config import flatten, load_params, load_runtime
from genlab.entry import run_stage
from genlab.errors import GenlabError
from genlab.feature_extractor import load_classifier
from genlab.identity import grid_animation, identity_strips, read_identities
from genlab.io import atomic_write_bytes, atomic_write_json, atomic_write_text, rows_csv
from genlab.render import save_png
from genlab.tracking import Tracker


def main(name: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = load_runtime()
    if name not in params.models:
        raise GenlabError(f"{name!r} is not in params.yaml's models {sorted(params.models)}")
    cfg, paths = params.identity, params.paths
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)  # before any work: fails fast without a store
    snap = read_weights_only(paths.snapshots(name))
    images, epochs = snap["images"], list(snap["epochs"])  # uint8 [E, N, 28, 28]
    # A conditional model's snapshots are rows of digits ("nrow" images each): row k asked for digit k.
    nrow = int(snap.get("nrow", params.render.nrow))
    asked = torch.arange(images.shape[1] // nrow).repeat_interleave(nrow) if "nrow" in snap else None
    classifier, _ = load_classifier(paths.classifier_model)
    ids = read_identities(classifier, images, epochs, asked)
    per_epoch = ids.per_epoch()
    summary = ids.summary(settled_share=cfg.settled_share, most_drifting=cfg.most_drifting, nrow=nrow)
    atomic_write_text(paths.identity_history(name), rows_csv(per_epoch))
    atomic_write_json(paths.identity_summary(name), summary)

    out = paths.identity_of(name)
    drifting = [d["input"] for d in summary["most_drifting"]]
    files = [out / "strips.png", out / "drift.png", out / "grid.gif"]
    save_png(identity_strips(images, ids, range(ids.num_inputs), title=f"{name}: every fixed input"), files[0])
    title = f"{name}: the {len(drifting)} inputs that changed digit most often"
    save_png(identity_strips(images, ids, drifting, title=title), files[1])
    # At 28 pixels per digit: 100 epochs of 64 noisy digits are 2.7 MB of GIF; every doubling of the scale would
    # quadruple that.
    gif = grid_animation(images, epochs, nrow=nrow, scale=1, padding=params.render.padding, ms_per_epoch=cfg.gif_ms)
    atomic_write_bytes(files[2], gif)

    description = f"Reads the digit of each of {name}'s {ids.num_inputs} fixed inputs at every epoch."
    with tracker.stage_run("identity", paths.model(name), description, paths.git_tracked_outputs()):
        tracker.log_params(flatten({"identity": cfg.model_dump()}))
        for row in per_epoch:  # the CSV's columns, each a metric with the epoch as its step
            step = int(row["epoch"])
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=step, prefix="identity/")
        scalars = {k: v for k, v in summary.items() if isinstance(v, int | float) and k != "settle_epoch_share"}
        tracker.log_metrics(scalars, prefix="identity/")
        for f in files:
            tracker.log_artifact(f, artifact_path="identity")
        tracker.log_artifact(paths.identity_summary(name), artifact_path="identity")
    print(f"identity: {name}'s inputs changed digit {summary['changes_per_input']:.2f} times each on average;"
          f" {cfg.settled_share:.0%} of them keep their final digit from epoch {summary['settle_epoch']} of"
          f" {epochs[-1]}; figures in {out}/")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python pipeline/identity.py NAME  (a model in params.yaml's models)")
    run_stage(f"identity@{sys.argv[1]}", main, sys.argv[1])
