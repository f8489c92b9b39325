"""What a run's bits depend on besides the code and the data: the machine class.

Two runs give the same bits only when the same kernels run in the same order. On a CPU that is decided by the
vendor (MKL dispatches by vendor), the ISA each library actually uses (ATen's CPU capability, oneDNN's JIT ISA,
MKL's instruction cap), the thread count (how reductions are split), and the library versions. On a GPU, by its
model and the CUDA/cuDNN versions. `scripts/cpu_bits.py` measures which of these change bits; the fields of
CLASS_FIELDS are the ones that do, plus the versions. The CPU's model name is recorded but is not part of the class:
two CPU models that run the same kernels give the same bits (measured: see README, "Reproducibility").

Run `python -m genlab.fingerprint` for this machine's fingerprint as JSON. It must run in a fresh process with the
environment the pipeline's stages get, because the pins (genlab.cpu_pins) are read once, when torch loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from genlab.cpu_pins import AVX2_FLAGS, VARIABLES, first_processor

# The fields that decide the bits. Records whose CLASS_FIELDS are equal are expected to agree bit for bit.
CLASS_FIELDS = (
    "device",
    "cpu_vendor",
    "aten_capability",
    "mkl_isa",
    "mkl_cbwr",
    "onednn_isa",
    "threads",
    "torch",
    "mkl",
    "onednn",
    "cuda",
    "cudnn",
)

# x86-64 ISA levels in the order the libraries prefer them, with the /proc/cpuinfo flags each needs.
ISA_LEVELS = (
    ("avx512_bf16", {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"}),
    ("avx512", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
    ("avx2", AVX2_FLAGS),
    ("sse4_2", {"sse4_2"}),
)
# MKL_ENABLE_INSTRUCTIONS values -> the highest level of ISA_LEVELS that MKL may use under them.
MKL_CAPS = {"SSE4_2": "sse4_2", "AVX2": "avx2", "AVX512": "avx512_bf16", "AVX512_E1": "avx512_bf16"}


def cpu_info(cpuinfo: str | None = None) -> dict[str, str]:
    """Vendor, model name, family/model and the highest ISA level (of ISA_LEVELS) the CPU offers."""
    first = first_processor(cpuinfo)
    flags = set(first.get("flags", "").split())
    isa = next((name for name, needs in ISA_LEVELS if needs <= flags), "baseline")
    return {
        "cpu_vendor": first.get("vendor_id", "unknown"),
        "cpu_model": first.get("model name", "unknown"),
        "cpu_family_model": f"{first.get('cpu family', '?')}/{first.get('model', '?')}",
        "cpu_isa": isa,
    }


def capped(isa: str, cap: str | None) -> str:
    """The lower of two ISA levels (cap None: no cap)."""
    order = [name for name, _ in ISA_LEVELS] + ["baseline"]
    if cap is None or cap not in order:
        return isa
    return max(isa, cap, key=order.index)


def mkl_isa(cpu_isa: str, enable_instructions: str) -> str:
    """What MKL may use: the CPU's ISA under a known MKL_ENABLE_INSTRUCTIONS cap; an unknown value as it is (its own
    class, rather than silently the uncapped one)."""
    value = enable_instructions.strip().upper()
    if not value:
        return cpu_isa
    return capped(cpu_isa, MKL_CAPS[value]) if value in MKL_CAPS else f"MKL_ENABLE_INSTRUCTIONS={value}"


def onednn_isa() -> str:
    """The ISA oneDNN's JIT actually uses, from the header of its verbose output (printed to file descriptor 1
    by C code, so captured at that level) while one small convolution runs."""
    import torch

    with tempfile.TemporaryFile(mode="w+b") as out:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(out.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.nn.functional.conv2d(torch.ones(16, 1, 8, 8), torch.ones(4, 1, 3, 3))
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    match = re.search(r"info,cpu,isa:([^\n]+)", text)
    return match.group(1).strip() if match else "unknown (oneDNN printed no ISA)"


def library_versions(config_text: str) -> dict[str, str]:
    """MKL and oneDNN versions from torch.__config__.show()."""
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", config_text)
    dnn = re.search(r"(?:MKL-DNN|oneDNN) v([\d.]+)", config_text)
    return {"mkl": mkl.group(1) if mkl else "none", "onednn": dnn.group(1) if dnn else "none"}


def fingerprint(device: str = "cpu", threads: int = 0) -> dict[str, Any]:
    """This process's machine class (CLASS_FIELDS) and what else describes the machine. Imports torch: call it
    after genlab (which sets the pins) and before anything else changes torch's threads."""
    import torch

    n_threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n_threads)
    cpu = cpu_info()
    fp: dict[str, Any] = {
        **cpu,
        "device": "cpu",
        "aten_capability": torch.backends.cpu.get_cpu_capability().lower(),
        "mkl_isa": mkl_isa(cpu["cpu_isa"], os.environ.get("MKL_ENABLE_INSTRUCTIONS", "")),
        # MKL's conditional numerical reproducibility branch: COMPATIBLE runs the same code on every vendor.
        "mkl_cbwr": os.environ.get("MKL_CBWR", "AUTO").upper(),
        "onednn_isa": onednn_isa(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__.split("+")[0],
        **library_versions(torch.__config__.show()),
        "cuda": "none",
        "cudnn": "none",
        "pins": {k: os.environ[k] for k in VARIABLES if k in os.environ},
    }
    if device == "cuda" and torch.cuda.is_available():
        fp["device"] = torch.cuda.get_device_name(0)
        fp["cuda"] = str(torch.version.cuda)
        fp["cudnn"] = str(torch.backends.cudnn.version())
    return fp


def machine_class(fp: Mapping[str, Any]) -> dict[str, Any]:
    cls = {k: fp.get(k) for k in CLASS_FIELDS}
    if str(fp.get("mkl_cbwr", "")).startswith("COMPATIBLE"):
        # MKL's vendor-neutral path, with ATen and oneDNN at AVX2: an emulated Intel Haswell gave the bits of an
        # AMD EPYC in every layer measured (scripts/cpu_bits.py), so the vendor and MKL's ISA no longer decide.
        cls["cpu_vendor"] = cls["mkl_isa"] = "any"
    return cls


def class_id(fp: Mapping[str, Any]) -> str:
    """A short, readable name for a machine class: e.g. cpu-amd-avx2-2t-1f0c3a9e."""
    cls = machine_class(fp)
    digest = hashlib.sha256(json.dumps(cls, sort_keys=True).encode()).hexdigest()[:8]
    if fp.get("device", "cpu") != "cpu":
        gpu = re.sub(r"[^a-z0-9]+", "-", str(fp["device"]).lower()).strip("-")
        return f"gpu-{gpu}-{digest}"
    vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel", "any": "x86"}.get(str(cls["cpu_vendor"]), "cpu")
    return f"cpu-{vendor}-{fp.get('aten_capability')}-{fp.get('threads')}t-{digest}"


def class_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The class fields in which two fingerprints differ, as 'field: a -> b'."""
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in CLASS_FIELDS if a.get(k) != b.get(k)]


if __name__ == "__main__":
    import genlab  # noqa: F401  sets the pins before torch loads, as every stage does

    print(json.dumps(fingerprint(os.environ.get("GENLAB_DEVICE", "cpu"), int(os.environ.get("GENLAB_THREADS", "0"))),
                     indent=2))  # fmt: skip
