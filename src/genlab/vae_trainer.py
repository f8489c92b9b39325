"""The VAE's trainer and its test-set loss, on the shared loop of genlab.trainer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genlab.models.vae import VAE
from genlab.optim import adam
from genlab.streams import batch_indices, make_generator
from genlab.trainer import Trainer, to_uint8_images


class VaeTrainer(Trainer):
    kind = "vae"

    def __init__(
        self,
        model: VAE,
        train_images: torch.Tensor,
        test_images: torch.Tensor,
        config: dict[str, Any],
        *,
        batch_size: int,
        lr: float,
        num_reconstructions: int,
        seed: int,
        device: torch.device,
        eval_batch_size: int = 1000,
        precision: str = "fp32",
        compile_mode: str = "eager",
        diagnostic_samples: int = 0,
        diagnostics: Callable[[torch.Tensor], dict[str, float]] | None = None,
    ):
        super().__init__(
            model,
            config,
            seed=seed,
            device=device,
            precision=precision,
            compile_mode=compile_mode,
            diagnostics=diagnostics,
        )
        self.vae = model
        self.data = train_images  # float [N, 784] in [0, 1], on device
        self.test = test_images
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.opt = adam(model.parameters(), lr=lr, device=device)
        self.fixed_images = test_images[:num_reconstructions]
        self.diagnostic_z = model.sample_prior(diagnostic_samples, make_generator(seed, stream=4, device=device))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.opt}

    def train_epoch(self) -> dict[str, float]:
        vae, n = self.vae, self.data.shape[0]
        vae.train()
        sums = torch.zeros(3, device=self.device)  # [loss, reconstruction, kl] summed over images
        for idx in batch_indices(n, self.batch_size, self.rng, self.device):
            x = self.data.index_select(0, idx)
            with self.autocast():
                out = vae.loss(x, self.rng)
            self.opt.zero_grad(set_to_none=True)
            out.loss.backward()
            self.opt.step()
            with torch.no_grad():
                sums += torch.stack([out.loss, out.reconstruction, out.kl]) * x.shape[0]
        s = (sums / n).tolist()
        test = evaluate_vae_loss(vae, self.test, seed=self.seed, batch_size=self.eval_batch_size)
        return {
            "loss": s[0],
            "reconstruction": s[1],
            "kl": s[2],
            "test_loss": test["loss"],
            "test_reconstruction": test["reconstruction"],
            "test_kl": test["kl"],
        }

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        self.vae.eval()
        mu, _ = self.vae.encode(self.fixed_images)
        return to_uint8_images(self.vae.decode(mu), symmetric=False)

    @torch.no_grad()
    def diagnostic_images(self) -> torch.Tensor:
        self.vae.eval()
        return self.vae.decode(self.diagnostic_z)


@torch.no_grad()
def evaluate_vae_loss(vae: VAE, images: torch.Tensor, *, seed: int, batch_size: int = 1000) -> dict[str, float]:
    """Negative ELBO and its terms per image over `images`, with a fixed noise stream (same every call)."""
    vae.eval()
    g = make_generator(seed, stream=3, device=images.device)
    sums = torch.zeros(3, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        out = vae.loss(x, g)
        sums += torch.stack([out.loss, out.reconstruction, out.kl]) * x.shape[0]
    s = (sums / images.shape[0]).tolist()
    return {"loss": s[0], "reconstruction": s[1], "kl": s[2]}


def build_vae(cfg: dict[str, Any]) -> VAE:
    return VAE(hidden=cfg["hidden"], latent_dim=cfg["latent_dim"])
