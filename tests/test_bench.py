"""bench/train_speed.py: its FLOP counts against torch's own count of one real training step, and a short run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from torch.utils.flop_counter import FlopCounterMode

from genlab.cpu_pins import native_bf16

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


@pytest.mark.slow
def test_a_short_benchmark_run_prints_every_figure():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "4", "--warmup", "1", "--rounds", "2", "--baseline", "--contention",
         "--bf16", "--breakdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    if not native_bf16():
        assert out.returncode != 0 and "has no native bf16 arithmetic" in out.stderr, out.stderr
        return
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"genlab train_speed \(fp32\): CPU .*, \d+ threads of \d+ cores, OMP_WAIT_POLICY=", text)
    assert re.search(r"genlab train_speed \(bf16\): .*ONEDNN_MAX_CPU_ISA=ALL", text)  # oneDNN uncapped for bf16
    assert re.search(r"dense bf16 matmul peak .* median [\d.,]+ GFLOP/s", text)
    names = [f"{m} (genlab, {p})" for m in ("GAN", "VAE") for p in ("fp32", "bf16")]
    names += [f"{m} ({b}, bs 64)" for m in ("GAN", "VAE") for b in ("in-memory", "DataLoader")]
    for name in names:
        line = next(ln for ln in text.splitlines() if ln.startswith(name))
        mfu = float(re.search(r"MFU\s+([\d.]+)%", line).group(1))
        assert 0 < mfu < 150, line
    assert re.search(r"bf16 / fp32, samples/s: GAN [\d.]+x, VAE [\d.]+x", text)
    for model in ("GAN", "VAE"):
        for precision in ("fp32", "bf16"):
            line = next(ln for ln in text.splitlines() if ln.startswith(f"{model} (genlab, {precision}): "))
            shares = [int(p) for p in re.findall(r" (\d+)%", line)]
            assert "matmul" in line and len(shares) == 6 and 90 <= sum(shares) <= 110, line
    for baseline in ("DataLoader", "in-memory"):
        assert re.search(rf"genlab / {baseline}, samples/s: GAN [\d.]+x, VAE [\d.]+x", text), text
        assert re.search(rf"genlab bf16 / {baseline}, samples/s: GAN [\d.]+x, VAE [\d.]+x", text), text
    # The plain implementations run with default PyTorch: none of genlab's settings reach their process.
    assert text.count("default PyTorch (") == 2 and "'OMP_WAIT_POLICY': None" in text
    assert re.search(r"with one busy process beside it .*GAN [\d.]+ s/epoch \([\d.]+x idle\)", text)
    assert "peak host memory" in text


@pytest.mark.slow
def test_the_pin_comparison_reads_every_pin_sets_rows():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--pins", "--steps", "2", "--warmup", "1", "--rounds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    rows = {ln.split("  ")[0]: ln for ln in out.stdout.splitlines()}
    for name in ("pins off", "genlab pins (default)", "portable (+MKL_CBWR=COMPATIBLE)"):
        cells = re.findall(r"([\d,]+) \(([+-][\d.]+)%\)", rows[name])
        assert len(cells) == 3, rows[name]  # GAN, VAE, classifier
