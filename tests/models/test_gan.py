from __future__ import annotations

import pytest
import torch

from genlab.models.gan.model import GAN, Dropout


def small_gan(**kw) -> GAN:
    return GAN(latent_dim=8, generator_hidden=[16, 32], discriminator_hidden=[32, 16], **kw)


def test_shapes_and_ranges():
    gan = small_gan()
    z = gan.sample_noise(5)
    assert z.shape == (5, 8)
    x = gan.generator(z)
    assert x.shape == (5, 784) and x.min() >= -1 and x.max() <= 1
    assert gan.discriminator(x).shape == (5,)


def test_every_size_is_a_constructor_argument():
    gan = GAN(latent_dim=3, generator_hidden=[7], discriminator_hidden=[5, 4], image_dim=10)
    assert [m.out_features for m in gan.generator.modules() if isinstance(m, torch.nn.Linear)] == [7, 10]
    assert [m.out_features for m in gan.discriminator.modules() if isinstance(m, torch.nn.Linear)] == [5, 4, 1]
    assert sum(isinstance(m, Dropout) for m in gan.discriminator.modules()) == 2


def test_dropout_matches_the_bernoulli_distribution():
    torch.manual_seed(0)
    d = Dropout(0.3)
    y = d(torch.ones(1000, 1000))
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.002
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))
    d.eval()
    assert torch.equal(d(torch.ones(3)), torch.ones(3))


def test_losses():
    torch.manual_seed(0)
    gan = small_gan(real_label=0.9)
    real, fake = torch.rand(6, 784) * 2 - 1, gan.generator(gan.sample_noise(4))
    loss_d, real_logits, fake_logits = gan.discriminator_loss(real, fake.detach())
    assert real_logits.shape == (6,) and fake_logits.shape == (4,)
    assert loss_d.item() > 0
    loss_g, logits = gan.generator_loss(fake)
    # Non-saturating loss: BCE against the "real" label is -log sigmoid(logit).
    assert torch.allclose(loss_g, -torch.nn.functional.logsigmoid(logits).mean())


def test_discriminator_steps_lower_its_loss():
    torch.manual_seed(0)
    gan = small_gan(dropout=0.0)
    real = torch.rand(64, 784) * 2 - 1
    fake = gan.generator(gan.sample_noise(64)).detach()
    opt = torch.optim.Adam(gan.discriminator.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss, _, _ = gan.discriminator_loss(real, fake)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_generate_and_sample_follow_the_shared_convention():
    torch.manual_seed(0)
    gan = small_gan()
    z = gan.sample_noise(5)
    images = gan.generate(z)
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images.flatten(1), (gan.generator(z) + 1) / 2)  # the tanh range mapped to [0, 1]
    assert gan.sample(3, torch.Generator().manual_seed(1)).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="unconditional"):
        gan.sample(3, labels=torch.zeros(3, dtype=torch.long))


def test_conditional_gan_uses_the_label_in_both_networks():
    torch.manual_seed(0)
    gan = small_gan(conditional=True, dropout=0.0)
    gan.eval()
    z = gan.sample_noise(1).repeat(2, 1)
    sevens, ones = gan.generate(z, torch.tensor([7, 7])), gan.generate(z, torch.tensor([1, 1]))
    assert torch.allclose(sevens[0], sevens[1]) and not torch.allclose(sevens, ones)
    x = torch.rand(2, 784) * 2 - 1
    torch.nn.init.normal_(gan.discriminator.embed.weight)
    assert not torch.equal(gan.discriminator(x, torch.tensor([3, 3])), gan.discriminator(x, torch.tensor([4, 4])))
    with pytest.raises(ValueError, match="conditional"):
        gan.sample(2)
    with pytest.raises(ValueError, match="0..9"):
        gan.sample(2, labels=torch.tensor([3, 12]))


def test_projection_discriminator_adds_the_label_embedding_dot_the_features():
    """Miyato & Koyama 2018, eq. 3: D(x, y) = psi(phi(x)) + embed(y) . phi(x)."""
    torch.manual_seed(0)
    d = small_gan(conditional=True, dropout=0.0).discriminator
    x, y = torch.rand(4, 784), torch.tensor([0, 1, 2, 3])
    phi = d.net[:-1](x)
    assert torch.allclose(d(x, y), d.net[-1](phi).squeeze(-1) + (d.embed(y) * phi).sum(1))


