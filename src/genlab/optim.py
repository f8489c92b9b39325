"""The optimiser every genlab model trains with."""

from __future__ import annotations

import torch


def adam(params, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), device: torch.device) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) with the fused kernel: one pass over all parameters instead of ~10 (CPU and CUDA)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=device.type in ("cpu", "cuda"))
