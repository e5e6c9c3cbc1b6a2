r"""The library objectives, each a short program over the primitives.

With :math:`w_k = p(x, z_k) / q(z_k)` for :math:`K` particles :math:`z_k \sim q`:

==============  ==================================================================  ==========
objective       program output (its expectation is the objective)                    reference
==============  ==================================================================  ==========
``ELBO``        :math:`\frac1K\sum_k \log w_k` (per-site terms, Rao-Blackwellised)   Wingate &
                                                                                     Weber 2013
``IWAE``        :math:`\log\frac1K\sum_k w_k`                                        Burda et
                                                                                     al. 2016
``VIMCO``       IWAE with a leave-one-out signal for score-function sites           Mnih &
                                                                                     Rezende 2016
``Renyi``       :math:`\frac{1}{1-\alpha}\log\frac1K\sum_k w_k^{1-\alpha}`             Li & Turner
                                                                                     2016
``CUBO``        :math:`\frac1n\log\frac1K\sum_k w_k^n` (an upper bound: minimised)   Dieng et
                                                                                     al. 2017
``RWS``         IWAE's value; wake-p and wake-q gradients                           Bornschein
                                                                                     & Bengio
                                                                                     2015
==============  ==================================================================  ==========

Path-gradient switches: ``stl=True`` (sticking the landing, Roeder et al. 2017) on ``ELBO``
and ``IWAE``, ``IWAE(dreg=True)`` (doubly reparameterised gradients, Tucker et al. 2019).
Hierarchical guides (HVI, IWHVI, DIWHVI) live in :mod:`pplx.objectives.hierarchical`.
"""

from __future__ import annotations

from typing import Any

import torch

from pplx.objectives.base import Objective
from pplx.objectives.program import (
    Estimate,
    ObjectiveError,
    density,
    expectation,
    logmeanexp,
    simulate,
)


class ELBO(Objective):
    r"""The evidence lower bound :math:`\mathbb E_q[\log p(x, z) - \log q(z)]`.

    Args:
        num_particles: Particles averaged per estimate.
        stl: Sticking the landing: drop the score term of reparameterised sites (lower
            variance near the optimum; Roeder, Wu & Duvenaud 2017).
        max_plate_nesting: See :class:`~pplx.objectives.base.Objective`.
    """

    def __init__(
        self, num_particles: int = 1, stl: bool = False, max_plate_nesting: int | None = None
    ) -> None:
        super().__init__(num_particles, max_plate_nesting)
        self.stl = stl

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        log_q = q.log_prob_stl if self.stl else q.log_prob
        return expectation(p.log_prob - log_q)


