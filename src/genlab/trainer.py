"""The training loop shared by every generative model: the Trainer base class (epochs, per-epoch snapshots and
diagnostics, checkpoints and resume). A kind's trainer (genlab.models.<kind>.trainer) supplies one epoch of
training, its optimisers and its snapshot. Metrics are summed on the device and read once per epoch, so a GPU never
waits on the host inside an epoch.
"""

from __future__ import annotations

import copy
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_header,
    load_checkpoint,
    non_finite_count,
)
from genlab.config import ConfigError, ModelSection, require_at_most
from genlab.data import TrainingData
from genlab.distributed import RANK_STREAM_BASE, World
from genlab.errors import NonFiniteError
from genlab.io import atomic_torch_save
from genlab.models.base import GenerativeModel
from genlab.progress import epoch_line, progress
from genlab.streams import batch_indices, make_generator

# Per-epoch sample diagnostics: images [N, 784] in [0, 1] and, for conditional models, the labels asked for.
Diagnostics = Callable[[torch.Tensor, torch.Tensor | None], dict[str, float]]


def to_uint8_images(x: torch.Tensor, side: int = 28) -> torch.Tensor:
    """float [N, side*side] or [N, 1, side, side] in [0, 1] -> uint8 [N, side, side] on the CPU."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, side, side).cpu()


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
    """Trains `model` as its params section `cfg` says, on `data`. `name` is the model's name in params.yaml
    (gan, cgan, ...); `config` is everything that defines the run (seed, data and classifier hashes, and
    {name: cfg.record()}): stored in checkpoints, checked on resume and logged as the MLflow params."""

    def __init__(
        self,
        model: GenerativeModel,
        cfg: ModelSection,
        data: TrainingData,
        *,
        name: str,
        config: dict[str, Any],
        seed: int,
        device: torch.device,
        diagnostics: Diagnostics | None = None,
        world: World | None = None,
    ):
        """world: this process's rank among torchrun's processes (genlab.distributed); default one process."""
        batch_size = getattr(cfg, "batch_size", None)
        n = data.train_images.shape[0]
        if batch_size is not None:
            require_at_most(f"{name}.batch_size", batch_size, n, "training images")
        self.world = world or World()
        if self.world.distributed and batch_size is not None:
            # Every rank needs at least one sample of every batch: an empty shard's mean loss is NaN.
            smallest = n % batch_size or batch_size
            if smallest < self.world.size:
                raise ConfigError(
                    f"{name}.batch_size = {batch_size} leaves a batch of {smallest} of the {n} training images, too few"
                    f" for {self.world.size} processes (GENLAB_PROCESSES): choose a batch size whose last batch has"
                    " at least one image per process, or fewer processes"
                )
        self.model = model.to(device)
        self.cfg = cfg
        self.name = name
        self.kind = model.kind
        self.diagnostics = diagnostics
        self.config = config
        self.seed = seed
        self.device = device
        self.precision: str = cfg.precision  # type: ignore[attr-defined]
        # Batch order: the same stream on every rank, so the ranks' shards of a global batch are disjoint. On one
        # process it also draws the noise and dropout masks (self.rng is then the same generator); each rank of
        # several draws those from its own stream.
        self.order_rng = make_generator(seed, stream=1, device=device)
        self.rng = self.order_rng
        if self.world.distributed:
            self.rng = make_generator(seed, stream=RANK_STREAM_BASE + self.world.rank, device=device)
        self._global_batch = 0
        self.epoch = 0
        self.history = History()
        compile_mode: str = cfg.compile  # type: ignore[attr-defined]
        if compile_mode != "eager":
            # In place (nn.Module.compile), so state_dict keys stay as they are. "reduce-overhead" captures
            # CUDA graphs on a GPU.
            for module in self.compile_targets():
                module.compile(mode=compile_mode)

    def batches(self, n: int, batch_size: int) -> Iterator[torch.Tensor]:
        """An epoch's shuffled minibatch indices (genlab.streams.batch_indices on the batch-order stream), with a
        progress bar on a terminal; under torchrun, this rank's shard of each global batch."""
        total = -(-n // batch_size)
        desc = f"{self.name} epoch {self.epoch + 1}"
        order = batch_indices(n, batch_size, self.order_rng, self.device)
        if not self.world.distributed:
            yield from progress(order, total=total, desc=desc)
            return
        for indices in progress(order, total=total, desc=desc) if self.world.is_main else order:
            self._global_batch = indices.shape[0]
            yield self.world.shard(indices)

    def for_backward(self, loss: torch.Tensor, batch: int) -> torch.Tensor:
        """A rank's mean loss over its `batch` samples, weighted so that DDP's average of the ranks' gradients is the
        global batch's mean gradient (see genlab.distributed). One process: the loss itself."""
        return self.world.weighted(loss, batch, self._global_batch)

    def epoch_totals(self, sums: torch.Tensor) -> torch.Tensor:
        """An epoch's per-sample sums, over all ranks' shards."""
        return self.world.all_sum(sums)

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

    def snapshot_extra(self) -> dict[str, Any]:
        """What the snapshots file holds beside the per-epoch images (e.g. the originals of reconstructions)."""
        return {}

    def sampler_example(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A few fixed inputs of model.generate (latent, labels): the MLflow model's input example."""
        n = 4
        labels = torch.arange(n, device=self.device) if self.model.conditional else None
        return self.model.sample_latent(n, make_generator(self.seed, stream=2, device=self.device)), labels

    @torch.no_grad()
    def diagnostic_images(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Samples from fixed inputs for the per-epoch diagnostics, [N, 784] in [0, 1], with the labels asked for
        (conditional models); None when there are none."""
        return None

    def diagnose(self) -> dict[str, float]:
        if self.diagnostics is None or not self.world.is_main:  # only rank 0 logs them
            return {}
        batch = self.diagnostic_images()
        return {} if batch is None or batch[0].shape[0] == 0 else self.diagnostics(*batch)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Under torchrun a collective (it gathers every rank's random stream): call it on all ranks."""
        rng: dict[str, Any] = {"trainer": self.order_rng.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world.distributed:
            rng["ranks"] = self.world.gather(self.rng.get_state().cpu())
        return {
            **checkpoint_header(self.kind, self.name),
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
            raise CheckpointError(
                f"checkpoint is {state.get('kind')!r} format {state.get('format')}, expected {self.kind!r}"
                f" format {CHECKPOINT_FORMAT}"
            )
        if state.get("config") != self.config:
            raise CheckpointError("checkpoint was made with a different configuration")
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        self.order_rng.set_state(state["rng"]["trainer"])
        if self.world.distributed:
            ranks = state["rng"].get("ranks", [])
            if len(ranks) != self.world.size:
                raise CheckpointError(f"checkpoint was made by {len(ranks) or 1} processes, not {self.world.size}")
            self.rng.set_state(ranks[self.world.rank])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = int(state["epoch"])
        self.history = History(
            metrics=[dict(m) for m in state["history"]],
            snapshots=list(state["snapshots"].unbind(0)) if state["snapshots"].numel() else [],
        )

    def resume(self, state_path: Path, log: Callable[[str], None]) -> None:
        """Continue from state_path's checkpoint. One that cannot be used (corrupt, truncated, another model's or
        configuration's) is moved aside, kept for inspection, and training starts afresh."""
        initial = copy.deepcopy(self.state_dict())  # to start afresh from, should loading fail halfway
        try:
            self.load_state_dict(load_checkpoint(state_path, self.device))
        except (CheckpointError, KeyError, RuntimeError, TypeError) as e:
            self.load_state_dict(initial)
            self.world.barrier()  # every rank has read it before rank 0 moves it
            aside = state_path.with_name(f"{state_path.name}.unusable-{os.getpid()}")
            if self.world.is_main:
                state_path.rename(aside)
            log(f"[{self.name}] cannot resume: {e}; moved it to {aside}, training from epoch 0")
            return
        log(f"[{self.name}] resumed from {state_path} at epoch {self.epoch}")

    def check_finite(self, metrics: dict[str, float]) -> None:
        """Raise NonFiniteError if an epoch's metrics or the model's parameters hold a NaN or an infinity. One
        device-to-host read per epoch: the parameter check is reduced on the device."""
        cause = next((f"{k} is {v}" for k, v in metrics.items() if not math.isfinite(v)), None)
        if cause is None:
            params = {n: p.detach() for n, p in self.model.named_parameters()}
            flags = [p.isfinite().all() for p in params.values() if p.is_floating_point()]
            if flags and not bool(torch.stack(flags).all()):
                bad, total = non_finite_count(params)  # counted only when there is something to report
                cause = f"{bad:,} of {total:,} parameters are not finite"
        if cause is not None:
            lr = getattr(self.cfg, "lr", None)
            advice = f"lower {self.name}.lr (now {lr:g})" if lr is not None else f"check {self.name}'s settings"
            raise NonFiniteError(
                f"{self.name} diverged in epoch {self.epoch + 1}: {cause}. No model was written; {advice} and rerun.",
                epoch=self.epoch + 1,
            )

    # -- the loop ------------------------------------------------------------------------------------------
    def fit(
        self,
        epochs: int,
        *,
        state_path: Path | None = None,
        checkpoint_every: int = 1,
        on_epoch: Callable[[EpochResult], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        """Train up to `epochs`, resuming from state_path when it holds a checkpoint of this configuration. Raises
        NonFiniteError, before the epoch is recorded or saved, when it produced a NaN or an infinity."""
        if not self.world.is_main:
            log, on_epoch = (lambda line: None), None
        if state_path is not None and state_path.exists():
            self.resume(state_path, log)
        start_epoch, t_start = self.epoch, time.perf_counter()
        while self.epoch < epochs:
            t0 = time.perf_counter()
            metrics = self.train_epoch()
            self.check_finite(metrics)
            metrics.update(self.diagnose())
            self.epoch += 1
            snapshot = self.snapshot()
            seconds = time.perf_counter() - t0
            metrics = {"epoch": self.epoch, **metrics}
            self.history.metrics.append(metrics)
            self.history.snapshots.append(snapshot)
            done = self.epoch - start_epoch
            eta = (time.perf_counter() - t_start) / done * (epochs - self.epoch)
            log(epoch_line(self.name, self.epoch, epochs, metrics, seconds, eta))
            if on_epoch is not None:
                on_epoch(EpochResult(self.epoch, metrics, snapshot, seconds))
            if state_path is not None and (self.epoch % checkpoint_every == 0 or self.epoch == epochs):
                state = self.state_dict()
                if self.world.is_main:
                    atomic_torch_save(state_path, state)
