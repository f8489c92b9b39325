"""Stage evaluate: sample metrics for the GAN, the VAE and real data (the floor), plus each model's own diagnostics.

Every sample metric is computed in the feature space of the train_classifier stage's CNN; its test accuracy and
weights hash are recorded beside the metrics, since FID values only compare within one feature extractor.
"""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

from genlab.checkpoints import load_checkpoint
from genlab.config import Runtime, flatten, load_params
from genlab.data import load_split, to_flat_float
from genlab.evaluate import (
    discriminator_accuracy,
    gan_samples,
    real_samples,
    vae_log_likelihood,
    vae_reconstruction,
    vae_samples,
)
from genlab.feature_extractor import load_classifier
from genlab.gan_trainer import build_gan
from genlab.io import atomic_write_json
from genlab.metrics import RealReference, sample_metrics
from genlab.runtime import setup_torch
from genlab.tracking import Tracker
from genlab.vae_trainer import build_vae


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = Runtime()
    cfg, paths, seed = params.evaluate, params.paths, params.seed
    device = setup_torch(runtime.device, runtime.threads, seed)
    test = to_flat_float(load_split(paths.data, "t10k").images, device, symmetric=False)
    train = to_flat_float(load_split(paths.data, "train").images, device, symmetric=False)

    classifier, feature_extractor = load_classifier(paths.classifier_model, device)
    gan_state = load_checkpoint(paths.gan_model, device)
    gan = build_gan(gan_state["config"]["gan"]).to(device)
    gan.load_state_dict(gan_state["model"])
    vae_state = load_checkpoint(paths.vae_model, device)
    vae = build_vae(vae_state["config"]["vae"]).to(device)
    vae.load_state_dict(vae_state["model"])

    n = cfg.num_samples
    candidates = {
        "real": real_samples(train, n, seed=seed),  # the floor: what a perfect model would score
        "gan": gan_samples(gan, n, seed=seed, batch_size=cfg.batch_size),
        "vae": vae_samples(vae, n, seed=seed, batch_size=cfg.batch_size),
    }
    metrics: dict = {"feature_extractor": feature_extractor}
    reference = RealReference(classifier, test, knn_k=cfg.knn_k, batch_size=cfg.batch_size)
    for name, images in candidates.items():
        print(f"evaluate: sample metrics of {name} ({images.shape[0]} images vs {test.shape[0]} test images)")
        metrics[name] = sample_metrics(reference, images, c2st_epochs=cfg.c2st_epochs, c2st_lr=cfg.c2st_lr, seed=seed)
    metrics["gan"].update(discriminator_accuracy(gan, test * 2 - 1, seed=seed, batch_size=cfg.batch_size))
    metrics["vae"].update(vae_reconstruction(vae, test, seed=seed, batch_size=cfg.batch_size))
    metrics["vae"].update(vae_log_likelihood(vae, test, k=cfg.iwae_samples, seed=seed))
    atomic_write_json(paths.evaluation, metrics)
    for name in candidates:
        shown = {k: v for k, v in metrics[name].items() if isinstance(v, int | float)}
        print(f"evaluate: {name} " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))

    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    for kind, model_path in (("gan", paths.gan_model), ("vae", paths.vae_model)):
        with tracker.model_run(kind, model_path) as found:
            if found:
                tracker.log_metrics(scalars(metrics[kind]), prefix="eval/")
                tracker.log_metrics(scalars(metrics["real"]), prefix="floor/")
                tracker.log_metrics({"classifier_test_accuracy": feature_extractor["test_accuracy"]}, prefix="eval/")
                tracker.set_tags({"genlab.classifier_sha256": feature_extractor["weights_sha256"]})


def scalars(values: dict) -> dict[str, float]:
    """The numbers only, nested dicts flattened with dots (class_share.3)."""
    return {k: float(v) for k, v in flatten(values).items() if isinstance(v, int | float)}


if __name__ == "__main__":
    main()
