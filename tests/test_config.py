from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genlab.config import ConfigError, flatten, load_params, load_runtime, make_params
from genlab.models.gan.config import GanConfig
from genlab.models.vae.config import VaeConfig

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
    # params.yaml spells out every value (load_params requires it), so a reader sees all knobs in one place.
    p = load_params(REPO / "params.yaml")
    assert p.models == {"gan": "gan", "vae": "vae", "cgan": "gan", "cvae": "vae"}
    # The stabiliser variants are the GAN's own; the defaults keep only `stable`, which cgan uses.
    assert sorted(p.gan.variants) == [
        "ema",
        "ema-long",
        "r1-ema",
        "sn-hinge",
        "sn-hinge-ttur-ema",
        "stable",
        "ttur-ema",
    ]
    assert p.gan == GanConfig(variants=p.gan.variants) and p.vae == VaeConfig()
    assert p.cgan == GanConfig(conditional=True, num_fixed_samples=80, variant="stable")
    assert p.cvae == VaeConfig(conditional=True, num_fixed_samples=80)
    defaults = make_params({})
    for section in ("seed", "paths", "data", "classifier", "render", "identity", "evaluate"):
        assert getattr(p, section) == getattr(defaults, section), section


def only_model(name: str, kind_config, **values) -> dict:
    """The repository's params with one model, `name`, whose section is kind_config's defaults updated by values."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for model in params.pop("models"):
        del params[model]
    section = kind_config(**values).model_dump(exclude_none=True)
    return {"models": {name: kind_config.__name__[:3].lower()}, name: section, **params}


def test_models_name_their_kind_and_get_a_section_each(tmp_path):
    params = only_model("small", VaeConfig, epochs=3, conditional=True)
    params["render"]["epochs"] = [3]
    p = load_params(write(tmp_path, yaml.safe_dump(params)))
    assert p.models == {"small": "vae"} and p.model("small") == VaeConfig(epochs=3, conditional=True)
    with pytest.raises(ConfigError, match="unknown model kind 'dcgan'.*registered kinds: \\['gan', 'vae'\\]"):
        load_params(write(tmp_path, "models: {a: dcgan}\n"))
    with pytest.raises(ConfigError, match="'paths' is a reserved name"):
        load_params(write(tmp_path, "models: {paths: gan}\n"))
    with pytest.raises(ConfigError, match="unknown key 'cgan'"):  # a section for a model not in models
        load_params(write(tmp_path, "models: {gan: gan}\ncgan: {epochs: 3}\n"))
    with pytest.raises(ConfigError, match="a conditional model draws 10 rows"):
        load_params(write(tmp_path, "models: {c: gan}\nc: {conditional: true, num_fixed_samples: 64}\n"))


def test_unconditional_records_keep_the_keys_they_had_before_conditioning():
    # The record is stored in checkpoints: its keys decide the checkpoint's bytes, and so the recorded hashes.
    assert list(GanConfig().record()) == [
        "variant", "epochs", "batch_size", "latent_dim", "generator_hidden", "discriminator_hidden", "leaky_slope",
        "dropout", "lr", "beta1", "beta2", "real_label", "num_fixed_samples", "diagnostic_samples", "precision",
        "compile",
    ]  # fmt: skip
    assert list(VaeConfig().record()) == [
        "epochs", "batch_size", "hidden", "latent_dim", "lr", "num_reconstructions", "diagnostic_samples",
        "precision", "compile",
    ]  # fmt: skip
    assert GanConfig(conditional=True, num_fixed_samples=80).record()["conditional"] is True


def test_params_are_frozen():
    p = make_params({})
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
        ("gan", "variant", "stabel", ["gan = {...}", "variant 'stabel' is not defined", "'stable', 'ttur-ema']"]),
        ("gan", "variants", {"stable": {"beta3": 0.5}}, ["unknown key 'gan.variants.stable.beta3'"]),
        ("classifier", "min_test_accuracy", 1.5, ["classifier.min_test_accuracy", "less than 1"]),
        ("evaluate", "num_samples", 0, ["evaluate.num_samples", "greater than 0"]),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path, section, key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_params(with_change(tmp_path, section, key, value))
    for fragment in expected:
        assert fragment in str(err.value)


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
    rt = load_runtime()
    assert rt.threads == 1
    assert rt.data_mirror == (tmp_path / "mirror").resolve()
    assert rt.checkpoint_every == 1  # a kill loses at most one epoch


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GENLAB_THREADS", "-1", "GENLAB_THREADS = '-1': Input should be greater than or equal to 0"),
        ("GENLAB_THREADS", "many", "GENLAB_THREADS = 'many': Input should be a valid integer"),
        ("GENLAB_DEVICE", "tpu", "GENLAB_DEVICE = 'tpu': Input should be 'cpu' or 'cuda'"),
        ("GENLAB_CHECKPOINT_EVERY", "0", "GENLAB_CHECKPOINT_EVERY = '0': Input should be greater than 0"),
        ("GENLAB_OFFLINE", "maybe", "GENLAB_OFFLINE = 'maybe': Input should be a valid boolean"),
        ("GENLAB_TRACKING_URI", "127.0.0.1:5000", "GENLAB_TRACKING_URI = '127.0.0.1:5000': not a tracking URI"),
        ("GENLAB_EXPERIMENT", "", "GENLAB_EXPERIMENT = '': String should have at least 1 character"),
    ],
)
def test_a_bad_environment_variable_is_named(variable, value, expected):
    with pytest.raises(ConfigError) as err:
        load_runtime({variable: value})
    assert str(err.value) == f"environment: {expected}" or str(err.value).startswith(f"environment: {expected}")


def test_flatten():
    assert flatten({"gan": {"lr": 1e-4, "hidden": [1, 2]}, "seed": 0}) == {
        "gan.lr": 1e-4,
        "gan.hidden": [1, 2],
        "seed": 0,
    }


def test_gan_variant_applies_its_overrides():
    faithful = make_params({}).gan.record()
    assert faithful["variant"] == "faithful" and faithful["beta1"] == 0.9 and "variants" not in faithful
    stable = make_params({"gan": {"variant": "stable"}}).gan.record()
    assert stable["variant"] == "stable" and stable["beta1"] == 0.5 and stable["real_label"] == 0.9
    assert {k: v for k, v in stable.items() if k not in ("variant", "beta1", "real_label")} == {
        k: v for k, v in faithful.items() if k not in ("variant", "beta1", "real_label")
    }
    with pytest.raises(ValueError, match="may not redefine 'faithful'"):
        make_params({"gan": {"variants": {"faithful": {"lr": 1.0}}}})


@pytest.mark.parametrize(
    "command", ["download", "train_classifier", "train gan", "train vae", "render gan", "evaluate gan", "evaluate real"]
)
def test_stage_stops_on_bad_params_before_writing(tmp_path, command):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["gan"]["epochs"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script, *args = command.split()
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / f"{script}.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "gan.epochs = -3" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_missing_key_or_section_is_an_error_that_names_it_and_its_default(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["gan"]["epochs"]
    with pytest.raises(ConfigError, match=r"missing gan.epochs \(default 100\)\. Write every value out"):
        load_params(write(tmp_path, yaml.safe_dump(params)))
    del params["vae"]
    with pytest.raises(ConfigError, match=r"missing gan.epochs \(default 100\), vae \(a whole section\)\. Write"):
        load_params(write(tmp_path, yaml.safe_dump(params)))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["seed"]
    with pytest.raises(ConfigError, match=r"missing seed \(default 0\)"):
        load_params(write(tmp_path, yaml.safe_dump(params)))


def test_an_empty_file_and_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml: the file is empty"):
        load_params(write(tmp_path, ""))
    text = (REPO / "params.yaml").read_text()
    with pytest.raises(ConfigError, match=r"key 'gan' appears twice \(first on line \d+\); keep one"):
        load_params(write(tmp_path, text + "gan:\n  epochs: 3\n"))
    with pytest.raises(ConfigError, match=r"key 'epochs' appears twice"):
        load_params(write(tmp_path, text.replace("  epochs: 100\n", "  epochs: 100\n  epochs: 5\n", 1)))


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("gan", "lr", float("inf"), "gan.lr = inf: Input should be a finite number"),
        ("vae", "lr", float("nan"), "vae.lr = nan: Input should be a finite number"),
        ("gan", "lr", 1e6, "gan.lr = 1000000.0: Input should be less than or equal to 1"),
        ("gan", "batch_size", 1e9, "gan.batch_size = 1000000000.0: Input should be less than or equal to 100000"),
        ("gan", "num_fixed_samples", 10**9, "gan.num_fixed_samples = 1000000000: Input should be less than or equal"),
        ("gan", "epochs", 10**6, "gan.epochs = 1000000: Input should be less than or equal to 10000"),
        ("evaluate", "num_samples", 10**9, "evaluate.num_samples = 1000000000: Input should be less than or equal"),
        ("render", "epochs", [], "render.epochs = []: List should have at least 1 item"),
        ("models", "gan", None, "models must map model names to kinds"),
        ("paths", "figures", "../../outside", "paths.figures = '../../outside': must be a relative path inside"),
        ("paths", "model_dir", "/tmp/models", "paths.model_dir = '/tmp/models': must be a relative path inside"),
        ("paths", "data", ".", "paths.data = '.': must be a relative path inside"),
        ("paths", "state", "a/../../b", "paths.state = 'a/../../b': must be a relative path inside"),
    ],
)
def test_non_finite_absurd_and_escaping_values_are_refused(tmp_path, section, key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_params(with_change(tmp_path, section, key, value))
    assert f"params.yaml: {expected}" in str(err.value)


def test_faithful_records_no_stabiliser_key_and_a_variant_records_those_it_sets():
    # A record is stored in every checkpoint: the faithful GAN's must keep the keys (and so the bytes) it had.
    p = load_params(REPO / "params.yaml")
    faithful = set(p.gan.record())
    assert not faithful & {"loss", "spectral_norm", "ema_decay", "discriminator_lr", "r1_gamma"}
    recipe = p.gan.model_copy(update={"variant": "sn-hinge-ttur-ema"}).record()
    assert set(recipe) - faithful == {"loss", "spectral_norm", "ema_decay", "discriminator_lr"}
    assert (recipe["loss"], recipe["discriminator_lr"], recipe["lr"]) == ("hinge", 4e-4, 1e-4)


def test_hinge_loss_refuses_label_smoothing_naming_the_variant(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["gan"]["variants"]["smooth-hinge"] = {"loss": "hinge", "real_label": 0.9}
    load_params(write(tmp_path, yaml.safe_dump(params)))  # defined but not chosen: no error
    params["gan"]["variant"] = "smooth-hinge"
    with pytest.raises(ConfigError, match=r"variant 'smooth-hinge': real_label = 0.9 .* bce loss only"):
        load_params(write(tmp_path, yaml.safe_dump(params)))
