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
