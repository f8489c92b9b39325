from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from genlab import registry
from genlab.checkpoints import CheckpointError, load_checkpoint
from genlab.data import TrainingData
from genlab.errors import NonFiniteError

from .conftest import synthetic_digits

CPU = torch.device("cpu")
# Tiny networks of each kind: the sizes a unit test can train in well under a second.
SMALL = {
    "gan": dict(
        batch_size=50, latent_dim=8, generator_hidden=[32, 64], discriminator_hidden=[64, 32], num_fixed_samples=8
    ),
    "vae": dict(batch_size=50, hidden=[64, 32], latent_dim=4, num_reconstructions=4),
}


def digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = synthetic_digits(n, seed)
    return torch.from_numpy(x).reshape(n, -1).float() / 255, torch.from_numpy(y).long()


DATA = TrainingData(*digits(200, 1), *digits(60, 2))


def make_trainer(kind: str, seed: int = 0, *, diagnostics=None, world=None, **overrides):
    """A trainer built as pipeline/train.py builds one: typed section -> model -> trainer."""
    torch.manual_seed(seed)
    cfg = registry.config_class(kind)(**{**SMALL[kind], **overrides})
    model = registry.model_class(kind).from_config(cfg)
    config = {"seed": seed, kind: cfg.record()}
    return registry.trainer_class(kind)(
        model, cfg, DATA, name=kind, config=config, seed=seed, device=CPU, diagnostics=diagnostics, world=world
    )


def gan_trainer(seed: int = 0, **kwargs):
    return make_trainer("gan", seed, **kwargs)


def vae_trainer(seed: int = 0, **kwargs):
    return make_trainer("vae", seed, **kwargs)