class _GradScale(torch.autograd.Function):
    """Identity whose backward multiplies by a per-particle factor set after the forward."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, holder: dict, dim: int) -> torch.Tensor:
        ctx.holder, ctx.dim = holder, dim
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        factor = ctx.holder["factor"]
        shape = [1] * grad.dim()
        shape[ctx.dim] = factor.shape[-1]
        return grad * factor.reshape(shape), None, None


class IWAE(Objective):
    r"""The importance-weighted bound :math:`\mathbb E[\log\frac1K\sum_k w_k]` (Burda et al.).

    Args:
        num_particles: :math:`K`; the bound tightens as :math:`K` grows.
        stl: Sticking the landing for reparameterised sites.
        dreg: Doubly reparameterised gradient (Tucker, Lawson, Gu & Maddison 2019): the guide's
            reparameterised gradient :math:`\sum_k \tilde w_k^2\,\partial_z\log w_k\,
            \partial_\phi z_k` with :math:`\tilde w = \mathrm{softmax}(\log w)`, the model's
            :math:`\sum_k \tilde w_k\nabla_\theta\log p(x, z_k)`. Unbiased for the IWAE gradient
            and its signal-to-noise ratio does not vanish as :math:`K` grows.
        max_plate_nesting: See :class:`~pplx.objectives.base.Objective`.
    """

    def __init__(
        self,
        num_particles: int = 2,
        stl: bool = False,
        dreg: bool = False,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting)
        self.stl = stl
        self.dreg = dreg

    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        r""":math:`\log w_k` of one draw (last dimension: particles)."""
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        log_q = q.log_prob_stl if self.stl else q.log_prob
        return (p.log_prob - log_q).total()

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        if not self.dreg:
            return logmeanexp(self.log_weights(model, guide, *args, **kwargs))
        q = simulate(guide, *args, **kwargs)
        holder: dict = {}
        values = {}
        for record in q.records:
            name = record.key[1]
            if record.strategy is not None and record.strategy.pathwise:
                dim = -(q.plate_nesting + 1 + record.fn.event_dim)
                values[name] = _GradScale.apply(q.values[name], holder, dim)
            else:
                values[name] = q.values[name]
        p = density(model, q, *args, values=values, **kwargs)
        log_q = q.log_prob_at(values, stl=True)
        log_w = (p.log_prob - log_q).total()
        weights = torch.softmax(log_w.detach(), -1)
        holder["factor"] = weights
        value = logmeanexp(log_w)
        path = (weights * log_w).sum(-1)
        return Estimate(value.detach() + path - path.detach())

    def __repr__(self) -> str:
        return f"IWAE(num_particles={self.num_particles}, dreg={self.dreg}, stl={self.stl})"


class VIMCO(IWAE):
    r"""IWAE with the VIMCO leave-one-out learning signal (Mnih & Rezende 2016).

    For score-function sites of particle :math:`k` the learning signal is
    :math:`\hat L - \hat L_{-k}`, where :math:`\hat L_{-k}` replaces :math:`\log w_k` by the
    mean of the other particles' log weights. It is unbiased because :math:`\hat L_{-k}` does
    not depend on particle :math:`k`.
    """

    def __init__(self, num_particles: int = 2, max_plate_nesting: int | None = None) -> None:
        if num_particles < 2:
            raise ValueError(f"VIMCO needs num_particles >= 2, got {num_particles}")
        super().__init__(num_particles, max_plate_nesting=max_plate_nesting)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        log_w = self.log_weights(model, guide, *args, **kwargs)
        value = logmeanexp(log_w)
        k = log_w.shape[-1]
        detached = log_w.detach()
        others = (detached.sum(-1, keepdim=True) - detached) / (k - 1)
        eye = torch.eye(k, dtype=torch.bool, device=log_w.device)
        swapped = torch.where(eye, others.unsqueeze(-1), detached.unsqueeze(-2))
        signal = value.detach().unsqueeze(-1) - logmeanexp(swapped)
        return Estimate(value, signal)


class Renyi(IWAE):
    r"""The variational Rényi bound (Li & Turner 2016).

    :math:`\frac{1}{1-\alpha}\log\frac1K\sum_k w_k^{1-\alpha}`.

    :math:`\alpha = 0` is IWAE; :math:`\alpha \to 1` the ELBO (the per-particle average of
    :math:`\log w_k`). Unlike Pyro's ``RenyiELBO``, non-reparameterisable and local latent
    sites are allowed: their gradients come from the sites' strategies (REINFORCE with a
    baseline, MVD or enumeration where it applies).
    """

    def __init__(
        self, alpha: float = 0.0, num_particles: int = 2, max_plate_nesting: int | None = None
    ) -> None:
        super().__init__(num_particles, max_plate_nesting=max_plate_nesting)
        self.alpha = float(alpha)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        log_w = self.log_weights(model, guide, *args, **kwargs)
        if self.alpha == 1.0:
            return log_w.mean(-1)
        return logmeanexp((1.0 - self.alpha) * log_w) / (1.0 - self.alpha)

    def __repr__(self) -> str:
        return f"Renyi(alpha={self.alpha}, num_particles={self.num_particles})"


class CUBO(IWAE):
    r"""The :math:`\chi` upper bound :math:`\frac1n\log\frac1K\sum_k w_k^n` (Dieng et al. 2017).

    An upper bound on :math:`\log p(x)` for :math:`n \ge 1` (in expectation, up to the
    finite-:math:`K` bias of the log); ``loss`` returns the bound itself, which SVI minimises.
    """

    maximize = False

    def __init__(
        self, n: float = 2.0, num_particles: int = 2, max_plate_nesting: int | None = None
    ) -> None:
        if n < 1:
            raise ValueError(f"CUBO needs n >= 1 for an upper bound, got {n}")
        super().__init__(num_particles, max_plate_nesting=max_plate_nesting)
        self.n = float(n)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        log_w = self.log_weights(model, guide, *args, **kwargs)
        return logmeanexp(self.n * log_w) / self.n

    def __repr__(self) -> str:
        return f"CUBO(n={self.n}, num_particles={self.num_particles})"


class RWS(Objective):
    r"""Reweighted wake-sleep (Bornschein & Bengio 2015; Le et al. 2019).

    Particles :math:`z_k \sim q` are drawn without gradient paths and weighted by
    :math:`\tilde w = \mathrm{softmax}(\log w)`. The value is the IWAE estimate; the gradient is

    * wake-p (model parameters): :math:`\sum_k \tilde w_k \nabla_\theta\log p_\theta(x, z_k)`,
    * wake-q (guide parameters): :math:`\sum_k \tilde w_k \nabla_\phi\log q_\phi(z_k)`, which
      minimises :math:`\mathrm{KL}(p(z\mid x)\,\|\,q(z))`.

    Any site works (discrete ones too) because nothing is differentiated through a sample.
    Minibatches from ``pyro.plate(..., subsample_size=...)`` scale the likelihood as usual.

    Args:
        num_particles: :math:`K \ge 2`.
        wake: ``"both"``, ``"p"`` (model only) or ``"q"`` (guide only).
    """

    def __init__(
        self, num_particles: int = 5, wake: str = "both", max_plate_nesting: int | None = None
    ) -> None:
        if wake not in ("both", "p", "q"):
            raise ValueError(f"RWS: wake must be 'both', 'p' or 'q', got {wake!r}")
        if num_particles < 2:
            raise ValueError(f"RWS needs num_particles >= 2, got {num_particles}")
        super().__init__(num_particles, max_plate_nesting)
        self.wake = wake

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        q = simulate(guide, *args, detach=True, **kwargs)
        p = density(model, q, *args, **kwargs)
        log_p, log_q = p.log_prob.total(), q.log_prob.total()
        log_w = log_p - log_q
        weights = torch.softmax(log_w.detach(), -1)
        value = logmeanexp(log_w).detach()
        wake = torch.zeros_like(value)
        if self.wake in ("both", "p"):
            wake = wake + (weights * log_p).sum(-1)
        if self.wake in ("both", "q"):
            wake = wake + (weights * log_q).sum(-1)
        return Estimate(value + wake - wake.detach())

    def __repr__(self) -> str:
        return f"RWS(num_particles={self.num_particles}, wake={self.wake!r})"


def check_particles(objective: Objective, minimum: int) -> None:
    """Raise if ``objective`` has fewer than ``minimum`` particles."""
    if objective.num_particles < minimum:
        raise ObjectiveError(
            f"{type(objective).__name__} needs num_particles >= {minimum}, got "
            f"{objective.num_particles}"
        )