def test_unconditional_gan_has_the_parameters_it_had_before_conditioning():
    # Its checkpoints (and their hashes) depend on the state_dict's keys.
    keys = list(small_gan().state_dict())
    assert not any("embed" in k for k in keys)
    assert small_gan().generator.net[0].in_features == 8
    assert small_gan(conditional=True).generator.net[0].in_features == 18


# -- stabilisers ---------------------------------------------------------------------------------------------------


def test_spectral_norm_makes_every_discriminator_layer_one_lipschitz():
    torch.manual_seed(0)
    d = small_gan(spectral_norm=True, conditional=True).discriminator
    d.train()
    x, y = torch.rand(8, 784), torch.arange(8)
    for _ in range(30):  # power iterations run in training forward passes
        d(x, y)
    d.eval()
    for module in [*d.net, d.embed]:
        if hasattr(module, "parametrizations"):
            assert float(torch.linalg.matrix_norm(module.weight.detach(), ord=2)) == pytest.approx(1.0, abs=1e-2)
    layers = [m for m in [*d.net, d.embed] if hasattr(m, "parametrizations")]
    assert len(layers) == 4  # two hidden layers, the output layer and the label embedding
    plain = small_gan(conditional=True).discriminator
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


def test_hinge_losses_follow_lim_and_ye():
    gan = small_gan(loss="hinge", dropout=0.0)
    real, fake = torch.rand(4, 784) * 2 - 1, torch.rand(4, 784) * 2 - 1
    loss, real_logits, fake_logits = gan.discriminator_loss(real, fake)
    expected = torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean()
    assert torch.equal(loss, expected)
    g_loss, g_logits = gan.generator_loss(fake)
    assert torch.equal(g_loss, -g_logits.mean())
    bce, _, _ = small_gan(dropout=0.0).discriminator_loss(real, fake)
    assert bce.item() != loss.item()


def test_the_weight_average_samples_and_follows_the_generator():
    torch.manual_seed(0)
    gan = small_gan(ema_decay=0.9)
    assert gan.generator_average is not None and gan.sampling_generator is not gan.generator
    assert not any(p.requires_grad for p in gan.generator_average.parameters())
    z = gan.sample_noise(3)
    before = gan.generate(z)
    gan.update_average()  # the first update copies the generator
    assert torch.equal(gan.generate(z), before)
    start = [p.clone() for p in gan.generator.parameters()]
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.add_(1.0)
    gan.update_average()  # then: average <- 0.9 average + 0.1 generator
    for s, a in zip(start, gan.generator_average.module.parameters(), strict=True):
        assert torch.allclose(a, s + 0.1, atol=1e-6)
    assert not torch.equal(gan.generate(z), (gan.generator(z) + 1).div(2).reshape(-1, 1, 28, 28))
    plain = small_gan()
    assert plain.generator_average is None and plain.sampling_generator is plain.generator


def test_the_weight_average_is_saved_and_loaded_with_the_model(tmp_path):
    torch.manual_seed(0)
    gan = small_gan(ema_decay=0.99, spectral_norm=True)
    gan.update_average()
    torch.save(gan.state_dict(), tmp_path / "m.pt")
    torch.manual_seed(1)
    again = small_gan(ema_decay=0.99, spectral_norm=True)
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    z = gan.sample_noise(2)
    assert torch.equal(again.generate(z), gan.generate(z))
    assert any(k.startswith("generator_average.") for k in gan.state_dict())


def test_r1_penalises_the_squared_gradient_at_real_images_only():
    torch.manual_seed(0)
    plain, r1 = small_gan(dropout=0.0), small_gan(dropout=0.0, r1_gamma=10.0)
    r1.load_state_dict(plain.state_dict())
    real, fake = torch.rand(4, 784) * 2 - 1, torch.rand(4, 784) * 2 - 1
    base, _, _ = plain.discriminator_loss(real, fake)
    penalised, _, _ = r1.discriminator_loss(real, fake)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(plain.discriminator(x).sum(), x)
    assert torch.allclose(penalised - base, 5.0 * grad.pow(2).sum(1).mean())
    penalised.backward()  # the penalty's gradient reaches the discriminator's weights
    assert all(p.grad is not None for p in r1.discriminator.parameters())
    assert real.grad is None  # the caller's batch is left alone
