"""Training-speed benchmark: samples/s, s/epoch, model FLOPs, MFU against this machine's measured matmul peak.

    python bench/train_speed.py                # genlab's trainers at the params.yaml defaults, fp32
    python bench/train_speed.py --bf16         # also in bf16 (its own process: oneDNN uncapped), MFU against bf16 peak
    python bench/train_speed.py --baseline     # also the plain implementations (bench/plain.py), for the ratio
    python bench/train_speed.py --contention   # also with one busy process beside it (CPU): the slow-down
    python bench/train_speed.py --breakdown    # also where each step's time goes, by kind of op (torch.profiler)
    python bench/train_speed.py --pins         # what each of genlab's CPU pins (genlab.cpu_pins) costs, one run

Times a fixed number of optimiser steps after warm-up, on random data shaped like MNIST (speed does not depend
on pixel values). MFU counts only the matmul FLOPs a step needs (from the layer sizes), divided by the dense
matmul rate of the same precision, measured in the same process with the same threads beside every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import torch

from genlab import cpu_pins, registry
from genlab.config import load_params, load_runtime
from genlab.cpu_pins import SWITCH, VARIABLES
from genlab.data import TrainingData
from genlab.feature_extractor import build_classifier
from genlab.models.vae.model import evaluate_loss
from genlab.models.vae.trainer import VaeTrainer
from genlab.optim import adam
from genlab.runtime import check_bf16
from genlab.streams import batch_indices, make_generator
from genlab.trainer import Trainer

TRAIN_SIZE = 60_000
HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
RATES = "RATES "  # the line a --bf16 child prints its samples/s on, for the parent


def timing_args(args: argparse.Namespace) -> list[str]:
    """The timing flags of a child process (a pin set, the bf16 run, a plain baseline): this run's own."""
    return ["--steps", str(args.steps), "--warmup", str(args.warmup), "--rounds", str(args.rounds)]


def print_ratio(label: str, rates: dict[str, float], base: dict[str, float]) -> None:
    print(f"{label}, samples/s: GAN {rates['gan'] / base['gan']:.2f}x, VAE {rates['vae'] / base['vae']:.2f}x")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best dense matmul rate (FLOP/s) of n x n by n x n in `dtype`, the machine's practical peak for this work."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
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


def time_steps(run_steps: Callable[[int], None], steps: int, device: torch.device) -> float:
    """Seconds per step over `steps`."""
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


