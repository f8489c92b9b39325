from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from genlab.fingerprint import (
    CLASS_FIELDS,
    capped,
    class_differences,
    class_id,
    cpu_info,
    library_versions,
    machine_class,
    mkl_isa,
)

from .conftest import REPO

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse4_2 avx fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
"""
ZEN5 = ZEN3.replace("25", "26").replace("avx2 bmi2", "avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16")
SKYLAKE = ZEN3.replace("AuthenticAMD", "GenuineIntel").replace("avx2 bmi2", "avx2 avx512f avx512dq avx512bw avx512vl")


def test_cpu_info_reads_vendor_model_and_isa():
    assert cpu_info(ZEN3) == {"cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC 7B13",
                              "cpu_family_model": "25/1", "cpu_isa": "avx2"}  # fmt: skip
    assert cpu_info(ZEN5)["cpu_isa"] == "avx512_bf16"
    assert cpu_info(SKYLAKE)["cpu_isa"] == "avx512" and cpu_info(SKYLAKE)["cpu_vendor"] == "GenuineIntel"
    assert cpu_info("")["cpu_vendor"] == "unknown"


def test_an_isa_cap_only_lowers():
    assert capped("avx512_bf16", "avx2") == "avx2"
    assert capped("avx2", "avx512_bf16") == "avx2"
    assert capped("avx512", None) == "avx512"


def test_mkls_cap_is_read_and_an_unknown_value_kept_as_it_is():
    assert mkl_isa("avx512_bf16", "AVX2") == "avx2" and mkl_isa("avx2", "") == "avx2"
    assert mkl_isa("avx512_bf16", "avx2_e1") == "MKL_ENABLE_INSTRUCTIONS=AVX2_E1"


def test_library_versions_from_torch_config():
    text = (
        "  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 2024\n  - Intel(R) MKL-DNN v3.12.0 (Git"
    )
    assert library_versions(text) == {"mkl": "2024.2-Product", "onednn": "3.12.0"}
    assert library_versions("") == {"mkl": "none", "onednn": "none"}


def fake_fp(**changes) -> dict:
    fp = {k: "x" for k in CLASS_FIELDS} | {"device": "cpu", "cpu_vendor": "AuthenticAMD", "aten_capability": "avx2",
                                            "threads": 2, "cpu_model": "AMD EPYC 7B13"}  # fmt: skip
    return fp | changes


def test_the_class_ignores_the_model_name_but_not_threads_or_isa():
    base = fake_fp()
    assert class_id(base) == class_id(fake_fp(cpu_model="AMD EPYC 9B45"))
    assert class_id(base) != class_id(fake_fp(threads=4))
    assert class_id(base) != class_id(fake_fp(aten_capability="avx512"))
    assert class_id(base).startswith("cpu-amd-avx2-2t-")
    assert class_id(fake_fp(device="NVIDIA H100 80GB HBM3")).startswith("gpu-nvidia-h100-80gb-hbm3-")
    assert class_differences(base, fake_fp(threads=4)) == ["threads: 2 -> 4"]
    assert set(machine_class(base)) == set(CLASS_FIELDS)


def run_fingerprint(**env) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "MKL_", "ONEDNN_", "GENLAB_"))}
    full.update(env, PYTHONPATH=str(REPO / "src"))
    out = subprocess.run([sys.executable, "-m", "genlab.fingerprint"], env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(cpu_info()["cpu_isa"] in ("sse4_2", "baseline"), reason="the pins cap at AVX2; this CPU has less")
def test_genlab_pins_every_library_at_avx2_and_the_fingerprint_sees_it():
    pinned = run_fingerprint(GENLAB_THREADS="1")
    assert (pinned["aten_capability"], pinned["mkl_isa"], pinned["threads"]) == ("avx2", "avx2", 1)
    assert "AVX2" in pinned["onednn_isa"] and "AVX-512" not in pinned["onednn_isa"]
    unpinned = run_fingerprint(GENLAB_THREADS="1", GENLAB_CPU_PINS="off")
    if cpu_info()["cpu_isa"].startswith("avx512"):
        assert unpinned["aten_capability"] == "avx512" and "AVX-512" in unpinned["onednn_isa"]
        assert class_id(unpinned) != class_id(pinned)
    assert unpinned["pins"] == {"GENLAB_CPU_PINS": "off"}
    user = run_fingerprint(GENLAB_THREADS="1", ATEN_CPU_CAPABILITY="default")  # the user's value wins: scalar ATen
    assert user["pins"]["ATEN_CPU_CAPABILITY"] == "default" and user["aten_capability"] == "default"


def test_mkls_compatible_path_makes_the_vendor_irrelevant():
    amd = fake_fp(mkl_cbwr="COMPATIBLE", mkl_isa="avx2")
    intel = fake_fp(mkl_cbwr="COMPATIBLE", mkl_isa="avx512", cpu_vendor="GenuineIntel")
    assert class_id(amd) == class_id(intel) and class_id(amd).startswith("cpu-x86-avx2-2t-")
    assert class_id(fake_fp(mkl_cbwr="AUTO")) != class_id(fake_fp(mkl_cbwr="AUTO", cpu_vendor="GenuineIntel"))
