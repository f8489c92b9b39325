"""Which compute layers change bits from one x86-64 CPU to another, and which pins make them agree.

    python scripts/cpu_bits.py                              # this CPU: every pin set, 1 and 2 threads
    python scripts/cpu_bits.py --qemu EPYC-Rome --qemu Haswell   # also emulated CPUs (slow: minutes each)
    python scripts/cpu_bits.py --json bits.json             # also save the table

Each probe runs one layer on fixed inputs and prints the SHA-256 of its output bytes (first 12 hex digits):
MKL's SGEMM (every Linear layer), ATen's element-wise kernels (exp, tanh, sigmoid, log1p: vectorised by ATen
or by MKL's VML), ATen reductions (sum), oneDNN's convolution (the classifier), fused Adam, and one short epoch of
each real trainer (GAN, VAE) and the classifier. Every probe runs in a fresh process, because the pins are
environment variables that MKL, oneDNN and ATen read once, when torch loads. Under `--qemu CPU`, the same
Python runs on Debian's `qemu-x86_64 -cpu CPU` (QEMU 7.2: AVX2 and FMA, no AVX-512), a CPU of another vendor or
ISA level emulated on this one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# genlab's import sets its pins in this process too; run_probe clears every one of VARIABLES for each probe.
from genlab.cpu_pins import VARIABLES  # noqa: E402

# The pin sets compared. Values are what genlab.cpu_pins would set; "none" turns genlab's pins off.
PIN_SETS: dict[str, dict[str, str]] = {
    "none": {"GENLAB_CPU_PINS": "off"},
    "aten": {"GENLAB_CPU_PINS": "off", "ATEN_CPU_CAPABILITY": "avx2"},
    "mkl": {"GENLAB_CPU_PINS": "off", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-cbwr": {"GENLAB_CPU_PINS": "off", "MKL_CBWR": "AVX2,STRICT"},
    "onednn": {"GENLAB_CPU_PINS": "off", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "all": {
        "GENLAB_CPU_PINS": "off",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },  # fmt: skip
    "all+cbwr": {
        "GENLAB_CPU_PINS": "off",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },  # fmt: skip  MKL's vendor-neutral SSE2 path
    "genlab": {},  # whatever genlab sets by default
}


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def probe(threads: int) -> dict[str, str]:
    """Run in a fresh process: every layer once, on inputs from a seeded generator."""
    sys.path.insert(0, str(REPO / "src"))
    import torch

    import genlab  # noqa: F401  first: applies genlab's pins (unless GENLAB_CPU_PINS=off) before torch loads
    from genlab import registry
    from genlab.data import TrainingData
    from genlab.models.classifier import Classifier

    torch.set_num_threads(threads)
    torch.manual_seed(0)  # the models' initial weights come from the global generator, as in the pipeline
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 784, generator=g), torch.randn(784, 1024, generator=g)
    x = torch.randn(200, 1024, generator=g)
    out: dict[str, str] = {}
    out["mkl_sgemm"] = digest(a @ b, (a @ b).t() @ a)  # a forward product and a weight-gradient-shaped one
    out["exp"] = digest(torch.exp(x))
    out["tanh"] = digest(torch.tanh(x))
    out["sigmoid"] = digest(torch.sigmoid(x))
    out["log1p_exp"] = digest(torch.log1p(torch.exp(-x.abs())))  # inside BCE-with-logits
    big = torch.randn(4_000_000, generator=g)
    out["sum"] = digest(big.sum(), x.sum(dim=0), x.sum(dim=1))

    conv_x = torch.rand(128, 1, 28, 28, generator=g)
    clf = Classifier(channels=(16, 32), feature_dim=128)
    with torch.no_grad():
        for p in clf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    loss = clf(conv_x).logsumexp(dim=1).sum()
    loss.backward()
    out["onednn_conv"] = digest(clf.conv1.weight.grad, clf.conv2.weight.grad)

    w = torch.randn(1024, 784, generator=g, requires_grad=True)
    w.grad = torch.randn(1024, 784, generator=g)
    opt = torch.optim.Adam([w], lr=2e-4, fused=True)
    for _ in range(3):
        opt.step()
    out["adam_fused"] = digest(w)

    images = torch.rand(1000, 784, generator=g)
    labels = torch.zeros(1000, dtype=torch.long)
    data = TrainingData(images, labels, images[:200], labels[:200])

    def one_epoch(kind: str, **cfg):
        """The pipeline's trainer of `kind` at its default sizes (params.yaml's), one epoch."""
        section = registry.config_class(kind)(diagnostic_samples=0, **cfg)
        trainer = registry.trainer_class(kind)(registry.model_class(kind).from_config(section), section, data,
                                               name=kind, config={}, seed=0, device=torch.device("cpu"))  # fmt: skip
        trainer.train_epoch()
        return trainer

    out["gan_epoch"] = digest(*one_epoch("gan", num_fixed_samples=8).model.state_dict().values())
    vae = one_epoch("vae", num_reconstructions=8)
    out["vae_epoch"] = digest(*vae.model.state_dict().values())
    clf_opt = torch.optim.Adam(clf.parameters(), lr=1e-3, fused=True)
    labels = torch.randint(0, 10, (128,), generator=g)
    for _ in range(3):
        clf_opt.zero_grad()
        clf.loss(conv_x, labels).backward()
        clf_opt.step()
    out["classifier_steps"] = digest(*clf.state_dict().values())
    out["_aten_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def run_probe(pins: dict[str, str], threads: int, qemu_cpu: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(pins)
    cmd = [sys.executable, __file__, "--probe", "--threads", str(threads)]
    if qemu_cpu:
        qemu = shutil.which("qemu-x86_64")
        if qemu is None:
            raise SystemExit("cpu_bits: --qemu needs qemu-x86_64 (apt-get install qemu-user)")
        cmd = [qemu, "-cpu", qemu_cpu, *cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cpu_bits: probe failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--pins", nargs="*", default=list(PIN_SETS), choices=list(PIN_SETS))
    parser.add_argument("--qemu", action="append", default=[], metavar="CPU", help="also under qemu-x86_64 -cpu CPU")
    parser.add_argument("--qemu-pins", nargs="*", default=["none", "all"], choices=list(PIN_SETS))
    parser.add_argument("--json", type=Path, help="save every result here")
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.threads[0])))
        return 0

    results: dict[str, dict[str, str]] = {}
    machines: list[str | None] = [None, *args.qemu]
    for machine in machines:
        for pin in args.pins if machine is None else args.qemu_pins:
            for threads in args.threads:
                label = f"{machine or 'native'}/{pin}/{threads}t"
                started = time.perf_counter()
                results[label] = run_probe(PIN_SETS[pin], threads, machine)
                print(f"cpu_bits: {label} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
                if args.json:  # after every probe: emulated ones take minutes
                    args.json.write_text(json.dumps(results, indent=2) + "\n")
    layers = [k for k in next(iter(results.values())) if not k.startswith("_")]
    width = max(len(k) for k in results)
    print(f"{'machine/pins/threads':<{width}}  " + " ".join(f"{k[:12]:>12}" for k in layers) + "  ATen")
    for label, row in results.items():
        print(f"{label:<{width}}  " + " ".join(f"{row[k]:>12}" for k in layers) + f"  {row['_aten_capability']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
