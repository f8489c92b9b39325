"""Stage train_vae: train the VAE, log to MLflow, write model and per-epoch reconstructions of fixed test images."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import torch
from torch import nn

from genlab.config import Runtime, load_params
from genlab.data import dataset_checksum, load_split, to_flat_float
from genlab.diagnostics import sample_diagnostics
from genlab.experiment import train_and_track
from genlab.feature_extractor import load_classifier
from genlab.runtime import setup_torch
from genlab.trainer import to_uint8_images
from genlab.vae_trainer import VaeTrainer, build_vae


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = Runtime()
    cfg, paths = params.vae, params.paths
    device = setup_torch(runtime.device, runtime.threads, params.seed)

    train = to_flat_float(load_split(paths.data, "train").images, device, symmetric=False)
    test = to_flat_float(load_split(paths.data, "t10k").images, device, symmetric=False)
    model = build_vae(cfg.model_dump())  # before the classifier is built: initial weights from the seeded RNG
    classifier, record = load_classifier(paths.classifier_model, device)
    config = {
        "seed": params.seed,
        "data_sha256": dataset_checksum(paths.data),
        "classifier_sha256": record["weights_sha256"],  # the feature space of the per-epoch diagnostics
        "vae": cfg.model_dump(),
    }
    trainer = VaeTrainer(
        model,
        train,
        test,
        config,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        num_reconstructions=cfg.num_reconstructions,
        seed=params.seed,
        device=device,
        precision=cfg.precision,
        compile_mode=cfg.compile,
        diagnostic_samples=cfg.diagnostic_samples,
        diagnostics=lambda images: sample_diagnostics(classifier, images),
    )
    train_and_track(
        trainer,
        epochs=cfg.epochs,
        paths=paths,
        runtime=runtime,
        exported=nn.Sequential(model.decoder, nn.Sigmoid()),  # z [B, latent] -> pixel means [B, 784]
        input_example=torch.zeros(4, cfg.latent_dim),
        snapshot_extra={"originals": to_uint8_images(trainer.fixed_images, symmetric=False)},
    )


if __name__ == "__main__":
    main()
