"""Stage render@<name>: PNG grids of chosen epochs and one progression figure of the model `name`, and its fixed
inputs' identity over training (genlab.identity: per-epoch metrics, strips of every input, a GIF of the grid), all
attached to an MLflow run. Conditional models are drawn as ten rows, row k of digit k.
Usage: python pipeline/render.py NAME"""

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
from genlab.render import grid_image, labelled_row, save_png, select_epochs
from genlab.tracking import Tracker


def main(name: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = load_runtime()
    if name not in params.models:
        raise GenlabError(f"{name!r} is not in params.yaml's models {sorted(params.models)}")
    cfg, paths = params.render, params.paths
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)  # before any work: fails fast without a store
    out = paths.figures_of(name)
    snapshots_path = paths.snapshots(name)
    snap = read_weights_only(snapshots_path)
    nrow = int(snap.get("nrow", cfg.nrow))  # a conditional model's rows are digits

    def grid(images: torch.Tensor):
        return grid_image(images, nrow=nrow, scale=cfg.scale, padding=cfg.padding)

    panels = [("original", grid(snap["originals"]))] if "originals" in snap else []
    files = []
    for epoch, i in zip(cfg.epochs, select_epochs(snap["epochs"], cfg.epochs, str(snapshots_path)), strict=True):
        image = grid(snap["images"][i])
        files.append(out / f"epoch_{epoch:03d}.png")
        save_png(image, files[-1])
        panels.append((f"epoch {epoch}", image))
    files.append(out / "progression.png")
    save_png(labelled_row(panels, font_size=8 * cfg.scale), files[-1])

    # Identity over training: the classifier's digit for every fixed input at every epoch.
    classifier, _ = load_classifier(paths.classifier_model)
    images, epochs = snap["images"], list(snap["epochs"])  # uint8 [E, N, 28, 28]
    # A conditional model's snapshots are rows of digits (their "nrow"): row k asked for digit k.
    asked = torch.arange(images.shape[1] // nrow).repeat_interleave(nrow) if "nrow" in snap else None
    ids = read_identities(classifier, images, epochs, asked)
    per_epoch = ids.per_epoch()
    summary = ids.summary(settled_share=cfg.identity_settled_share, most_drifting=cfg.identity_most_drifting, nrow=nrow)
    atomic_write_text(paths.identity_history(name), rows_csv(per_epoch))
    atomic_write_json(paths.identity_summary(name), summary)
    drifting = [d["input"] for d in summary["most_drifting"]]
    files.append(out / "identity_strips.png")
    save_png(identity_strips(images, ids, range(ids.num_inputs), title=f"{name}: every fixed input"), files[-1])
    files.append(out / "identity_drift.png")
    title = f"{name}: the {len(drifting)} inputs that changed digit most often"
    save_png(identity_strips(images, ids, drifting, title=title), files[-1])
    files.append(out / "identity.gif")
    # At 28 pixels per digit: 100 epochs of 64 noisy digits are 2.7 MB of GIF, and every doubling of the scale
    # quadruples that.
    gif = grid_animation(images, epochs, nrow=nrow, scale=1, padding=cfg.padding, ms_per_epoch=cfg.gif_ms_per_epoch)
    atomic_write_bytes(files[-1], gif)

    description = f"Renders {name}'s samples of epochs {list(cfg.epochs)} as grids and one progression figure."
    with tracker.stage_run("render", paths.model(name), description, paths.git_tracked_outputs()):
        tracker.log_params(flatten({"render": cfg.model_dump()}))
        for row in per_epoch:  # the CSV's columns, each a metric with the epoch as its step
            tracker.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]), prefix="identity/"
            )
        tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)}, prefix="identity/")
        for f in files:
            tracker.log_artifact(f, artifact_path="figures")
        tracker.log_artifact(paths.identity_summary(name), artifact_path="identity")
    print(f"render: wrote {len(files)} figures to {out}/; identity: settled ({summary['settled_share']:.0%} of the"
          f" inputs keep their digit) from epoch {summary['settle_epoch']}, {summary['changes_per_input']:.2f}"
          " changes of digit per input")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python pipeline/render.py NAME  (a model in params.yaml's models)")
    run_stage(f"render@{sys.argv[1]}", main, sys.argv[1])
