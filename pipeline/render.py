"""Stage render@<name>: PNG grids of chosen epochs and one progression figure of the model `name`, attached to its
MLflow run. Conditional models are drawn as ten rows, row k of digit k. Usage: python pipeline/render.py NAME"""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import sys

import torch

from genlab.checkpoints import read_weights_only
from genlab.config import flatten, load_params, load_runtime
from genlab.entry import run_stage
from genlab.errors import GenlabError
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

    description = f"Renders {name}'s samples of epochs {list(cfg.epochs)} as grids and one progression figure."
    with tracker.stage_run("render", paths.model(name), description, paths.git_tracked_outputs()):
        tracker.log_params(flatten({"render": cfg.model_dump()}))
        for f in files:
            tracker.log_artifact(f, artifact_path="figures")
    print(f"render: wrote {len(files)} figures to {out}/")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python pipeline/render.py NAME  (a model in params.yaml's models)")
    run_stage(f"render@{sys.argv[1]}", main, sys.argv[1])
