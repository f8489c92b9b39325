"""genlab.runtime.check_bf16: bf16 on a CPU only where it is fast, and a refusal that says why."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from genlab import cpu_pins
from genlab.config import ConfigError
from genlab.runtime import check_bf16

from .conftest import REPO

CPU = torch.device("cpu")


def test_a_cpu_without_native_bf16_is_refused_unless_forced(monkeypatch):
    monkeypatch.setattr(cpu_pins, "native_bf16", lambda flags=None: False)
    with pytest.raises(ConfigError, match=r"gan.precision = bf16, but .* has no native bf16 .*GENLAB_FORCE_BF16=1"):
        check_bf16("gan.precision", CPU)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    check_bf16("gan.precision", CPU, force=True)  # forced: emulated bf16 is the user's choice


def test_a_gpu_is_not_checked(monkeypatch):
    monkeypatch.setattr(cpu_pins, "native_bf16", lambda flags=None: False)
    check_bf16("gan.precision", torch.device("cuda"))


def check_in_child(onednn_isa: str) -> subprocess.CompletedProcess:
    """check_bf16 in a fresh process whose oneDNN is capped at `onednn_isa` (oneDNN reads it when torch loads)."""
    code = (
        "import genlab, torch; from genlab.runtime import check_bf16;"
        " check_bf16('vae.precision', torch.device('cpu'), force=True); print('ok')"
    )
    env = {"ONEDNN_MAX_CPU_ISA": onednn_isa, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)


def test_onednn_capped_below_bf16_is_named():
    out = check_in_child("AVX2")
    assert out.returncode != 0
    assert "vae.precision = bf16, but ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below its bf16 kernels" in out.stderr


@pytest.mark.skipif(not cpu_pins.native_bf16(), reason="this CPU has no native bf16 (avx512_bf16, amx_bf16)")
def test_an_uncapped_onednn_on_a_native_bf16_cpu_passes():
    out = check_in_child("ALL")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
