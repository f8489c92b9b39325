"""Training-speed benchmark: samples/s, s/epoch, model FLOPs, MFU against this machine's measured matmul peak.

    python bench/train_speed.py                # genlab's trainers at the params.yaml defaults
    python bench/train_speed.py --baseline     # also a typical implementation, for the before/after ratio

Times a fixed number of optimiser steps after warm-up, on random data shaped like MNIST (speed does not depend
on pixel values). MFU counts only the matmul FLOPs a step needs (from the layer sizes), divided by the dense
fp32 matmul rate measured in the same process with the same threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from collections.abc import Callable

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import torch
from torch import nn

from genlab.config import Runtime, load_params
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.train import GanTrainer, VaeTrainer, batch_indices, build_gan, build_vae, make_generator

TRAIN_SIZE = 60_000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def mlp_flops(sizes: list[tuple[int, int]], *, forward: int, weight_grad: int, input_grad: int, first_input_grad: int):
    """FLOPs of matmuls: each Linear costs 2*in*out per row for forward, weight gradient and input gradient.
    Arguments say how many rows (per real sample) each pass processes; the first layer's input gradient is
    only needed when something upstream trains (the generator, for the discriminator in a generator step)."""
    total = 0
    for i, (fan_in, fan_out) in enumerate(sizes):
        per_row = 2 * fan_in * fan_out
        total += per_row * (forward + weight_grad + (first_input_grad if i == 0 else input_grad))
    return total


def gan_flops_per_sample(gan: GAN) -> int:
    g, d = linear_sizes(gan.generator), linear_sizes(gan.discriminator)
    # Discriminator step: G forward on B noise rows; D forward, weight grads and inner input grads on 2B rows.
    d_step = mlp_flops(g, forward=1, weight_grad=0, input_grad=0, first_input_grad=0)
    d_step += mlp_flops(d, forward=2, weight_grad=2, input_grad=2, first_input_grad=0)
    # Generator step: D forward and input grads (all layers, to reach G) on B rows, weights frozen; G backward.
    g_step = mlp_flops(d, forward=1, weight_grad=0, input_grad=1, first_input_grad=1)
    g_step += mlp_flops(g, forward=0, weight_grad=1, input_grad=1, first_input_grad=0)
    return d_step + g_step


def vae_flops_per_sample(vae: VAE) -> int:
    enc = linear_sizes(vae.encoder) + linear_sizes(vae.to_moments)
    dec = linear_sizes(vae.decoder)
    return mlp_flops(enc, forward=1, weight_grad=1, input_grad=1, first_input_grad=0) + mlp_flops(
        dec, forward=1, weight_grad=1, input_grad=1, first_input_grad=1
    )


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best dense fp32 matmul rate (FLOP/s) of n x n by n x n, the machine's practical peak for this work."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best


def time_steps(run_steps: Callable[[int], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step over `steps`, after `warmup` steps."""
    run_steps(warmup)
    sync(device)
    t = time.perf_counter()
    run_steps(steps)
    sync(device)
    return (time.perf_counter() - t) / steps


def data_path_seconds(data: torch.Tensor, batch_size: int, device: torch.device, steps: int) -> float:
    """Seconds per step spent producing batches: permutation plus index_select, as the trainers do."""
    g = make_generator(0, 9, device)
    sync(device)
    t = time.perf_counter()
    done = 0
    while done < steps:
        for idx in batch_indices(data.shape[0], batch_size, g, device):
            data.index_select(0, idx)
            done += 1
            if done == steps:
                break
    sync(device)
    return (time.perf_counter() - t) / steps


def report(name: str, step_s: float, batch: int, flops: int, peak: float, data_s: float | None, extra_epoch_s=0.0):
    samples_s = batch / step_s
    epoch_s = TRAIN_SIZE / samples_s + extra_epoch_s
    rate = flops * samples_s
    line = (
        f"{name:<22} {samples_s:>10,.0f} samples/s  {epoch_s:>7.2f} s/epoch  {flops / 1e6:>6.1f} MFLOP/sample"
        f"  {rate / 1e9:>8.1f} GFLOP/s  MFU {rate / peak:>5.1%}"
    )
    if data_s is not None:
        line += f"  data path {data_s / step_s:>5.1%} of step"
    print(line, flush=True)
    return samples_s


# --- a typical implementation (the "before"), for the ratio ----------------------------------------------------
def baseline_loader(images: torch.Tensor, batch_size: int, symmetric: bool):
    """A torchvision-style dataset: PIL image per sample, ToTensor + Normalize per sample, DataLoader batch 64."""
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

    return DataLoader(PilDataset(), batch_size=batch_size, shuffle=True, drop_last=True)


