"""Stage train_gan: train the GAN on the prepared training set, log to MLflow, write model and per-epoch samples."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

from pathlib import Path

from genlab.config import Runtime, flatten, load_params
from genlab.data import dataset_checksum, load_split, to_flat_float
from genlab.experiment import TrainingOutputs, train_and_track
from genlab.runtime import setup_torch
from genlab.tracking import Tracker
from genlab.train import GanTrainer, build_gan


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = Runtime()
    cfg, paths = params.gan, params.paths
    device = setup_torch(runtime.device, runtime.threads, params.seed)

    images = to_flat_float(load_split(paths.data, "train").images, device, symmetric=True)
    config = {"seed": params.seed, "data_sha256": dataset_checksum(paths.data), "gan": cfg.model_dump()}
    model = build_gan(cfg.model_dump())
    trainer = GanTrainer(
        model,
        images,
        config,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        num_fixed_samples=cfg.num_fixed_samples,
        seed=params.seed,
        device=device,
        precision=cfg.precision,
        compile_mode=cfg.compile,
    )
    train_and_track(
        trainer,
        epochs=cfg.epochs,
        outputs=TrainingOutputs(
            model=Path(paths.gan_model),
            snapshots=Path(paths.gan_samples),
            history=Path(paths.gan_history),
            summary=Path(paths.gan_summary),
            state_dir=Path(paths.state),
        ),
        tracker=Tracker(runtime.tracking_uri, runtime.experiment),
        params=flatten(config),
        exported=model.generator,
        input_example=trainer.fixed_noise[:4],
        checkpoint_every=runtime.checkpoint_every,
        tags={"data.sha256": config["data_sha256"], "genlab.device": str(device)},
    )


if __name__ == "__main__":
    main()
