from __future__ import annotations

import torch

from genlab.models.gan import GAN, Dropout


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