def same_state(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("make_trainer", [gan_trainer, vae_trainer], ids=["gan", "vae"])
def test_two_runs_with_one_seed_are_bit_identical(make_trainer):
    a, b = make_trainer(), make_trainer()
    a.fit(3, log=quiet)
    b.fit(3, log=quiet)
    assert same_state(a.model.state_dict(), b.model.state_dict())
    assert a.history.metrics == b.history.metrics
    assert all(torch.equal(x, y) for x, y in zip(a.history.snapshots, b.history.snapshots, strict=True))
    c = make_trainer(seed=1)
    c.fit(1, log=quiet)
    assert c.history.metrics[0] != a.history.metrics[0]


def test_vae_training_lowers_the_test_loss():
    t = vae_trainer()
    t.fit(4, log=quiet)
    losses = [m["test_loss"] for m in t.history.metrics]
    assert losses[-1] < losses[0]


def test_gan_metrics_are_in_range():
    t = gan_trainer()
    t.fit(1, log=quiet)
    m = t.history.metrics[0]
    assert 0 <= m["d_real"] <= 1 and 0 <= m["d_fake"] <= 1 and 0 <= m["discriminator_accuracy"] <= 1
    assert t.history.snapshots[0].shape == (8, 28, 28) and t.history.snapshots[0].dtype == torch.uint8


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    straight = gan_trainer()
    straight.fit(4, log=quiet)

    state = tmp_path / "state.pt"
    first = gan_trainer()
    first.fit(2, state_path=state, checkpoint_every=1, log=quiet)
    torch.randn(100)  # the process that resumes has a different global RNG history
    resumed = gan_trainer()
    lines: list[str] = []
    resumed.fit(4, state_path=state, checkpoint_every=1, log=lines.append)
    assert "resumed" in lines[0]
    assert same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert straight.history.metrics == resumed.history.metrics


def test_checkpoint_describes_itself_and_loads_weights_only(tmp_path):
    t = vae_trainer()
    t.fit(1, state_path=tmp_path / "c.pt", log=quiet)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["kind"] == "vae" and state["epoch"] == 1 and state["config"] == t.config
    assert "name" not in state  # a model named as its kind: the header it always had
    assert state["torch_version"] and state["genlab_version"]
    assert "state" in state["optimizers"]["vae"]


def unusable_checkpoints(tmp_path) -> dict[str, Path]:
    """Files a resume could find at its state path: another configuration's, a truncated one, another kind's and
    one whose pickle would run code if loaded without weights_only."""
    other = vae_trainer(lr=2e-3)
    other.fit(1, state_path=tmp_path / "other.pt", log=quiet)
    good = (tmp_path / "other.pt").read_bytes()
    gan = gan_trainer()
    gan.fit(1, state_path=tmp_path / "gan.pt", log=quiet)

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    files = {
        "other configuration": good,
        "truncated": good[: len(good) // 2],
        "another kind": (tmp_path / "gan.pt").read_bytes(),
        "code in the pickle": pickle.dumps(Exploit()),
    }
    out = {}
    for label, blob in files.items():
        path = tmp_path / label.replace(" ", "_") / "state.pt"
        path.parent.mkdir()
        path.write_bytes(blob)
        out[label] = path
    return out


def test_an_unusable_resume_checkpoint_is_moved_aside_named_and_training_starts_afresh(tmp_path):
    fresh = vae_trainer()
    fresh.fit(2, log=quiet)
    for label, path in unusable_checkpoints(tmp_path).items():
        original = path.read_bytes()
        lines: list[str] = []
        t = vae_trainer()
        t.fit(2, state_path=path, log=lines.append)
        aside = [p for p in path.parent.iterdir() if ".unusable-" in p.name]
        assert len(aside) == 1 and aside[0].read_bytes() == original, label  # kept, for a look
        assert f"moved it to {aside[0]}" in lines[0] and "weights_only" not in lines[0], (label, lines[0])
        # From scratch, as if the file had never been there: the same weights as a fresh run.
        for key, value in fresh.model.state_dict().items():
            assert torch.equal(value, t.model.state_dict()[key]), (label, key)
    assert not (tmp_path / "pwned").exists()


def test_a_diverging_run_stops_at_that_epoch_and_saves_nothing(tmp_path):
    t = vae_trainer(lr=0.5)  # diverges on the tiny data within an epoch
    with pytest.raises(NonFiniteError, match=r"vae diverged in epoch 1: .* lower vae.lr \(now 0.5\)") as err:
        t.fit(3, state_path=tmp_path / "s.pt", log=quiet)
    assert err.value.epoch == 1 and t.history.metrics == [] and not (tmp_path / "s.pt").exists()


def test_a_non_finite_parameter_stops_training_though_the_loss_is_finite(tmp_path):
    t = gan_trainer()
    train_epoch = t.train_epoch

    def poisoned() -> dict[str, float]:
        metrics = train_epoch()
        if t.epoch == 1:  # the second epoch
            with torch.no_grad():
                next(t.model.parameters())[0, 0] = float("inf")
        return metrics

    t.train_epoch = poisoned  # type: ignore[method-assign]
    with pytest.raises(NonFiniteError, match=r"gan diverged in epoch 2: 1 of [\d,]+ parameters are not finite"):
        t.fit(3, state_path=tmp_path / "s.pt", checkpoint_every=1, log=quiet)
    assert load_checkpoint(tmp_path / "s.pt")["epoch"] == 1  # the last good epoch, resumable


def test_bf16_autocast_trains_and_changes_the_numbers():
    fp32, bf16 = gan_trainer(), gan_trainer(precision="bf16")
    fp32.fit(1, log=quiet)
    bf16.fit(1, log=quiet)
    assert all(math.isfinite(v) for v in bf16.history.metrics[0].values())
    assert bf16.history.metrics[0]["loss_d"] != fp32.history.metrics[0]["loss_d"]


@pytest.mark.slow
def test_compiled_networks_keep_their_state_dict_keys():
    t = vae_trainer(compile="default")
    plain = registry.model_class("vae").from_config(t.cfg)
    t.fit(1, log=quiet)
    assert t.model.state_dict().keys() == plain.state_dict().keys()
    assert math.isfinite(t.history.metrics[0]["test_loss"])


@pytest.mark.parametrize("make_trainer", [gan_trainer, vae_trainer], ids=["gan", "vae"])
def test_per_epoch_diagnostics_join_the_history_and_leave_training_alone(make_trainer):
    seen: list[torch.Tensor] = []

    def diagnostics(images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        assert labels is None
        seen.append(images)
        return {"mean_pixel": float(images.mean())}

    plain = make_trainer()
    watched = make_trainer(diagnostic_samples=30, diagnostics=diagnostics)
    plain.fit(2, log=quiet)
    watched.fit(2, log=quiet)
    assert [m["mean_pixel"] for m in watched.history.metrics] == [float(x.mean()) for x in seen]
    assert all(x.shape == (30, 784) and 0 <= x.min() and x.max() <= 1 for x in seen)
    assert not torch.equal(seen[0], seen[1])  # the model moved between epochs; the inputs are fixed
    # The diagnostics draw from their own stream: training is bit-identical with and without them.
    assert same_state(plain.model.state_dict(), watched.model.state_dict())


def test_classifier_training_and_loading(tmp_path):
    from genlab.checkpoints import CHECKPOINT_FORMAT
    from genlab.classifier_training import train_classifier
    from genlab.config import ClassifierConfig
    from genlab.feature_extractor import build_classifier, load_classifier
    from genlab.io import atomic_torch_save, weights_sha256
    from genlab.streams import make_generator

    from .conftest import synthetic_digits

    cfg = ClassifierConfig(channels=[4, 8], feature_dim=16).model_dump()
    x, y = synthetic_digits(500, seed=3)
    xs, ys = torch.from_numpy(x).reshape(500, -1).float() / 255, torch.from_numpy(y).long()
    torch.manual_seed(0)
    model = build_classifier(cfg)
    losses: list[float] = []
    train_classifier(
        model,
        xs,
        ys,
        epochs=3,
        batch_size=50,
        max_lr=0.01,
        rng=make_generator(0, 5),
        on_epoch=lambda e, v: losses.append(v),
    )
    assert len(losses) == 3 and losses[-1] < losses[0]
    state = {
        "format": CHECKPOINT_FORMAT,
        "kind": "classifier",
        "config": {"classifier": cfg},
        "model": model.state_dict(),
        "test_accuracy": 0.9,
        "weights_sha256": weights_sha256(model),
    }
    atomic_torch_save(tmp_path / "c.pt", state)
    loaded, record = load_classifier(tmp_path / "c.pt")
    assert record == {"test_accuracy": 0.9, "weights_sha256": weights_sha256(loaded)} and not loaded.training
    atomic_torch_save(tmp_path / "g.pt", {**state, "kind": "gan"})
    with pytest.raises(CheckpointError, match="not the classifier"):
        load_classifier(tmp_path / "g.pt")


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_conditional_trainers_draw_rows_of_digits_and_report_conditional_accuracy(kind):
    asked: list[torch.Tensor] = []

    def diagnostics(images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        asked.append(labels)
        return {"n": float(images.shape[0])}

    t = make_trainer(kind, conditional=True, num_fixed_samples=20, diagnostic_samples=30, diagnostics=diagnostics)
    t.fit(1, log=quiet)
    assert t.history.snapshots[0].shape == (20, 28, 28)  # ten rows of two, row k asking for digit k
    assert t.snapshot_extra() == {"nrow": 2}
    assert torch.equal(asked[0], torch.arange(30) % 10)
    latent, labels = t.sampler_example()
    assert t.model.sampler()(latent, labels).shape == (4, 1, 28, 28)


def test_two_conditional_runs_are_bit_identical_and_differ_from_the_unconditional():
    a, b = (
        make_trainer("gan", conditional=True, num_fixed_samples=10),
        make_trainer("gan", conditional=True, num_fixed_samples=10),
    )
    a.fit(2, log=quiet)
    b.fit(2, log=quiet)
    assert same_state(a.model.state_dict(), b.model.state_dict()) and a.history.metrics == b.history.metrics
    assert "conditional" in a.config["gan"] and "conditional" not in gan_trainer().config["gan"]


def test_the_stabiliser_variant_trains_repeatably_with_its_own_discriminator_rate():
    def stabilised():
        return gan_trainer(
            spectral_norm=True, loss="hinge", ema_decay=0.99, lr=1e-4, discriminator_lr=4e-4, beta1=0.0, beta2=0.9
        )

    a, b = stabilised(), stabilised()
    assert [g["lr"] for g in a.opt_d.param_groups] == [4e-4] and [g["lr"] for g in a.opt_g.param_groups] == [1e-4]
    a.fit(2, log=quiet)
    b.fit(2, log=quiet)
    assert same_state(a.model.state_dict(), b.model.state_dict())
    assert a.history.metrics == b.history.metrics
    # The snapshots come from the average, which moved away from its copy of the initial generator.
    average = a.model.generator_average
    assert int(average.n_averaged) == 2 * 4  # 200 images in batches of 50, two epochs
    assert not torch.equal(a.history.snapshots[0], a.history.snapshots[1])


def test_the_r1_penalty_is_refused_under_torchrun_naming_the_key():
    from genlab.config import ConfigError
    from genlab.distributed import World

    with pytest.raises(ConfigError, match=r"gan.r1_gamma = 10: the R1 penalty does not run under torchrun"):
        gan_trainer(r1_gamma=10.0, world=World(rank=0, size=2))
