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

bf16 on the CPU is the exception: oneDNN runs every bf16 matmul, and capped at AVX2 it has no bf16 kernel and falls
back to a reference loop (measured on an AMD EPYC of CPU family 25 with avx512_bf16: 1 GFLOP/s, against 410 with the
cap lifted and 190 for fp32). A process that trains in bf16 starts without genlab's oneDNN cap (`environ_for_bf16`);
its bits are its own anyway, repeatable on the same machine class, not across ISAs.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, MutableMapping, Set
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
# Native bf16 arithmetic on x86-64: AVX512-BF16's dot products (AMD Zen 4 and later, Intel Cooper Lake and later),
# AMX's bf16 tiles (Intel Sapphire Rapids and later). Without either, oneDNN emulates bf16, no faster than fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
ONEDNN_PIN = "ONEDNN_MAX_CPU_ISA"
# No cap: oneDNN takes the widest ISA the CPU has (AVX512_CORE_BF16, AVX512_CORE_AMX, ...).
ONEDNN_UNCAPPED = "ALL"
# What apply() set in this process, or a genlab process above it (not the user): a tool that starts stages with
# another GENLAB_CPU_PINS level must drop these from the environment it passes on, or they would pin the stages
# regardless.
APPLIED: dict[str, str] = {}
# The names of the pins genlab set, passed on in the environment, so that a child process (a stage under dvc, a test's
# subprocess) tells genlab's pins from the user's: environ_for_bf16 lifts only genlab's.
MARKER = "GENLAB_PINNED"


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
    marked = environ.get(MARKER, "").split()
    inherited = {k: pins[k] for k in marked if k in pins and environ.get(k) == pins[k]}
    ours = inherited | applied
    others = [k for k in marked if k not in PINS and k not in PORTABLE]  # genlab's other settings (genlab/__init__)
    if ours or others:
        environ[MARKER] = " ".join(sorted(ours) + others)
    if environ is os.environ:
        APPLIED.update(ours)
    return applied


def native_bf16(flags: Set[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (NATIVE_BF16_FLAGS in /proc/cpuinfo, or in `flags`)."""
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def environ_for_bf16(
    environ: Mapping[str, str] = os.environ, applied: Mapping[str, str] = APPLIED
) -> dict[str, str] | None:
    """The environment a bf16 process needs: `environ` with genlab's oneDNN cap lifted. None where there is nothing to
    lift: genlab (`applied`: what apply() set) did not cap oneDNN, or the user set ONEDNN_MAX_CPU_ISA (theirs wins; a
    cap below bf16 is then named by genlab.runtime.check_bf16)."""
    if ONEDNN_PIN not in applied or environ.get(ONEDNN_PIN) != applied[ONEDNN_PIN]:
        return None
    marker = " ".join(k for k in environ.get(MARKER, "").split() if k != ONEDNN_PIN)
    return {**environ, ONEDNN_PIN: ONEDNN_UNCAPPED, MARKER: marker}
