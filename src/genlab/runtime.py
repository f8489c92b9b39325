"""Process-wide torch settings: device, threads, determinism, seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from genlab import cpu_pins
from genlab.config import ConfigError


def setup_torch(device: str, threads: int, seed: int, processes_here: int = 1) -> torch.device:
    """Pick the device, fix the thread count and seed every generator. Call once, before building models.
    processes_here: training processes sharing this machine's cores (torchrun's LOCAL_WORLD_SIZE)."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("GENLAB_DEVICE=cuda but no CUDA device is visible; unset it to train on the CPU")
        # Deterministic cuBLAS needs a fixed workspace, set before the first cuBLAS call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    # On a small machine, one thread per *available* core; oversubscription thrashes (see bench/).
    n = threads or max(1, len(os.sched_getaffinity(0)) // processes_here)
    torch.set_num_threads(n)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.device(device)


def check_bf16(key: str, device: torch.device, *, force: bool = False) -> None:
    """Refuse `key` = bf16 (a model's precision) on a CPU where it would be slow: one without native bf16 arithmetic
    (unless forced with GENLAB_FORCE_BF16=1), or where oneDNN is capped below its bf16 kernels. Call after torch
    loaded, in a process started with genlab.cpu_pins.environ_for_bf16."""
    if device.type != "cpu":
        return
    model = cpu_pins.first_processor().get("model name", "this CPU")
    if not force and not cpu_pins.native_bf16():
        raise ConfigError(
            f"{key} = bf16, but {model} has no native bf16 arithmetic (none of"
            f" {', '.join(sorted(cpu_pins.NATIVE_BF16_FLAGS))} in /proc/cpuinfo): oneDNN would emulate it, no faster"
            " than fp32. Set it to fp32, or GENLAB_FORCE_BF16=1 to train in emulated bf16 anyway"
        )
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        isa = os.environ.get(cpu_pins.ONEDNN_PIN)
        cap = f"{cpu_pins.ONEDNN_PIN}={isa} caps oneDNN below its bf16 kernels" if isa else "oneDNN has no bf16 kernels"
        raise ConfigError(
            f"{key} = bf16, but {cap} here, and a bf16 matmul would fall back to a reference loop (about 1 GFLOP/s):"
            f" unset {cpu_pins.ONEDNN_PIN}, or set {key} to fp32"
        )
