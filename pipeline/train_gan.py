"""Stage train_gan: train the GAN on the prepared training set, log to MLflow, write model and per-epoch samples."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

from genlab.config import Runtime, load_params
from genlab.data import dataset_checksum, load_split, to_flat_float
from genlab.diagnostics import sample_diagnostics
from genlab.experiment import train_and_track
from genlab.feature_extractor import load_classifier
from genlab.gan_trainer import GanTrainer, build_gan
from genlab.runtime import setup_torch


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = Runtime()
    cfg, paths = params.gan.resolved(), params.paths  # the chosen variant's values
    device = setup_torch(runtime.device, runtime.threads, params.seed)

    images = to_flat_float(load_split(paths.data, "train").images, device, symmetric=True)
    model = build_gan(cfg)  # before the classifier is built: initial weights come from the seeded global RNG
    classifier, record = load_classifier(paths.classifier_model, device)
    config = {
        "seed": params.seed,
        "data_sha256": dataset_checksum(paths.data),
        "classifier_sha256": record["weights_sha256"],  # the feature space of the per-epoch diagnostics
        "gan": cfg,
    }
    trainer = GanTrainer(
        model,
        images,
        config,
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        betas=(cfg["beta1"], cfg["beta2"]),
        num_fixed_samples=cfg["num_fixed_samples"],
        seed=params.seed,
        device=device,
        precision=cfg["precision"],
        compile_mode=cfg["compile"],
        diagnostic_samples=cfg["diagnostic_samples"],
        diagnostics=lambda images: sample_diagnostics(classifier, images),
    )
    train_and_track(
        trainer,
        epochs=cfg["epochs"],
        paths=paths,
        runtime=runtime,
        exported=model.generator,
        input_example=trainer.fixed_noise[:4],
    )


if __name__ == "__main__":
    main()
