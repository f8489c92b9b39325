"""The `genlab` command (installed by the package; also `python -m genlab`).

    genlab generate --model cgan --digit 7 --n 64 --out sevens.png
    genlab generate --model gan --out samples.npy          # uint8 [N, 28, 28]
    genlab generate --model-uri models:/m-0123... --digit 3 --out threes.png

It loads the workspace's trained model (params.yaml's paths) or an MLflow model, so it needs no DVC or MLflow run
of its own. genlab is imported first: the CPU pins and OpenMP's wait policy are set before torch loads.
"""

from __future__ import annotations

import genlab  # noqa: F401  first: sets the process environment before torch loads (genlab/__init__.py)

# isort: split

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from genlab.models.base import NUM_CLASSES

FORMATS = (".png", ".npy")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """genlab: reproducible generative models on MNIST (DVC stages, MLflow runs)."""


@main.command()
@click.option("--model", "name", default=None, help="A model of params.yaml's `models` (gan, vae, cgan, cvae, ...).")
@click.option("--model-uri", default=None, help="An MLflow model URI (models:/..., runs:/...) instead of --model.")
@click.option(
    "--digit", type=int, default=None, help="The digit to draw (conditional models only). Default: 0-9 cycling."
)
@click.option("--n", "n", type=int, default=64, show_default=True, help="How many images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the input noise.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="FILE.png (a grid) or FILE.npy."
)
@click.option("--nrow", type=int, default=None, help="Images per grid row. Default: 10 for cycling digits, else 8.")
@click.option("--scale", type=click.IntRange(1, 16), default=2, show_default=True, help="Pixel size in the grid.")
@click.option("--params", "params_path", type=Path, default=Path("params.yaml"), show_default=True)
def generate(
    name: str | None,
    model_uri: str | None,
    digit: int | None,
    n: int,
    seed: int,
    out: Path,
    nrow: int | None,
    scale: int,
    params_path: Path,
) -> None:
    """Draw images from a trained model into a PNG grid or a .npy array."""
    if (name is None) == (model_uri is None):
        raise click.UsageError("give exactly one of --model NAME or --model-uri URI")
    if n <= 0:
        raise click.BadParameter(f"{n}: give a positive number of images", param_hint="--n")
    if digit is not None and not 0 <= digit < NUM_CLASSES:
        raise click.BadParameter(f"{digit}: a digit is 0-{NUM_CLASSES - 1}", param_hint="--digit")
    if out.suffix not in FORMATS:
        raise click.BadParameter(f"{out}: write a .png grid or a .npy array", param_hint="--out")

    import torch

    sample, conditional, what = load_sampler(name, model_uri, params_path)
    if digit is not None and not conditional:
        raise click.BadParameter(
            f"{what} is unconditional: it cannot draw a chosen digit; drop --digit", param_hint="--digit"
        )
    labels = None
    if conditional:
        labels = torch.full((n,), digit) if digit is not None else torch.arange(n) % NUM_CLASSES
    images = sample(n, labels, seed)  # [n, 1, 28, 28] in [0, 1]
    write_images(images, out, nrow=nrow or (NUM_CLASSES if conditional and digit is None else 8), scale=scale)
    asked = f"digit {digit}" if digit is not None else ("digits 0-9 cycling" if conditional else "unconditional")
    click.echo(f"genlab generate: {n} images from {what} ({asked}, seed {seed}) -> {out}")


# sample(n, labels or None, seed) -> images [n, 1, 28, 28] in [0, 1]
Sampler = Callable[[int, Any, int], Any]


def load_sampler(name: str | None, model_uri: str | None, params_path: Path) -> tuple[Sampler, bool, str]:
    """(sample(n, labels, seed) -> images [n, 1, 28, 28] in [0, 1], conditional?, a description)."""
    import torch

    if model_uri is not None:
        from genlab.tracking import load_logged_sampler

        try:
            logged, conditional = load_logged_sampler(model_uri)
        except Exception as e:  # MLflow raises several types for a bad URI; all mean the same to the user
            raise click.ClickException(f"cannot load the MLflow model {model_uri}: {e}") from None
        return logged, conditional, model_uri

    from genlab import registry
    from genlab.config import load_params

    params = load_params(params_path)
    if name not in params.models:
        raise click.BadParameter(
            f"unknown model {name!r}; {params_path} has {sorted(params.models)}", param_hint="--model"
        )
    path = params.paths.model(name)
    if not path.exists():
        raise click.ClickException(f"{path} is missing: train it first (dvc repro train@{name}, or dvc pull)")
    model, _ = registry.load_model(path)

    def sample(n: int, labels, seed: int):
        with torch.no_grad():
            return model.sample(n, torch.Generator().manual_seed(seed), labels)

    return sample, model.conditional, f"{name} ({path})"


def write_images(images, out: Path, *, nrow: int, scale: int) -> None:
    import numpy as np

    from genlab.io import atomic_write_bytes
    from genlab.render import grid_image, save_png
    from genlab.trainer import to_uint8_images

    pixels = to_uint8_images(images)  # uint8 [n, 28, 28]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, pixels.numpy())
        atomic_write_bytes(out, buf.getvalue())
    else:
        save_png(grid_image(pixels, nrow=nrow, scale=scale), out)


if __name__ == "__main__":
    main()
