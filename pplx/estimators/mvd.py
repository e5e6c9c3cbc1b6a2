r"""Measure-valued derivatives (weak derivatives) of the distributions pplx supports.

A weak derivative writes the derivative of a density in a parameter :math:`\vartheta` as a
signed combination of distributions, :math:`\partial_\vartheta q_\vartheta = \sum_b
c_b\,q_b`, so that :math:`\partial_\vartheta \mathbb E_{q_\vartheta}[f] = \sum_b c_b\,
\mathbb E_{q_b}[f]` (Pflug 1989; Mohamed, Rosca, Figurnov & Mnih 2020, section 6). Each
*branch* :math:`b` gives a value drawn from :math:`q_b` (coupled with the primal draw where
possible) and a *weight* whose gradient is :math:`c_b\nabla\vartheta`; the estimator of the
site's gradient contribution is :math:`\sum_b \nabla(\text{weight}_b)\,f(\text{value}_b)`.

==============  =====================================================================
distribution    decomposition (per element)
==============  =====================================================================
Bernoulli(p)    :math:`\partial_p`: :math:`f(1) - f(0)`
Categorical(p)  :math:`\partial_{p_j}`: :math:`f(j)` (centred by the mean over j, which
                is free because :math:`\sum_j \partial p_j = 0`)
Poisson(λ)      :math:`\partial_\lambda`: :math:`f(x + 1) - f(x)`, :math:`x \sim q`
Normal(μ, σ)    :math:`\partial_\mu`: :math:`\frac{1}{\sigma\sqrt{2\pi}}(f(\mu + \sigma R) -
                f(\mu - \sigma R))`, :math:`R \sim \mathrm{Rayleigh}(1)`;
                :math:`\partial_\sigma`: :math:`\frac1\sigma(f(\mu + \sigma M) - f(x))`,
                :math:`M` double-sided Maxwell, :math:`x \sim q`
==============  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributions as tdist

from pplx.estimators.strategies import base_distribution

SUPPORTED = ("Bernoulli", "Categorical", "Poisson", "Normal")


@dataclass
class Branch:
    """One term of a weak derivative.

    Attributes:
        value: The coupled value (detached), of the site's full value shape.
        weight: A tensor whose gradient is the branch's coefficient times the parameter's
            gradient; broadcasts against ``value`` without its event dimensions for
            Categorical, elementwise otherwise.
    """

    value: torch.Tensor
    weight: torch.Tensor


@dataclass
class Decomposition:
    """The branches of one site, and whether their downstream costs may be centred."""

    branches: list[Branch]
    centred: bool = False


def supports(fn: Any) -> bool:
    """Whether :func:`decompose` knows the (base) distribution of ``fn``."""
    return any(isinstance(base_distribution(fn), getattr(tdist, n)) for n in SUPPORTED)


def _double_sided_maxwell(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    r"""Draws with density :math:`x^2\varphi(x)`: a signed chi(3) variable."""
    radius = torch.randn((3,) + tuple(shape), dtype=like.dtype, device=like.device).norm(dim=0)
    sign = torch.randint(0, 2, tuple(shape), device=like.device).to(like.dtype) * 2 - 1
    return sign * radius


def _rayleigh(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    uniform = torch.rand(tuple(shape), dtype=like.dtype, device=like.device)
    return torch.sqrt(-2.0 * torch.log1p(-uniform))


def decompose(fn: Any, value: torch.Tensor) -> Decomposition:
    """The weak-derivative branches of ``fn`` at the primal draw ``value``."""
    base = base_distribution(fn)
    shape = value.shape
    if isinstance(base, tdist.Bernoulli):
        p = base.probs.expand(shape)
        one, zero = torch.ones_like(value), torch.zeros_like(value)
        return Decomposition([Branch(one, p), Branch(zero, -p)])
    if isinstance(base, tdist.Poisson):
        rate = base.rate.expand(shape)
        x = value.detach()
        return Decomposition([Branch(x + 1, rate), Branch(x, -rate)])
    if isinstance(base, tdist.Normal):
        loc, scale = base.loc.expand(shape), base.scale.expand(shape)
        loc_d, scale_d = loc.detach(), scale.detach()
        c_loc = 1.0 / (scale_d * (2 * torch.pi) ** 0.5)
        r = _rayleigh(shape, loc_d)
        m = _double_sided_maxwell(shape, loc_d)
        return Decomposition(
            [
                Branch(loc_d + scale_d * r, loc * c_loc),
                Branch(loc_d - scale_d * r, -loc * c_loc),
                Branch(loc_d + scale_d * m, scale / scale_d),
                Branch(value.detach(), -scale / scale_d),
            ]
        )
    if isinstance(base, tdist.Categorical):
        probs = base.probs
        num = probs.shape[-1]
        batch = shape
        probs = probs.expand(tuple(batch) + (num,))
        branches = [Branch(torch.full_like(value, j), probs[..., j]) for j in range(num)]
        return Decomposition(branches, centred=True)
    raise TypeError(f"no measure-valued derivative for {type(base).__name__}")
