from __future__ import annotations

import os
import subprocess
import sys

import pytest

from genlab.cpu_pins import MARKER, ONEDNN_PIN, PINS, VARIABLES, apply, environ_for_bf16, native_bf16

AVX2 = {"avx2", "fma", "sse4_2"}


def test_pins_fill_what_the_user_left_unset():
    env = {"MKL_ENABLE_INSTRUCTIONS": "AVX512"}
    applied = apply(env, AVX2)
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX512"  # the user's value wins
    assert applied == {k: v for k, v in PINS.items() if k != "MKL_ENABLE_INSTRUCTIONS"}
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_pins_off_sets_nothing():
    env = {"GENLAB_CPU_PINS": "off"}
    assert apply(env, AVX2) == {} and env == {"GENLAB_CPU_PINS": "off"}


def test_no_aten_pin_on_a_cpu_without_avx2_since_aten_would_run_avx2_code_regardless():
    env: dict[str, str] = {}
    assert apply(env, {"sse4_2"}) == {k: v for k, v in PINS.items() if k != "ATEN_CPU_CAPABILITY"}


def test_an_empty_level_is_the_default():
    assert apply({"GENLAB_CPU_PINS": " "}, AVX2) == PINS


def test_portable_adds_mkls_vendor_neutral_path():
    env = {"GENLAB_CPU_PINS": "portable"}
    assert apply(env, AVX2) == PINS | {"MKL_CBWR": "COMPATIBLE"}


def test_a_bad_level_names_the_variable_and_the_choices():
    with pytest.raises(
        SystemExit, match=r"GENLAB_CPU_PINS='on' is not valid: use avx2 \(the default\), portable or off"
    ):
        apply({"GENLAB_CPU_PINS": "on"})


def test_native_bf16_means_avx512_bf16_or_amx():
    assert native_bf16(AVX2 | {"avx512f", "avx512_bf16"}) and native_bf16({"amx_bf16"})
    assert not native_bf16(AVX2 | {"avx512f", "avx512bw"})


def test_bf16_lifts_genlabs_onednn_cap_and_keeps_the_users():
    env = {}
    applied = apply(env, AVX2)
    lifted = environ_for_bf16(env, applied)
    assert lifted is not None and lifted[ONEDNN_PIN] == "ALL" and env[ONEDNN_PIN] == "AVX2"
    assert lifted["ATEN_CPU_CAPABILITY"] == "avx2"  # only the oneDNN cap goes
    user = {ONEDNN_PIN: "AVX2"}
    assert environ_for_bf16(user, apply(user, AVX2)) is None  # the user's cap stays (check_bf16 names it)


def child_lifts_for_bf16(env: dict[str, str]) -> bool:
    code = "import genlab; from genlab.cpu_pins import environ_for_bf16; print(environ_for_bf16() is not None)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_a_child_process_tells_inherited_genlab_pins_from_the_users():
    # A stage started by a genlab process (dvc under `genlab sweep`, a test) inherits its pins: still genlab's.
    base = {k: v for k, v in os.environ.items() if k not in (*VARIABLES, MARKER)}
    parent = dict(base)
    apply(parent, AVX2)
    assert parent[MARKER].split() == sorted(k for k in PINS if k in parent)
    assert child_lifts_for_bf16(parent)
    assert not child_lifts_for_bf16({**base, ONEDNN_PIN: "AVX2"})  # set by the user, no marker


def test_the_lifted_environment_is_final():
    # The bf16 stage restarts itself with this environment; it must not ask to restart again.
    env = {}
    lifted = environ_for_bf16(env, apply(env, AVX2))
    assert lifted is not None and ONEDNN_PIN not in lifted[MARKER].split()
    again = dict(lifted)
    assert apply(again, AVX2) == {} and environ_for_bf16(again, {}) is None
    assert not child_lifts_for_bf16({**{k: v for k, v in os.environ.items() if k not in VARIABLES}, **lifted})
