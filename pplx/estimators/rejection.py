r"""Reparameterisation through acceptance-rejection samplers.

Naesseth, Ruiz, Linderman & Blei, AISTATS 2017, "Reparameterization Gradients through
Acceptance-Rejection Sampling Algorithms".

The Marsaglia-Tsang sampler for :math:`\mathrm{Gamma}(\alpha, 1)`, :math:`\alpha \ge 1`,
proposes :math:`z = h(\epsilon, \alpha) = (\alpha - \tfrac13)(1 + \epsilon/\sqrt{9\alpha -
3})^3` with :math:`\epsilon \sim N(0, 1)` and accepts with a probability that makes :math:`z`
exactly Gamma-distributed. The accepted :math:`\epsilon` therefore has density
:math:`\pi(\epsilon; \alpha) = q_\alpha(h(\epsilon, \alpha))\,|\partial_\epsilon h(\epsilon,
\alpha)|`, and

.. math::

    \nabla_\alpha \mathbb E_{q_\alpha}[f(z)] = \mathbb E_\pi[\nabla_\alpha f(h(\epsilon,
    \alpha))] + \mathbb E_\pi[f(h(\epsilon, \alpha))\,\nabla_\alpha\log\pi(\epsilon;\alpha)].

Instead of replaying the rejection loop we draw an exact Gamma sample and invert :math:`h`,
which yields an accepted :math:`\epsilon` with the right law. Shape augmentation
(section 5 of the paper) uses :math:`\mathrm{Gamma}(\alpha) \overset{d}{=}
\mathrm{Gamma}(\alpha + B)\prod_{i=0}^{B-1} U_i^{1/(\alpha + i)}` and reparameterises the
uniforms, which also makes :math:`\alpha < 1` work.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributions as tdist

from pplx.estimators.strategies import base_distribution


def _standard_gamma(alpha: torch.Tensor, boost: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A Gamma(alpha, 1) draw with its pathwise graph, and :math:`\log\pi` of its noise."""
    shape = alpha + boost
    shape_d = shape.detach()
    exact = torch._standard_gamma(shape_d)
    root = torch.sqrt(9.0 * shape_d - 3.0)
    eps = (root * ((exact / (shape_d - 1.0 / 3.0)).pow(1.0 / 3.0) - 1.0)).detach()
    root_g = torch.sqrt(9.0 * shape - 3.0)
    inner = 1.0 + eps / root_g
    z = (shape - 1.0 / 3.0) * inner.pow(3)
    log_dh = torch.log(3.0 * (shape - 1.0 / 3.0) / root_g) + 2.0 * torch.log(inner.abs())
    log_pi = tdist.Gamma(shape, torch.ones_like(shape)).log_prob(z) + log_dh
    for i in range(boost):
        uniform = torch.rand_like(shape_d).clamp_min(torch.finfo(shape_d.dtype).tiny)
        z = z * uniform.pow(1.0 / (alpha + i))
    return z, log_pi


def sample(fn: Any, boost: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a Gamma, Beta or Dirichlet site by RSVI.

    Returns:
        ``(value, log_pi)``: the draw, differentiable in the distribution's parameters, and the
        log density of the accepted proposal noise summed over the site's event dimensions
        (its gradient is the correction term's score).
    """
    base = base_distribution(fn)
    batch_event = tuple(fn.batch_shape) + tuple(fn.event_shape)
    if isinstance(base, tdist.Dirichlet):
        conc = base.concentration.expand(batch_event)
        g, log_pi = _standard_gamma(conc, boost)
        value = g / g.sum(-1, keepdim=True)
        log_pi = log_pi.sum(-1)
        extra = fn.event_dim - 1
    elif isinstance(base, tdist.Beta):
        a = base.concentration1.expand(batch_event)
        b = base.concentration0.expand(batch_event)
        ga, log_pi_a = _standard_gamma(a, boost)
        gb, log_pi_b = _standard_gamma(b, boost)
        value = ga / (ga + gb)
        log_pi = log_pi_a + log_pi_b
        extra = fn.event_dim
    elif isinstance(base, tdist.Gamma):
        conc = base.concentration.expand(batch_event)
        g, log_pi = _standard_gamma(conc, boost)
        value = g / base.rate.expand(batch_event)
        extra = fn.event_dim
    else:  # pragma: no cover - guarded by RejectionReparam.check
        raise TypeError(f"RejectionReparam does not apply to {type(base).__name__}")
    if extra > 0:
        log_pi = log_pi.reshape(log_pi.shape[: log_pi.dim() - extra] + (-1,)).sum(-1)
    # keep draws strictly inside the support (Beta/Dirichlet rounding at the boundary)
    if isinstance(base, (tdist.Beta, tdist.Dirichlet)):
        tiny = torch.finfo(value.dtype).tiny
        value = value.clamp(tiny, 1 - torch.finfo(value.dtype).eps)
    return value, log_pi
