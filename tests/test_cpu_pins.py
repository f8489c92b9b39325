from __future__ import annotations

import pytest

from genlab.cpu_pins import PINS, apply

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
