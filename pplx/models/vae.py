r"""Variational autoencoders as plain Pyro model + guide pairs (Kingma & Welling 2014).

:class:`VAE`: Gaussian latents :math:`z_n \sim N(0, I)`, Bernoulli pixels
:math:`x_n \mid z_n \sim \mathrm{Bernoulli}(\sigma(f_\theta(z_n)))`, amortised Gaussian guide
:math:`q_\phi(z_n \mid x_n) = N(\mu_\phi(x_n), \mathrm{diag}\,\sigma^2_\phi(x_n))`.

:class:`SigmoidBeliefVAE`: the same with binary latents, :math:`z_{n,h} \sim
\mathrm{Bernoulli}(\pi)` and a Bernoulli guide :math:`q_\phi(z_n\mid x_n) =
\mathrm{Bernoulli}(\sigma(g_\phi(x_n)))`, a discrete-latent model whose gradients need
REINFORCE, enumeration or measure-valued derivatives.

:class:`DiscreteVAE`: one Categorical class per image, pixels decoded from its one-hot code;
small enough that the exact ELBO and :math:`\log p(x)` are sums over the classes.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian-latent VAE with MLP encoder and decoder (one hidden layer each).

    Args:
        x_dim: Number of (binary) pixels.
        hidden: Hidden units.
        z_dim: Latent dimension.
    """

    def __init__(self, x_dim: int = 784, hidden: int = 256, z_dim: int = 16) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = _mlp([x_dim, hidden, 2 * z_dim])
        self.decoder = _mlp([z_dim, hidden, x_dim])

    def model(self, x: torch.Tensor) -> None:
        """The generative model, vectorized over the batch with ``pyro.plate("data")``."""
        pyro.module("decoder", self.decoder)
        zero = x.new_zeros(self.z_dim)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(zero, 1.0).to_event(1))
            logits = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The amortised Gaussian guide."""
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))


class SigmoidBeliefVAE(nn.Module):
    """Binary-latent VAE (a one-layer sigmoid belief network with an amortised guide).

    Args:
        x_dim: Number of (binary) pixels.
        hidden: Hidden units of the encoder and decoder MLPs.
        z_dim: Number of binary latents per data point.
        prior: Prior probability of each latent bit.
    """

    def __init__(
        self, x_dim: int = 64, hidden: int = 64, z_dim: int = 8, prior: float = 0.5
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.prior = prior
        self.encoder = _mlp([x_dim, hidden, z_dim])
        self.decoder = _mlp([z_dim, hidden, x_dim])

    def model(self, x: torch.Tensor) -> None:
        """The generative model."""
        pyro.module("decoder", self.decoder)
        probs = x.new_full((self.z_dim,), self.prior)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(probs).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The amortised Bernoulli guide."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))


class DiscreteVAE(nn.Module):
    """Per image a class ``c`` (Categorical) and Bernoulli pixels decoded from ``one_hot(c)``."""

    def __init__(self, x_dim: int = 64, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, num_classes)
        )
        self.decoder = nn.Sequential(
            nn.Linear(num_classes, hidden), nn.Softplus(), nn.Linear(hidden, x_dim)
        )

    def model(self, x: torch.Tensor) -> None:
        """The generative model (vectorized over the minibatch)."""
        pyro.module("decoder", self.decoder)
        probs = x.new_full((self.num_classes,), 1.0 / self.num_classes)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(probs))
            onehot = nn.functional.one_hot(c.long(), self.num_classes).to(x.dtype)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(onehot)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """The amortised guide q(c | x)."""
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=self.encoder(x)))

    @torch.no_grad()
    def exact(self, x: torch.Tensor) -> tuple[float, float]:
        """Exact ELBO and log p(x) per image (the class summed out)."""
        log_q = torch.log_softmax(self.encoder(x), -1)
        logits = self.decoder(torch.eye(self.num_classes, dtype=x.dtype, device=x.device))
        log_lik = dist.Bernoulli(logits=logits.unsqueeze(1)).log_prob(x).sum(-1).T
        log_joint = log_lik - math.log(self.num_classes)
        elbo = (log_q.exp() * (log_joint - log_q)).sum(-1)
        return float(elbo.mean()), float(torch.logsumexp(log_joint, -1).mean())
