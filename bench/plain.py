"""The plain implementations genlab is measured against: the seed's GAN and VAE as a user writes them in an
afternoon, with default PyTorch. No genlab import, so none of its settings (CPU pins, OpenMP wait policy, fused
Adam, one-pass discriminator, cheaper dropout masks): bench/train_speed.py --baseline runs this file in its own
process with genlab's environment changes removed, and reads the JSON it prints.

    python bench/plain.py --data in-memory|dataloader --steps 150 --warmup 20 --rounds 5

Two data paths, batch 64, both on random MNIST-shaped images (speed does not depend on pixel values):
- in-memory: MNIST as one float tensor, torch.randperm batches, no DataLoader (the one to beat);
- dataloader: a torchvision-style dataset, PIL image and ToTensor (+ Normalize) per sample, DataLoader, shuffle.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

BATCH = 64
LATENT = 100  # the seed's GAN; the VAE's is 20


def gan_networks() -> tuple[nn.Module, nn.Module]:
    """The seed's MLPs in plain nn layers: nn.Dropout, a Sigmoid output and BCELoss, as a tutorial writes them."""
    g = nn.Sequential(
        nn.Linear(LATENT, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
        nn.Linear(512, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 784), nn.Tanh(),
    )  # fmt: skip
    d = nn.Sequential(
        nn.Linear(784, 1024), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(1024, 512), nn.LeakyReLU(0.2),
        nn.Dropout(0.3), nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(256, 1), nn.Sigmoid(),
    )  # fmt: skip
    return g, d


class VAE(nn.Module):
    """Kingma & Welling's MLP VAE at the seed's sizes: 784-512-256-(20+20), 20-256-512-784."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU())
        self.mu, self.logvar = nn.Linear(256, 20), nn.Linear(256, 20)
        self.decoder = nn.Sequential(
            nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 784), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = self.decoder(z)
        bce = nn.functional.binary_cross_entropy(recon, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kl) / x.shape[0]


def gan_steps(batches: Callable[[], Iterator[torch.Tensor]]) -> Callable[[int], None]:
    g, d = gan_networks()
    opt_g, opt_d = torch.optim.Adam(g.parameters(), lr=2e-4), torch.optim.Adam(d.parameters(), lr=2e-4)
    bce = nn.BCELoss()

    def run(steps: int) -> None:
        it = batches()
        for _ in range(steps):
            x = next(it)
            b = x.shape[0]
            ones, zeros = torch.ones(b, 1), torch.zeros(b, 1)
            fake = g(torch.randn(b, LATENT))
            loss_d = bce(d(x), ones) + bce(d(fake.detach()), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(d(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()

    return run


def vae_steps(batches: Callable[[], Iterator[torch.Tensor]]) -> Callable[[int], None]:
    vae = VAE()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def run(steps: int) -> None:
        it = batches()
        for _ in range(steps):
            loss = vae(next(it))
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def in_memory(images: torch.Tensor, symmetric: bool) -> Callable[[], Iterator[torch.Tensor]]:
    data = images.reshape(images.shape[0], -1).float().div_(255)
    if symmetric:
        data = data.mul_(2).sub_(1)

    def batches() -> Iterator[torch.Tensor]:
        perm = torch.randperm(data.shape[0])
        for start in range(0, data.shape[0] - BATCH + 1, BATCH):
            yield data[perm[start : start + BATCH]]

    return batches


def dataloader(images: torch.Tensor, symmetric: bool) -> Callable[[], Iterator[torch.Tensor]]:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class PilDataset(Dataset):
        def __init__(self):
            self.images = images.numpy()
            norm = [transforms.Normalize((0.5,), (0.5,))] if symmetric else []
            self.transform = transforms.Compose([transforms.ToTensor(), *norm])

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.images[i], mode="L")).view(-1)

    loader = DataLoader(PilDataset(), batch_size=BATCH, shuffle=True, drop_last=True)
    return lambda: iter(loader)


def matmul_peak(n: int = 2048, repeats: int = 2) -> float:
    """Best dense fp32 n x n matmul rate, FLOP/s, in this process (as bench/train_speed.py measures it)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("in-memory", "dataloader"), default="in-memory")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randint(0, 256, ((args.steps + args.warmup) * BATCH, 28, 28), dtype=torch.uint8)
    batches = in_memory if args.data == "in-memory" else dataloader
    runs = {"gan": gan_steps(batches(images, True)), "vae": vae_steps(batches(images, False))}
    for run in runs.values():
        run(args.warmup)
    chunk = max(args.steps // args.rounds, 1)
    step_s: dict[str, list[float]] = {name: [] for name in runs}
    peaks, before = [], matmul_peak()
    for _ in range(args.rounds):  # each round beside its own peak, as genlab's rows are timed
        for name, run in runs.items():
            t = time.perf_counter()
            run(chunk)
            step_s[name].append((time.perf_counter() - t) / chunk)
        after = matmul_peak()
        peaks.append((before + after) / 2)
        before = after
    settings = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    print(json.dumps({"batch": BATCH, "step_s": step_s, "peaks": peaks, "threads": torch.get_num_threads(),
                      "environment": settings}))  # fmt: skip


if __name__ == "__main__":
    main()
