"""Stage render: PNG grids of chosen epochs and one progression figure per model; attached to the MLflow runs."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

from pathlib import Path

import torch

from genlab.config import Runtime, load_params
from genlab.render import grid_image, labelled_row, save_png, select_epochs
from genlab.tracking import Tracker


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = Runtime()
    cfg, paths = params.render, params.paths
    out = Path(paths.figures)

    def grid(images: torch.Tensor):
        return grid_image(images, nrow=cfg.nrow, scale=cfg.scale, padding=cfg.padding)

    written: dict[str, list[Path]] = {}
    for kind, snapshots_path in (("gan", paths.gan_samples), ("vae", paths.vae_reconstructions)):
        snap = torch.load(snapshots_path, weights_only=True)
        panels = [("original", grid(snap["originals"]))] if "originals" in snap else []
        files = []
        for epoch, i in zip(cfg.epochs, select_epochs(snap["epochs"], cfg.epochs, snapshots_path), strict=True):
            image = grid(snap["images"][i])
            files.append(out / f"{kind}_epoch_{epoch:03d}.png")
            save_png(image, files[-1])
            panels.append((f"epoch {epoch}", image))
        files.append(out / f"{kind}_progression.png")
        save_png(labelled_row(panels, font_size=8 * cfg.scale), files[-1])
        written[kind] = files

    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    for kind, model_path in (("gan", paths.gan_model), ("vae", paths.vae_model)):
        with tracker.model_run(kind, model_path) as found:
            for f in written[kind] if found else []:
                tracker.log_artifact(f, artifact_path="figures")
    print(f"render: wrote {sum(len(v) for v in written.values())} figures to {out}/")


if __name__ == "__main__":
    main()
