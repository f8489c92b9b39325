"""bench/train_speed.py: its FLOP counts against torch's own count of one real training step, and a short run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from torch.utils.flop_counter import FlopCounterMode

from .conftest import REPO
from .test_train import make_trainer

SCRIPT = REPO / "bench" / "train_speed.py"


def counted_flops(trainer) -> int:
    """Matmul FLOPs torch dispatches for one epoch of `trainer` (forward and backward, as executed)."""
    with FlopCounterMode(display=False) as counter:
        trainer.train_epoch()
    return counter.get_total_flops()


@pytest.mark.parametrize("kind", ["gan", "vae"])
@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_flops_per_sample_equal_what_a_training_step_executes(kind, conditional):
    extra = {"num_fixed_samples": 10} if conditional else {}
    trainer = make_trainer(kind, conditional=conditional, **extra)  # 200 images, batch 50: 4 steps
    if kind == "vae":
        trainer.test = trainer.test[:0]  # the per-epoch test pass is not part of the training step
    assert counted_flops(trainer) == trainer.model.flops_per_sample() * trainer.data.shape[0]


def test_a_short_benchmark_run_prints_every_figure():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "4", "--warmup", "1", "--rounds", "2", "--baseline", "--contention"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"genlab train_speed: CPU .*, \d+ threads of \d+ cores, OMP_WAIT_POLICY=", text)
    names = ("GAN (genlab)", "VAE (genlab)", "GAN (DataLoader, bs 64)", "VAE (DataLoader, bs 64)",
             "GAN (in-memory, bs 64)", "VAE (in-memory, bs 64)")  # fmt: skip
    for name in names:
        line = next(ln for ln in text.splitlines() if ln.startswith(name))
        mfu = float(re.search(r"MFU\s+([\d.]+)%", line).group(1))
        assert 0 < mfu < 150, line
    for baseline in ("DataLoader", "in-memory"):
        assert re.search(rf"genlab / {baseline}, samples/s: GAN [\d.]+x, VAE [\d.]+x", text), text
    assert re.search(r"with one busy process beside it .*GAN [\d.]+ s/epoch \([\d.]+x idle\)", text)
    assert "peak host memory" in text
