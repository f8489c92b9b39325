"""Training machinery shared by every model: the Trainer base class (the loop, checkpoints, resume), random
streams, the fused Adam, checkpoint loading, and the classifier's training. The GAN and VAE trainers live in
genlab.gan_trainer and genlab.vae_trainer, so that each training stage depends only on its own model's code.

A trainer owns the loop, the optimisers, the RNG and the checkpoints of one model.

Data path: the whole training set sits as one float tensor on the training device; a batch is an
index_select of a slice of a random permutation. No DataLoader, no per-sample Python, no worker processes.
Metrics are summed on the device and read once per epoch, so a GPU never waits on the host inside an epoch.

Determinism: every random draw of training (batch order, noise, dropout masks, the VAE's epsilon) comes from
the trainer's own torch.Generator, whose state goes into each checkpoint, so a resumed run continues the exact
random stream of an uninterrupted one and nothing depends on what else the process did with torch's global RNG.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab.io import atomic_torch_save
from genlab.models.classifier import Classifier

CHECKPOINT_FORMAT = 1


def checkpoint_header(kind: str) -> dict[str, Any]:
    """The fields every genlab checkpoint starts with: its format, what it holds and what wrote it."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "genlab_version": genlab.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }


def make_generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent, reproducible random stream: (seed, stream) -> generator."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + stream)
    return g


def adam(params, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), device: torch.device) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) with the fused kernel: one pass over all parameters instead of ~10 (CPU and CUDA)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=device.type in ("cpu", "cuda"))


def to_uint8_images(x: torch.Tensor, *, symmetric: bool, side: int = 28) -> torch.Tensor:
    """float [N, side*side] in [0,1] (or [-1,1] when symmetric) -> uint8 [N, side, side] on the CPU."""
    if symmetric:
        x = (x + 1) / 2
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, side, side).cpu()


def batch_indices(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=generator, device=device)
    for start in range(0, n, batch_size):
        yield perm[start : start + batch_size]


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@dataclass
class EpochResult:
    epoch: int
    metrics: dict[str, float]
    snapshot: torch.Tensor  # uint8 [n, 28, 28]: samples (GAN) or reconstructions (VAE)
    seconds: float


@dataclass
class History:
    metrics: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch, with "epoch"
    snapshots: list[torch.Tensor] = field(default_factory=list)


