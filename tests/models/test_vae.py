from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genlab.models.vae.model import VAE, pixel_entropy


def test_shapes():
    vae = VAE(hidden=[32, 16], latent_dim=4)
    x = torch.rand(5, 784)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    assert vae.decode(vae.reparameterize(mu, logvar)).shape == (5, 784)
    assert [m.out_features for m in vae.modules() if isinstance(m, torch.nn.Linear)] == [32, 16, 8, 16, 32, 784]


def test_reparameterize_is_mu_plus_sigma_eps():
    mu, logvar = torch.full((20000, 1), 2.0), torch.full((20000, 1), math.log(9.0))
    z = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - 2.0) < 0.1 and abs(z.std().item() - 3.0) < 0.1
    mu.requires_grad_(True)
    VAE.reparameterize(mu, logvar).sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))


def test_kl_is_zero_at_the_prior():
    vae = VAE(hidden=[8], latent_dim=2)
    torch.nn.init.zeros_(vae.to_moments.weight)
    torch.nn.init.zeros_(vae.to_moments.bias)
    out = vae.loss(torch.rand(3, 784))
    assert out.kl.abs().item() < 1e-6
    assert torch.isclose(out.loss, out.reconstruction + out.kl)


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    x = (torch.rand(1, 784) > 0.7).float().repeat(64, 1)
    vae = VAE(hidden=[64], latent_dim=4)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        out = vae.loss(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_iwae_bound_tightens_with_k_and_equals_the_elbo_in_expectation_at_k1():
    torch.manual_seed(0)
    vae = VAE(hidden=[32], latent_dim=3)
    x = torch.rand(400, 784)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        elbo = -vae.loss(x, g).loss.item()
        k1 = vae.iwae_log_likelihood(x, 1, g).mean().item()
        k50 = vae.iwae_log_likelihood(x, 50, g).mean().item()
    # Both k = 1 and the ELBO estimate the same expectation (the KL analytically vs. by sampling).
    assert abs(k1 - elbo) < 0.01 * abs(elbo)
    assert k50 > k1  # a tighter (higher) lower bound on log p(x)
    assert vae.sample_prior(7, g).shape == (7, 3)


def test_generate_decodes_prior_draws_into_the_shared_convention():
    torch.manual_seed(0)
    vae = VAE(hidden=[16], latent_dim=3)
    z = vae.sample_prior(4)
    assert torch.equal(vae.generate(z).flatten(1), vae.decode(z))
    assert vae.generate(z).shape == (4, 1, 28, 28)


def test_conditional_vae_conditions_encoder_decoder_and_bound():
    torch.manual_seed(0)
    vae = VAE(hidden=[16], latent_dim=3, conditional=True)
    linears = [m for m in vae.modules() if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == 794 and vae.decoder[0].in_features == 13
    x, y = torch.rand(5, 784), torch.tensor([0, 1, 2, 3, 4])
    g = torch.Generator().manual_seed(0)
    assert vae.loss(x, g, y).loss.shape == ()
    bound_y = vae.iwae_log_likelihood(x, 4, torch.Generator().manual_seed(1), y)
    bound_other = vae.iwae_log_likelihood(x, 4, torch.Generator().manual_seed(1), (y + 1) % 10)
    assert bound_y.shape == (5,) and not torch.equal(bound_y, bound_other)
    z = vae.sample_prior(2)
    assert not torch.equal(vae.generate(z, torch.tensor([0, 0])), vae.generate(z, torch.tensor([9, 9])))


def test_pixel_entropy_is_the_bce_floor():
    binary = (torch.rand(5, 784) > 0.5).float()
    assert pixel_entropy(binary) == pytest.approx(0.0)
    grey = torch.full((5, 784), 0.5)
    assert pixel_entropy(grey) == pytest.approx(784 * math.log(2))
    # BCE of any prediction is at least the entropy of the targets, equal when the prediction is the target.
    x = torch.rand(5, 784)
    logits = torch.randn(5, 784)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum").item() / 5
    assert bce > pixel_entropy(x)
    perfect = F.binary_cross_entropy(x.double(), x.double(), reduction="sum").item() / 5
    assert perfect == pytest.approx(pixel_entropy(x), rel=1e-6)