def baseline_gan_steps(cfg: dict, images: torch.Tensor):
    g = nn.Sequential(
        nn.Linear(cfg["latent_dim"], 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
        nn.Linear(512, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 784), nn.Tanh(),
    )  # fmt: skip
    d = nn.Sequential(
        nn.Linear(784, 1024), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(1024, 512), nn.LeakyReLU(0.2),
        nn.Dropout(0.3), nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(256, 1), nn.Sigmoid(),
    )  # fmt: skip
    opt_g, opt_d = torch.optim.Adam(g.parameters(), lr=2e-4), torch.optim.Adam(d.parameters(), lr=2e-4)
    bce = nn.BCELoss()
    loader = baseline_loader(images, 64, symmetric=True)

    def run(steps: int) -> None:
        it = iter(loader)
        for _ in range(steps):
            x = next(it)
            b = x.shape[0]
            ones, zeros = torch.ones(b, 1), torch.zeros(b, 1)
            fake = g(torch.randn(b, cfg["latent_dim"]))
            loss_d = bce(d(x), ones) + bce(d(fake.detach()), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(d(fake), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()

    return run


def baseline_vae_steps(cfg: dict, images: torch.Tensor):
    vae = build_vae(cfg)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    loader = baseline_loader(images, 64, symmetric=False)

    def run(steps: int) -> None:
        it = iter(loader)
        for _ in range(steps):
            loss = vae.loss(next(it)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=150, help="timed optimiser steps per model")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--baseline", action="store_true", help="also time a typical implementation (CPU)")
    args = parser.parse_args()

    params, runtime = load_params(args.params), Runtime()
    device = torch.device(runtime.device)
    threads = runtime.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        what = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
        what = (
            f"CPU {cpu}, {threads} threads of {os.cpu_count()} cores, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
        )
    print(f"genlab train_speed: {what}; torch {torch.__version__}, Python {platform.python_version()}")
    peak = matmul_peak(device)
    print(f"dense fp32 matmul peak (2048^3, same threads): {peak / 1e9:,.1f} GFLOP/s")

    gan_cfg, vae_cfg = params.gan.model_dump(), params.vae.model_dump()
    n = max(args.steps + args.warmup, 1) * max(gan_cfg["batch_size"], vae_cfg["batch_size"])
    raw = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    flat = raw.reshape(n, -1).float().div(255).to(device)
    test = flat[:10_000]

    gan = build_gan(gan_cfg)
    gan_trainer = GanTrainer(
        gan,
        flat * 2 - 1,
        {},
        batch_size=gan_cfg["batch_size"],
        lr=gan_cfg["lr"],
        betas=(gan_cfg["beta1"], gan_cfg["beta2"]),
        num_fixed_samples=64,
        seed=0,
        device=device,
    )
    vae = build_vae(vae_cfg)
    vae_trainer = VaeTrainer(
        vae,
        flat,
        test,
        {},
        batch_size=vae_cfg["batch_size"],
        lr=vae_cfg["lr"],
        num_reconstructions=32,
        seed=0,
        device=device,
    )

    def steps_of(trainer, steps: int) -> None:
        trainer.data, saved = trainer.data[: steps * trainer.batch_size], trainer.data
        if isinstance(trainer, VaeTrainer):
            trainer.test, saved_test = trainer.test[:0], trainer.test  # time training steps only
        try:
            trainer.train_epoch() if steps else None
        finally:
            trainer.data = saved
            if isinstance(trainer, VaeTrainer):
                trainer.test = saved_test

    # VAE per-epoch extra: the test-set evaluation the trainer runs after every epoch.
    from genlab.train import evaluate_vae_loss

    sync(device)
    t = time.perf_counter()
    evaluate_vae_loss(vae, test, seed=0)
    sync(device)
    vae_eval_s = (time.perf_counter() - t) * (10_000 / test.shape[0])

    gan_step = time_steps(lambda s: steps_of(gan_trainer, s), args.steps, args.warmup, device)
    vae_step = time_steps(lambda s: steps_of(vae_trainer, s), args.steps, args.warmup, device)
    gan_data = data_path_seconds(flat, gan_cfg["batch_size"], device, args.steps)
    vae_data = data_path_seconds(flat, vae_cfg["batch_size"], device, args.steps)
    print()
    gan_rate = report("GAN (genlab)", gan_step, gan_cfg["batch_size"], gan_flops_per_sample(gan), peak, gan_data)
    vae_rate = report(
        "VAE (genlab)",
        vae_step,
        vae_cfg["batch_size"],
        vae_flops_per_sample(vae),
        peak,
        vae_data,
        extra_epoch_s=vae_eval_s,
    )

    if args.baseline:
        if device.type != "cpu":
            sys.exit("--baseline times the typical CPU implementation; run it with GENLAB_DEVICE=cpu")
        base_images = raw[: (args.steps + args.warmup) * 64]
        torch.manual_seed(0)
        step = time_steps(baseline_gan_steps(gan_cfg, base_images), args.steps, args.warmup, device)
        base_gan = report("GAN (typical, bs 64)", step, 64, gan_flops_per_sample(gan), peak, None)
        step = time_steps(baseline_vae_steps(vae_cfg, base_images), args.steps, args.warmup, device)
        base_vae = report(
            "VAE (typical, bs 64)", step, 64, vae_flops_per_sample(vae), peak, None, extra_epoch_s=vae_eval_s
        )
        print(f"\nspeed-up in samples/s: GAN {gan_rate / base_gan:.2f}x, VAE {vae_rate / base_vae:.2f}x")

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak host memory (max RSS of this process): {peak_rss:.2f} GiB")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
