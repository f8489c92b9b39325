"""Process-wide torch settings: device, threads, determinism, seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

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
