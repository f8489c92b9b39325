"""Stage evaluate: discriminator accuracy (GAN) and reconstruction error (VAE) on the test set."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

from genlab.config import Runtime, load_params
from genlab.data import load_split, to_flat_float
from genlab.evaluate import discriminator_accuracy, vae_reconstruction
from genlab.io import atomic_write_json
from genlab.runtime import setup_torch
from genlab.tracking import Tracker
from genlab.train import build_gan, build_vae, load_checkpoint


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = Runtime()
    cfg, paths = params.evaluate, params.paths
    device = setup_torch(runtime.device, runtime.threads, params.seed)
    test = load_split(paths.data, "t10k").images

    gan_state = load_checkpoint(paths.gan_model, device)
    gan = build_gan(gan_state["config"]["gan"]).to(device)
    gan.load_state_dict(gan_state["model"])
    vae_state = load_checkpoint(paths.vae_model, device)
    vae = build_vae(vae_state["config"]["vae"]).to(device)
    vae.load_state_dict(vae_state["model"])

    metrics = {
        "gan": discriminator_accuracy(
            gan, to_flat_float(test, device, symmetric=True), seed=params.seed, batch_size=cfg.batch_size
        ),
        "vae": vae_reconstruction(
            vae, to_flat_float(test, device, symmetric=False), seed=params.seed, batch_size=cfg.batch_size
        ),
    }
    atomic_write_json(paths.evaluation, metrics)
    for kind, values in metrics.items():
        print(f"evaluate: {kind} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))

    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    for kind, model_path in (("gan", paths.gan_model), ("vae", paths.vae_model)):
        with tracker.model_run(kind, model_path) as found:
            if found:
                tracker.log_metrics(metrics[kind], prefix="eval/")


if __name__ == "__main__":
    main()