class Trainer(ABC):
    kind: str

    def __init__(
        self,
        model: torch.nn.Module,
        config: dict[str, Any],
        *,
        seed: int,
        device: torch.device,
        precision: str = "fp32",
        compile_mode: str = "eager",
        diagnostics: Callable[[torch.Tensor], dict[str, float]] | None = None,
    ):
        self.model = model.to(device)
        # Per-epoch sample diagnostics (e.g. class coverage): images in [0, 1], [N, 784] -> metrics.
        self.diagnostics = diagnostics
        self.config = config  # everything that defines the run; stored in checkpoints and checked on resume
        self.seed = seed
        self.device = device
        self.precision = precision
        self.rng = make_generator(seed, stream=1, device=device)
        self.epoch = 0
        self.history = History()
        if compile_mode != "eager":
            # In place (nn.Module.compile), so state_dict keys stay as they are. "reduce-overhead" captures
            # CUDA graphs on a GPU.
            for module in self.compile_targets():
                module.compile(mode=compile_mode)

    def compile_targets(self) -> list[torch.nn.Module]:
        return [self.model]

    def autocast(self) -> torch.autocast:
        """bf16 autocast for forward passes when precision is bf16; fp32 (the deterministic default) otherwise."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    @abstractmethod
    def train_epoch(self) -> dict[str, float]: ...

    @abstractmethod
    def snapshot(self) -> torch.Tensor: ...

    def diagnostic_images(self) -> torch.Tensor | None:
        """Samples from fixed inputs for the per-epoch diagnostics, [N, 784] in [0, 1]; None when there are none."""
        return None

    def diagnose(self) -> dict[str, float]:
        if self.diagnostics is None:
            return {}
        images = self.diagnostic_images()
        return {} if images is None or images.shape[0] == 0 else self.diagnostics(images)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = {"trainer": self.rng.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            **checkpoint_header(self.kind),
            "config": self.config,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "rng": rng,
            "history": self.history.metrics,
            "snapshots": torch.stack(self.history.snapshots) if self.history.snapshots else torch.empty(0),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or state.get("kind") != self.kind:
            raise ValueError(
                f"checkpoint is {state.get('kind')!r} format {state.get('format')}, expected {self.kind!r}"
                f" format {CHECKPOINT_FORMAT}"
            )
        if state["config"] != self.config:
            raise ValueError("checkpoint was made with a different configuration; delete it to start afresh")
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        self.rng.set_state(state["rng"]["trainer"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = int(state["epoch"])
        self.history = History(
            metrics=[dict(m) for m in state["history"]],
            snapshots=list(state["snapshots"].unbind(0)) if state["snapshots"].numel() else [],
        )

    # -- the loop ------------------------------------------------------------------------------------------
    def fit(
        self,
        epochs: int,
        *,
        state_path: Path | None = None,
        checkpoint_every: int = 5,
        on_epoch: Callable[[EpochResult], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        """Train up to `epochs`, resuming from state_path when it holds a checkpoint of this configuration."""
        if state_path is not None and state_path.exists():
            self.load_state_dict(torch.load(state_path, map_location=self.device, weights_only=True))
            log(f"[{self.kind}] resumed from {state_path} at epoch {self.epoch}/{epochs}")
        start_epoch, t_start = self.epoch, time.perf_counter()
        while self.epoch < epochs:
            t0 = time.perf_counter()
            metrics = self.train_epoch()
            metrics.update(self.diagnose())
            self.epoch += 1
            snapshot = self.snapshot()
            seconds = time.perf_counter() - t0
            metrics = {"epoch": self.epoch, **metrics}
            self.history.metrics.append(metrics)
            self.history.snapshots.append(snapshot)
            done = self.epoch - start_epoch
            eta = (time.perf_counter() - t_start) / done * (epochs - self.epoch)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
            log(f"[{self.kind}] epoch {self.epoch}/{epochs}  {shown}  | {seconds:.1f}s  eta {format_duration(eta)}")
            if on_epoch is not None:
                on_epoch(EpochResult(self.epoch, metrics, snapshot, seconds))
            if state_path is not None and (self.epoch % checkpoint_every == 0 or self.epoch == epochs):
                atomic_torch_save(state_path, self.state_dict())


def train_classifier(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    max_lr: float,
    rng: torch.Generator,
    on_epoch: Callable[[int, float], None] | None = None,
) -> None:
    """Train a classifier (or, with one output, a binary discriminator) with Adam and a one-cycle schedule.

    images: [N, 784] in [0, 1] on the model's device; labels: [N] class indices (0/1 for one output).
    on_epoch(epoch, mean training loss) is called after each epoch.
    """
    device = images.device
    n = images.shape[0]
    opt = adam(model.parameters(), lr=max_lr, device=device)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=epochs * math.ceil(n / batch_size))
    for epoch in range(1, epochs + 1):
        model.train()
        total = torch.zeros((), device=device)
        for idx in batch_indices(n, batch_size, rng, device):
            loss = model.loss(images.index_select(0, idx), labels.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * idx.shape[0]
        if on_epoch is not None:
            on_epoch(epoch, float(total) / n)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run its training stage first (dvc repro)")
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')}, this genlab reads {CHECKPOINT_FORMAT}")
    return state


def build_classifier(cfg: dict[str, Any], num_classes: int = 10) -> Classifier:
    return Classifier(channels=tuple(cfg["channels"]), feature_dim=cfg["feature_dim"], num_classes=num_classes)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The feature extractor from the train_classifier stage, in eval mode, and its record (test accuracy and
    weights hash: metrics in its feature space only compare between runs with the same hash)."""
    state = load_checkpoint(path, device)
    if state.get("kind") != "classifier":
        raise ValueError(f"{path} holds a {state.get('kind')!r} checkpoint, not the classifier")
    model = build_classifier(state["config"]["classifier"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, {"test_accuracy": state["test_accuracy"], "weights_sha256": state["weights_sha256"]}
