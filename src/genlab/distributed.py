"""Multi-process training on PyTorch's own engine: torch.distributed (gloo on CPUs, NCCL on GPUs) and
DistributedDataParallel, launched by torchrun.

    GENLAB_PROCESSES=2 dvc repro train@gan          # the stage relaunches itself under torchrun
    torchrun --standalone --nproc-per-node=2 pipeline/train.py gan      # or launch it yourself

Every rank walks the same permutation of the training set (the trainer's batch-order stream, identical on all
ranks) and takes its own contiguous shard of each global batch (Tensor.tensor_split: sizes differ by at most one),
so the global batch, and with it the optimisation, is the one of a single process. DDP averages the gradients of
the ranks; a rank's loss is weighted by its share of the batch (b_rank * world / B), so the average is the global
batch's mean gradient also when the last batch does not split evenly. Noise and dropout masks come from a stream
of each rank's own (seed, 100 + rank), kept in the checkpoint with the others, so a run is reproducible for a
fixed world size, and a resumed run continues every rank's stream. Rank 0 alone logs, checkpoints and writes
outputs. One process (no torchrun) takes none of these paths: its bits are those of the single-process code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from genlab.errors import GenlabError

RANK_STREAM_BASE = 100  # each rank's own random stream is (seed, RANK_STREAM_BASE + rank)
# A rank that stops answering (killed, hung) fails its peers' next collective after this long; torchrun usually
# notices the dead process first and stops the others within seconds.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: torchrun's RANK, WORLD_SIZE and LOCAL_RANK."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        try:
            return cls(
                rank=int(os.environ.get("RANK", 0)),
                size=int(os.environ.get("WORLD_SIZE", 1)),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            )
        except ValueError as e:
            raise GenlabError(f"RANK, WORLD_SIZE or LOCAL_RANK is not an integer ({e}): launch with torchrun") from None

    def device(self, device: torch.device) -> torch.device:
        """A CUDA rank uses the GPU of its local rank; CPU ranks share the CPU."""
        if device.type != "cuda" or not self.distributed:
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise GenlabError(
                f"rank {self.rank} needs GPU {self.local_rank} but {torch.cuda.device_count()} are visible: set"
                " GENLAB_PROCESSES (torchrun's --nproc-per-node) to at most the number of GPUs"
            )
        return torch.device("cuda", self.local_rank)

    def init(self, device: torch.device) -> None:
        """Join the process group (env:// rendezvous, as torchrun sets it up). A no-op for one process."""
        if not self.distributed or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch's indices."""
        return indices.tensor_split(self.size)[self.rank] if self.distributed else indices

    def replicate(self, module: nn.Module) -> nn.Module:
        """`module` under DistributedDataParallel, sharing its parameters (so state_dict keys stay as they are);
        the module itself for one process."""
        if not self.distributed:
            return module
        device = next(module.parameters()).device
        return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def weighted(self, loss: torch.Tensor, batch: int, global_batch: int) -> torch.Tensor:
        """A rank's mean loss over its `batch` samples, weighted so that DDP's average of the ranks' gradients is
        the mean gradient of the `global_batch`: b * world / B (1 when the shards are equal)."""
        return loss * (batch * self.size / global_batch) if self.distributed else loss

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def finish(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def relaunch(processes: int, script: str, args: Sequence[str]) -> None:
    """Run `script args` as `processes` ranks on this machine (torchrun --standalone), wait for them, and raise
    a GenlabError when one failed. torchrun stops the other ranks when one dies; a SIGTERM or Ctrl-C here is passed
    on to torchrun, which passes it to the ranks (rank 0 then marks its MLflow run KILLED)."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        raise GenlabError(
            "GENLAB_PROCESSES > 1 needs torchrun (PyTorch's launcher) beside this Python: reinstall torch"
        )
    command = [torchrun, "--standalone", f"--nproc-per-node={processes}", script, *args]
    # One thread per rank and core (torchrun would set 1 and print a banner about it); GENLAB_THREADS still wins.
    threads = str(max(1, len(os.sched_getaffinity(0)) // processes))
    launcher = subprocess.Popen(command, env={"OMP_NUM_THREADS": threads, **os.environ})
    try:
        code = launcher.wait()
    except KeyboardInterrupt:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait()
        raise
    if code != 0:
        raise GenlabError(
            f"{processes} processes under torchrun: a rank failed (exit {code}; its error is above). The last"
            f" checkpoint is kept: rerun the stage to resume (GENLAB_PROCESSES={processes})"
        )
