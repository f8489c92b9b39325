from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genlab.config import ConfigError, Params, Runtime, flatten, load_params

from .conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def with_change(tmp_path: Path, section: str, key: str, value) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section][key] = value
    return write(tmp_path, yaml.safe_dump(params))


def test_repo_params_are_valid_and_match_the_defaults():
    # params.yaml spells out every default, so a reader sees all knobs in one place.
    assert load_params(REPO / "params.yaml") == Params()


def test_params_are_frozen():
    p = Params()
    with pytest.raises(Exception, match="frozen"):
        p.gan.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("gan", "epochs", -3, ["gan.epochs", "-3", "greater than 0"]),
        ("gan", "lr", "fast", ["gan.lr", "'fast'", "valid number"]),
        ("vae", "hidden", [512, 0], ["vae.hidden.1", "0", "greater than 0"]),
        ("gan", "dropout", 1.5, ["gan.dropout", "1.5", "less than 1"]),
        ("data", "dataset", "cifar", ["data.dataset", "'cifar'", "'mnist'", "'fashion-mnist'"]),
        ("gan", "epochz", 5, ["unknown key 'gan.epochz'"]),
        ("gan", "variant", "stabel", ["gan = {...}", "variant 'stabel' is not defined", "['stable']"]),
        ("gan", "variants", {"stable": {"beta3": 0.5}}, ["unknown key 'gan.variants.stable.beta3'"]),
        ("classifier", "min_test_accuracy", 1.5, ["classifier.min_test_accuracy", "less than 1"]),
        ("evaluate", "num_samples", 0, ["evaluate.num_samples", "greater than 0"]),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path, section, key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_params(with_change(tmp_path, section, key, value))
    for fragment in expected:
        assert fragment in err.value.message


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trainer'"):
        load_params(write(tmp_path, "trainer: {epochs: 3}\n"))


def test_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(write(tmp_path, "gan: {epochs: 3\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_render_epochs_must_have_been_trained(tmp_path):
    with pytest.raises(ConfigError, match=r"render.epochs \[100\] exceed"):
        load_params(write(tmp_path, "gan: {epochs: 50}\nrender: {epochs: [25, 100]}\n"))


def test_custom_dataset_needs_all_checksums(tmp_path):
    with pytest.raises(ConfigError, match="custom_sha256"):
        load_params(write(tmp_path, "data: {dataset: custom}\n"))
    with pytest.raises(ConfigError, match="only allowed with dataset 'custom'"):
        load_params(write(tmp_path, f"data: {{dataset: mnist, custom_sha256: {{a: '{'0' * 64}'}}}}\n"))


def test_runtime_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_THREADS", "1")
    monkeypatch.setenv("GENLAB_DEVICE", "cpu")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("GENLAB_DATA_MIRROR", "mirror")
    rt = Runtime()
    assert rt.threads == 1
    assert rt.data_mirror == (tmp_path / "mirror").resolve()
    monkeypatch.setenv("GENLAB_DEVICE", "tpu")
    with pytest.raises(Exception, match="device"):
        Runtime()


def test_flatten():
    assert flatten({"gan": {"lr": 1e-4, "hidden": [1, 2]}, "seed": 0}) == {
        "gan.lr": 1e-4,
        "gan.hidden": [1, 2],
        "seed": 0,
    }


def test_gan_variant_applies_its_overrides():
    faithful = Params().gan.resolved()
    assert faithful["variant"] == "faithful" and faithful["beta1"] == 0.9 and "variants" not in faithful
    stable = Params(gan={"variant": "stable"}).gan.resolved()
    assert stable["variant"] == "stable" and stable["beta1"] == 0.5 and stable["real_label"] == 0.9
    assert {k: v for k, v in stable.items() if k not in ("variant", "beta1", "real_label")} == {
        k: v for k, v in faithful.items() if k not in ("variant", "beta1", "real_label")
    }
    with pytest.raises(ValueError, match="may not redefine 'faithful'"):
        Params(gan={"variants": {"faithful": {"lr": 1.0}}})


@pytest.mark.parametrize("stage", ["download", "train_classifier", "train_gan", "train_vae", "render", "evaluate"])
def test_stage_stops_on_bad_params_before_writing(tmp_path, stage):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["gan"]["epochs"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / f"{stage}.py")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "gan.epochs = -3" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