def timed_rounds(
    runs: dict[str, Callable[[int], None]],
    steps: int,
    rounds: int,
    device: torch.device,
    warmup: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per step of each run in each round (after `warmup` untimed steps of each), and the matmul peak
    next to each round (the mean of the measurements before and after it). A VM's speed drifts by tens of percent
    within a minute when its host is busy; dividing each round's rate by the peak measured beside it keeps MFU
    from absorbing that drift."""
    for run in runs.values():
        run(warmup)
    chunk = max(steps // rounds, 1)
    step_s: dict[str, list[float]] = {name: [] for name in runs}
    peaks = []
    before = matmul_peak(device, repeats=2, dtype=dtype)
    for _ in range(rounds):
        for name, run in runs.items():
            step_s[name].append(time_steps(run, chunk, device))
        after = matmul_peak(device, repeats=2, dtype=dtype)
        peaks.append((before + after) / 2)
        before = after
    return step_s, peaks


def epoch_seconds(step_s: float, batch: int, extra_epoch_s: float = 0.0) -> float:
    """A 60,000-image epoch at `step_s` seconds per step of `batch` images, plus per-epoch extra work."""
    return TRAIN_SIZE / batch * step_s + extra_epoch_s


def report(
    name: str,
    step_s: list[float],
    peaks: list[float],
    batch: int,
    flops: int,
    data_s: float | None,
    extra_epoch_s: float = 0.0,
) -> float:
    """One line per model: median over rounds of samples/s and of MFU (each round against its own peak)."""
    samples_s = batch / statistics.median(step_s)
    epoch_s = epoch_seconds(statistics.median(step_s), batch, extra_epoch_s)
    rate = flops * samples_s
    mfu = [flops * batch / s / peak for s, peak in zip(step_s, peaks, strict=True)]
    line = (
        f"{name:<22} {samples_s:>10,.0f} samples/s  {epoch_s:>7.2f} s/epoch  {flops / 1e6:>6.1f} MFLOP/sample"
        f"  {rate / 1e9:>8.1f} GFLOP/s  MFU {statistics.median(mfu):>5.1%} ({min(mfu):.1%}-{max(mfu):.1%})"
    )
    if data_s is not None:
        line += f"  data path {data_s / statistics.median(step_s):>5.1%} of step"
    print(line, flush=True)
    return samples_s


def print_peaks(peaks: list[float], precision: str = "fp32") -> None:
    print(
        f"dense {precision} matmul peak (2048^3, same threads), beside each round: median"
        f" {statistics.median(peaks) / 1e9:,.1f} GFLOP/s ({min(peaks) / 1e9:,.1f}-{max(peaks) / 1e9:,.1f})"
    )


# --- the plain implementations (bench/plain.py), for the ratio -----------------------------------------------
def default_pytorch_environ() -> dict[str, str]:
    """This process's environment as it was before genlab changed it: without the CPU pins and the OpenMP wait
    policy genlab set (a user's own settings stay)."""
    drop = {*cpu_pins.APPLIED, cpu_pins.MARKER, *(["OMP_WAIT_POLICY"] if genlab.WAIT_POLICY_SET else [])}
    return {k: v for k, v in os.environ.items() if k not in drop}


def plain_baseline(data: str, args: argparse.Namespace) -> dict:
    """bench/plain.py with `data` (in-memory or dataloader) in its own process, with default PyTorch."""
    cmd = [sys.executable, os.path.join(HERE, "plain.py"), "--data", data, *timing_args(args)]
    out = subprocess.run(cmd, env=default_pytorch_environ(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def classifier_steps(cfg: dict, images: torch.Tensor, device: torch.device):
    """The pipeline classifier's training step (conv layers: oneDNN on the CPU), as classifier_training runs it."""
    model = build_classifier(cfg).to(device)
    opt = adam(model.parameters(), lr=cfg["max_lr"], device=device)
    labels = torch.randint(0, 10, (images.shape[0],), device=device)
    b = cfg["batch_size"]

    def run(steps: int) -> None:
        for i in range(steps):
            start = (i * b) % (images.shape[0] - b + 1)
            loss = model.loss(images[start : start + b], labels[start : start + b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


# Op categories of --breakdown, by ATen name (self time: a category holds what its kernels ran, not their callees).
CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "optimizer (fused Adam)": ("aten::_fused_adam_",),
    "random draws": ("aten::uniform_", "aten::normal_", "aten::randperm", "aten::bernoulli_", "aten::random_"),
    "casts and copies": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"),
}


def breakdown(name: str, run: Callable[[int], None], steps: int) -> None:
    """Where `run`'s steps spend their time, by op category (torch.profiler, CPU self time), against wall time. What
    no op accounts for is Python, the dispatcher and waiting: with OMP_WAIT_POLICY=PASSIVE, waking the sleeping
    OpenMP threads for each parallel region shows up inside the ops' times, not here."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        run(steps)
        wall = time.perf_counter() - t
    totals = {cat: 0.0 for cat in CATEGORIES}
    other = 0.0
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        cat = next((c for c, names in CATEGORIES.items() if event.key in names), None)
        if cat is None:
            other += event.self_cpu_time_total / 1e6
        else:
            totals[cat] += event.self_cpu_time_total / 1e6
    totals["other ATen ops (element-wise, losses, sums)"] = other
    totals["outside ATen ops (Python, autograd, dispatch)"] = max(wall - sum(totals.values()), 0.0)
    shares = ", ".join(f"{cat} {seconds / wall:.0%}" for cat, seconds in totals.items())
    print(f"{name}: {wall / steps * 1e3:.2f} ms/step under the profiler: {shares}")


# Pin sets that --pins compares: genlab's default, none, and each pin lifted alone (the user's way to opt out).
PIN_RUNS: dict[str, dict[str, str]] = {
    "pins off": {SWITCH: "off"},
    "genlab pins (default)": {},
    "without the ATen pin": {"ATEN_CPU_CAPABILITY": "avx512"},  # ("default" would mean ATen's scalar kernels)
    "without the MKL pin": {"MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "without the oneDNN pin": {"ONEDNN_MAX_CPU_ISA": "ALL"},
    "portable (+MKL_CBWR=COMPATIBLE)": {SWITCH: "portable"},
}


def compare_pins(args: argparse.Namespace) -> None:
    """Each pin set in a fresh process (the pins are read when torch loads), alternating twice; samples/s medians."""
    rates: dict[str, dict[str, list[float]]] = {name: {} for name in PIN_RUNS}
    mfus: dict[str, dict[str, list[float]]] = {name: {} for name in PIN_RUNS}
    for _ in range(2):
        for name, pins in PIN_RUNS.items():
            env = {k: v for k, v in os.environ.items() if k not in VARIABLES} | pins
            cmd = [sys.executable, __file__, "--params", args.params, *timing_args(args)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                if "samples/s" in line and "(genlab" in line:
                    model = line.split(" (genlab")[0]
                    rate = re.search(r"([\d,]+) samples/s", line).group(1)  # type: ignore[union-attr]
                    rates[name].setdefault(model, []).append(float(rate.replace(",", "")))
                    mfu = re.search(r"MFU +([\d.]+)%", line)
                    if mfu:
                        mfus[name].setdefault(model, []).append(float(mfu.group(1)))
    models = list(rates["pins off"])
    print(f"{'samples/s (median of 2 runs)':<32}" + "".join(f"{m:>30}" for m in models))
    for name in PIN_RUNS:
        cells = []
        for m in models:
            rate, off = statistics.median(rates[name][m]), statistics.median(rates["pins off"][m])
            mfu = f" MFU {statistics.median(mfus[name][m]):.1f}%" if m in mfus[name] else ""
            cells.append(f"{rate:>8,.0f} ({rate / off - 1:+.1%}){mfu}")
        print(f"{name:<32}" + "".join(f"{c:>30}" for c in cells))
    print("(percentages: against pins off; each row's runs alternate with the others')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=150, help="timed optimiser steps per model")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, each beside its own peak measurement")
    parser.add_argument(
        "--baseline", action="store_true", help="also time the plain implementations, in memory and DataLoader (CPU)"
    )
    parser.add_argument("--bf16", action="store_true", help="also time genlab's trainers in bf16, in their own process")
    parser.add_argument(
        "--precision", choices=tuple(DTYPES), default="fp32", help="the trainers' precision (--bf16 runs bf16 itself)"
    )
    parser.add_argument(
        "--contention", action="store_true", help="also time genlab's steps with one busy process beside them (CPU)"
    )
    parser.add_argument("--pins", action="store_true", help="compare genlab's CPU pin sets, each in its own process")
    parser.add_argument("--breakdown", action="store_true", help="also where genlab's steps spend their time, by op")
    args = parser.parse_args()
    if args.pins:
        compare_pins(args)
        return

    params, runtime = load_params(args.params), load_runtime()
    device = torch.device(runtime.device)
    threads = runtime.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    precision, dtype = args.precision, DTYPES[args.precision]
    if precision == "bf16":
        check_bf16("--precision", device, force=runtime.force_bf16)
    if device.type == "cuda":
        what = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
        pins = ", ".join(f"{k}={os.environ[k]}" for k in VARIABLES if k in os.environ) or "none"
        what = (
            f"CPU {cpu}, {threads} threads of {os.cpu_count()} cores, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']},"
            f" ATen {torch.backends.cpu.get_cpu_capability()}, pins: {pins}"
        )
    print(f"genlab train_speed ({precision}): {what}; torch {torch.__version__}, Python {platform.python_version()}")
    gan_cfg, vae_cfg = params.model("gan").model_dump(), params.model("vae").model_dump()
    n = max(args.steps + args.warmup, 1) * max(gan_cfg["batch_size"], vae_cfg["batch_size"])
    raw = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    flat = raw.reshape(n, -1).float().div(255).to(device)
    test = flat[:10_000]

    labels = torch.randint(0, 10, (n,), device=device)
    data = TrainingData(flat, labels, test, labels[: test.shape[0]])

    def trainer_of(name: str) -> Trainer:
        """Built as pipeline/train.py builds it, from the model's params section."""
        kind, cfg = params.models[name], params.model(name).resolved()
        cfg = cfg.model_copy(update={"precision": precision})
        model = registry.model_class(kind).from_config(cfg)
        return registry.trainer_class(kind)(model, cfg, data, name=name, config={}, seed=0, device=device)

    gan_trainer, vae_trainer = trainer_of("gan"), trainer_of("vae")
    gan, vae = gan_trainer.model, vae_trainer.model

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
    sync(device)
    t = time.perf_counter()
    evaluate_loss(vae, test, seed=0)
    sync(device)
    vae_eval_s = (time.perf_counter() - t) * (10_000 / test.shape[0])

    clf_cfg = params.classifier.model_dump()
    genlab_runs = {"gan": lambda s: steps_of(gan_trainer, s), "vae": lambda s: steps_of(vae_trainer, s)}
    if precision == "fp32":  # the classifier trains in fp32 whatever the models' precision
        genlab_runs["classifier"] = classifier_steps(clf_cfg, flat, device)
    step_s, peaks = timed_rounds(genlab_runs, args.steps, args.rounds, device, warmup=args.warmup, dtype=dtype)
    gan_data = data_path_seconds(flat, gan_cfg["batch_size"], device, args.steps)
    vae_data = data_path_seconds(flat, vae_cfg["batch_size"], device, args.steps)
    print_peaks(peaks, precision)
    print()
    gan_flops, vae_flops = gan.flops_per_sample(), vae.flops_per_sample()
    rates = {
        "gan": report(f"GAN (genlab, {precision})", step_s["gan"], peaks, gan_cfg["batch_size"], gan_flops, gan_data),
        "vae": report(
            f"VAE (genlab, {precision})",
            step_s["vae"],
            peaks,
            vae_cfg["batch_size"],
            vae_flops,
            vae_data,
            extra_epoch_s=vae_eval_s,
        ),
    }
    if "classifier" in step_s:
        clf_s = statistics.median(step_s["classifier"])
        print(
            f"{'Classifier (genlab)':<22} {clf_cfg['batch_size'] / clf_s:>10,.0f} samples/s "
            f" {epoch_seconds(clf_s, clf_cfg['batch_size']):>7.2f} s/epoch  (conv layers: no MFU counted)"
        )
    if args.breakdown:
        print()
        for model in ("gan", "vae"):
            breakdown(f"{model.upper()} (genlab, {precision})", genlab_runs[model], args.steps)
    if args.precision != "fp32":  # a child of --bf16: its rates for the parent
        print(RATES + json.dumps(rates))
        return

    if args.bf16:
        # Its own process: oneDNN's ISA was fixed when torch loaded here, capped below bf16 (genlab.cpu_pins).
        cmd = [sys.executable, __file__, "--precision", "bf16", "--params", args.params, *timing_args(args),
               *(["--breakdown"] if args.breakdown else [])]  # fmt: skip
        env = cpu_pins.environ_for_bf16() or dict(os.environ)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"--bf16: {out.stderr.strip().splitlines()[-1]}")
        print("\n" + "\n".join(ln for ln in out.stdout.splitlines() if not ln.startswith(RATES)))
        bf16 = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith(RATES)).removeprefix(RATES))
        print_ratio("bf16 / fp32", bf16, rates)

    if args.baseline:
        if device.type != "cpu":
            sys.exit("--baseline times the plain CPU implementations; run it with GENLAB_DEVICE=cpu")
        # Two "before"s, each in its own process with default PyTorch (bench/plain.py): the plain in-memory one a
        # user writes in an afternoon (the one to beat: its data path costs nothing), and the torchvision-style
        # DataLoader one.
        for label, data_path in (("in-memory", "in-memory"), ("DataLoader", "dataloader")):
            base = plain_baseline(data_path, args)
            b, base_peaks = base["batch"], base["peaks"]
            print(f"\nplain, {label}, default PyTorch ({base['threads']} threads, {base['environment']}):")
            print_peaks(base_peaks)
            base_rates = {
                "gan": report(f"GAN ({label}, bs {b})", base["step_s"]["gan"], base_peaks, b, gan_flops, None),
                "vae": report(
                    f"VAE ({label}, bs {b})", base["step_s"]["vae"], base_peaks, b, vae_flops, None, vae_eval_s
                ),
            }
            print_ratio(f"genlab / {label}", rates, base_rates)
            if args.bf16:
                print_ratio(f"genlab bf16 / {label}", bf16, base_rates)

    if args.contention:
        if device.type != "cpu":
            sys.exit("--contention measures CPU threading; run it with GENLAB_DEVICE=cpu")
        # One process that wants a whole core, as a test suite or a second experiment would. On this 2-core
        # machine it takes half the machine away, so 2x is the fair slow-down; far above 2x means the threads
        # fight (spinning OpenMP waits).
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            busy_s, _ = timed_rounds(genlab_runs, args.steps, args.rounds, device)
        finally:
            busy.kill()
            busy.wait()
        gan_busy, vae_busy = statistics.median(busy_s["gan"]), statistics.median(busy_s["vae"])
        gan_idle, vae_idle = statistics.median(step_s["gan"]), statistics.median(step_s["vae"])
        print(
            f"\nwith one busy process beside it (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}):"
            f" GAN {epoch_seconds(gan_busy, gan_cfg['batch_size']):.2f} s/epoch ({gan_busy / gan_idle:.2f}x idle),"
            f" VAE {epoch_seconds(vae_busy, vae_cfg['batch_size'], vae_eval_s):.2f} s/epoch"
            f" ({vae_busy / vae_idle:.2f}x idle, steps only)"
        )

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak host memory (max RSS of this process): {peak_rss:.2f} GiB")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
