"""Pins that make x86-64 CPUs of different ISA levels run the same CPU kernels, and so give the same bits.

MKL, oneDNN and ATen each pick their kernels for the CPU they find, and a kernel for wider vectors sums in a
different order. Capping all three at AVX2 makes an AVX-512 machine compute what an AVX2 machine computes:
measured on a 2-core AMD EPYC of CPU family 26 (AVX-512 with bf16), the CI profile with these three pins gives all
13 output hashes and 136 metric values of the record made on an AVX2 EPYC; `scripts/cpu_bits.py` shows which layer
each pin fixes, and the README ("Reproducibility") what each costs in speed.

GENLAB_CPU_PINS chooses how far the pins go:
- `avx2` (the default): the same bits on AVX2 and AVX-512 CPUs of one vendor.
- `portable`: also MKL_CBWR=COMPATIBLE, MKL's vendor-neutral code path: the same bits on AMD and Intel CPUs too
  (measured against an emulated Intel Haswell), at a speed cost the benchmark prints (`make bench` with it set).
- `off`: no pins; each library uses the widest ISA the CPU has (fastest; bits then differ between ISA levels).

The variables are read once, when torch loads (MKL and oneDNN at their first call), so genlab sets them on
import, before any entry point imports torch. A value the user set for one of them wins.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping, Set
from pathlib import Path

LEVELS = ("avx2", "portable", "off")
PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels: reductions, element-wise ops, fused Adam
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's SGEMM (every Linear layer) and its vector math
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's JIT convolutions (the classifier and the two-sample test)
}
PORTABLE = {"MKL_CBWR": "COMPATIBLE"}  # MKL's SSE2 path, without vendor dispatch
SWITCH = "GENLAB_CPU_PINS"
# Every variable that decides which CPU kernels run: what a tool clears to compare pin sets, and what a fingerprint
# records.
VARIABLES = (*PINS, *PORTABLE, SWITCH)
# What ATen's AVX2 kernels need (and what the libraries call the AVX2 level).
AVX2_FLAGS = frozenset({"avx2", "fma"})
# What apply() set in this process (not the user): a tool that starts stages with another GENLAB_CPU_PINS level
# must drop these from the environment it passes on, or they would pin the stages regardless.
APPLIED: dict[str, str] = {}


def first_processor(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (or of the text given) as key -> value; empty where there is
    none. One block is enough: every core of a machine is the same model here."""
    if cpuinfo is None:
        info = Path("/proc/cpuinfo")
        cpuinfo = info.read_text() if info.exists() else ""
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    return first


def cpu_flags() -> frozenset[str]:
    """The first processor's flags in /proc/cpuinfo (empty where there is none)."""
    return frozenset(first_processor().get("flags", "").split())


def apply(environ: MutableMapping[str, str] = os.environ, flags: Set[str] | None = None) -> dict[str, str]:
    """Set each pin of the GENLAB_CPU_PINS level that the user has not set; return what was set.

    Only on x86-64, and the ATen pin only where the CPU has AVX2 and FMA: ATEN_CPU_CAPABILITY is not a cap but a
    choice (ATen runs the AVX2 kernels it names without checking the CPU), so on an older CPU it would crash."""
    level = environ.get(SWITCH, "").strip().lower() or LEVELS[0]
    if level not in LEVELS:
        raise SystemExit(f"genlab: {SWITCH}={environ[SWITCH]!r} is not valid: use avx2 (the default), portable or off")
    if level == "off" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    pins = PINS | (PORTABLE if level == "portable" else {})
    if not AVX2_FLAGS <= (cpu_flags() if flags is None else flags):
        pins.pop("ATEN_CPU_CAPABILITY")
    applied = {k: v for k, v in pins.items() if k not in environ}
    environ.update(applied)
    if environ is os.environ:
        APPLIED.update(applied)
    return applied
