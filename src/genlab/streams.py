"""Random streams and batch order. Every random draw of training comes from a trainer's own torch.Generator,
made here from (seed, stream), whose state goes into each checkpoint: a resumed run continues the exact random
stream of an uninterrupted one, and nothing depends on what else the process did with torch's global RNG.

Data path: the whole training set sits as one tensor on the training device; a batch is an index_select of a
slice of a random permutation. No DataLoader, no per-sample Python, no worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def make_generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent, reproducible random stream: (seed, stream) -> generator."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + stream)
    return g


def batch_indices(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=generator, device=device)
    for start in range(0, n, batch_size):
        yield perm[start : start + batch_size]
