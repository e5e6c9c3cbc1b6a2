r"""How many objects, and where: a small attend-infer-repeat style scene model.

In the spirit of AIR (Eslami et al., NeurIPS 2016, "Attend, Infer, Repeat"), reduced to what
makes its inference interesting: a discrete number of objects next to continuous positions.
An image of :math:`S \times S` pixels on :math:`[-1, 1]^2` shows :math:`n \in \{0, \dots,
M\}` round blobs:

.. math::

    n \sim \mathrm{Uniform}\{0, \dots, M\}, \qquad
    w_k \sim \mathcal N(a_k, \sigma_w^2 I_2)\ \ (k = 1, \dots, M), \qquad
    x \sim \mathcal N\Big(\sum_{k \le n} \exp\big(-\|g - w_k\|^2 / 2\rho^2\big),\
        \sigma_x^2 I\Big),

with pixel centres :math:`g`, blob radius :math:`\rho` and
object :math:`k`'s prior position :math:`a_k` on a circle of radius 1/2 (each slot has its own
region, which spares the guide AIR's ordering problem). Positions of absent objects
(:math:`k > n`) are drawn but not rendered. The guide reads the
image with an MLP: :math:`q(n \mid x)` is Categorical, built from per-slot presence
probabilities as AIR's sequential presence variables (the site needs REINFORCE, enumeration
or measure-valued derivatives) and :math:`q(w \mid x)` a diagonal Gaussian per slot
(reparameterised), so one program mixes gradient strategies, as AIR does.

Sites: ``"n"`` (batch), ``"where"`` (batch, event ``(M, 2)``) and ``"x"`` (batch, event
``(S * S,)``), in the plate ``"data"``; the model and guide broadcast over batch dimensions
left of the plate (particles, enumeration).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["ObjectCountVAE"]


class ObjectCountVAE(nn.Module):
    r"""Count and positions of up to ``max_objects`` blobs (model + amortised guide).

    Args:
        size: Image side :math:`S` in pixels.
        max_objects: Largest count :math:`M`.
        hidden: Hidden units of the guide's MLP.
        radius: Blob radius :math:`\rho` (in units of the image's half-width).
        where_scale: Prior scale :math:`\sigma_w` of the positions around their anchors.
        noise: Pixel noise :math:`\sigma_x`.
    """

    def __init__(
        self,
        size: int = 12,
        max_objects: int = 3,
        hidden: int = 64,
        *,
        radius: float = 0.2,
        where_scale: float = 0.1,
        noise: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("size", size), ("max_objects", max_objects), ("hidden", hidden)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("radius", radius), ("where_scale", where_scale), ("noise", noise)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.size, self.max_objects = size, max_objects
        self.radius, self.where_scale, self.noise = radius, where_scale, noise
        axis = torch.linspace(-1.0, 1.0, size)
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        self.register_buffer("grid", grid, persistent=False)  # pixel centres (S * S, 2)
        angle = 2 * torch.pi * torch.arange(max_objects) / max_objects
        anchors = 0.5 * torch.stack([angle.cos(), angle.sin()], -1)
        self.register_buffer("anchors", anchors, persistent=False)  # prior means (M, 2)
        self.encoder = nn.Sequential(
            nn.Linear(size * size, hidden),
            nn.Softplus(),
            nn.Linear(hidden, 5 * max_objects),  # presence logits, position locs and scales
        )
        # start at a uniform count and the prior's positions: rendering a slot then helps
        # from the first step, so the count does not collapse before positions are learned
        nn.init.zeros_(self.encoder[-1].weight)
        nn.init.zeros_(self.encoder[-1].bias)

    def render(self, n: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Noise-free images ``(..., S * S)`` of counts ``n`` and positions ``(..., M, 2)``."""
        sq = (self.grid - where.unsqueeze(-2)).pow(2).sum(-1)  # (..., M, S * S)
        blobs = torch.exp(-0.5 * sq / self.radius**2)
        slots = torch.arange(self.max_objects, device=where.device)
        present = (slots < n.unsqueeze(-1)).to(where.dtype)  # (..., M)
        return (present.unsqueeze(-1) * blobs).sum(-2)

    def model(self, x: torch.Tensor) -> None:
        """The scene model: count, positions, rendered image with Gaussian noise."""
        pyro.module("objects", self)
        m = self.max_objects
        with pyro.plate("data", x.shape[0]):
            n = pyro.sample("n", dist.Categorical(logits=x.new_zeros(m + 1)))
            where = pyro.sample(
                "where",
                dist.Normal(self.anchors.to(x), self.where_scale).to_event(2),
            )
            pyro.sample("x", dist.Normal(self.render(n, where), self.noise).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        r"""The amortised guide :math:`q(n \mid x)\, q(w \mid x)`."""
        pyro.module("objects", self)
        logits, loc, scale = self.read_out(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("n", dist.Categorical(logits=logits))
            pyro.sample("where", dist.Normal(loc, scale).to_event(2))

    def read_out(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The guide's parameters for images ``x``.

        Returns:
            Count log-probabilities ``(..., M + 1)`` and position means and scales
            ``(..., M, 2)``.
        """
        m = self.max_objects
        presence, loc, log_scale = self.encoder(x).split([m, 2 * m, 2 * m], -1)
        loc = self.anchors + loc.unflatten(-1, (m, 2))
        scale = nn.functional.softplus(log_scale.unflatten(-1, (m, 2)) - 3.0) + 1e-3  # 0.05
        return self.count_logits(presence), loc, scale

    @staticmethod
    def count_logits(presence: torch.Tensor) -> torch.Tensor:
        r"""Normalised log-probabilities of :math:`n` from per-slot presence logits ``(..., M)``.

        As AIR's sequential presence variables: slot :math:`k` is present with probability
        :math:`p_k = \sigma(a_k)` if slots :math:`1, \dots, k - 1` are, so
        :math:`q(n) = \prod_{k \le n} p_k\,(1 - p_{n+1})` (no last factor for
        :math:`n = M`). Each slot's logit then only has to detect its own object.
        """
        present = nn.functional.logsigmoid(presence)
        absent = nn.functional.logsigmoid(-presence)
        leading = torch.cat([torch.zeros_like(present[..., :1]), present.cumsum(-1)], -1)
        return leading + torch.cat([absent, torch.zeros_like(absent[..., :1])], -1)

    @torch.no_grad()
    def simulate(
        self, num: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` images from the model with a uniform count; returns ``(images, counts)``."""
        counts = torch.randint(self.max_objects + 1, (num,), generator=generator)
        where = self.where_scale * torch.randn(num, self.max_objects, 2, generator=generator)
        where = where + self.anchors.cpu()
        noise = self.noise * torch.randn(num, self.size**2, generator=generator)
        like = self.grid
        counts = counts.to(like.device)
        images = self.render(counts, where.to(like)) + noise.to(like)
        return images, counts

    @torch.no_grad()
    def count_accuracy(self, x: torch.Tensor, counts: torch.Tensor) -> float:
        """Fraction of images whose most probable count under the guide is the true one."""
        logits = self.read_out(x)[0]
        return float((logits.argmax(-1) == counts).to(x.dtype).mean())
