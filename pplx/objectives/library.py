r"""The library objectives, each a short program over the primitives.

With :math:`w_k = p(x, z_k) / q(z_k)` for :math:`K` particles :math:`z_k \sim q`, each
objective's value is the expectation of its program's output:

* ``ELBO``: :math:`\frac1K\sum_k \log w_k`, kept as per-site terms so score-function sites are
  Rao-Blackwellised (Wingate & Weber 2013; Ranganath et al. 2014).
* ``IWAE``: :math:`\log\frac1K\sum_k w_k` (Burda, Grosse & Salakhutdinov 2016).
* ``VIMCO``: IWAE with a leave-one-out learning signal for score-function sites (Mnih &
  Rezende 2016).
* ``Renyi``: :math:`\frac{1}{1-\alpha}\log\frac1K\sum_k w_k^{1-\alpha}` (Li & Turner 2016).
* ``CUBO``: :math:`\frac1n\log\frac1K\sum_k w_k^n`, an upper bound that SVI minimises (Dieng
  et al. 2017).
* ``RWS``: IWAE's value with the wake-p and wake-q gradients (Bornschein & Bengio 2015).

With ``local_plate="data"`` the importance-weighted objectives weight each data point
separately, :math:`\sum_n \log\frac1K\sum_k w_{k,n}`: a tighter bound when every latent is local
to the plate (amortised VAEs), and the one that stays valid with minibatches
(``pyro.plate(..., subsample_size=B)``: the sum over the minibatch is scaled by :math:`N/B`).

Path-gradient switches: ``stl=True`` (sticking the landing, Roeder et al. 2017) on ``ELBO``
and ``IWAE``, ``IWAE(dreg=True)`` (doubly reparameterised gradients, Tucker et al. 2019).
Hierarchical guides (HVI, IWHVI, DIWHVI) live in :mod:`pplx.objectives.hierarchical`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pplx.objectives.base import Objective
from pplx.objectives.program import (
    Estimate,
    ObjectiveError,
    closed_form_kl_terms,
    current_execution,
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
        analytic_kl: At reparameterised latent sites with a closed form
            (:func:`pplx.objectives.kl.kl_at`), use :math:`-\mathrm{KL}(q \,\|\, p)` instead
            of the Monte Carlo terms :math:`\log p(z) - \log q(z)` (Pyro's
            ``TraceMeanField_ELBO``): the same expectation, lower variance. Other sites keep
            their Monte Carlo terms. See :func:`~pplx.objectives.program.closed_form_kl_terms`.
    """

    def __init__(
        self,
        num_particles: int = 1,
        stl: bool = False,
        max_plate_nesting: int | None = None,
        analytic_kl: bool = False,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting)
        if stl and analytic_kl:
            raise ValueError(
                "ELBO(stl=True, analytic_kl=True): sticking the landing changes the gradient "
                "of the Monte Carlo log q terms that analytic_kl removes; choose one"
            )
        self.stl = stl
        self.analytic_kl = analytic_kl

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        if self.analytic_kl:
            return expectation(closed_form_kl_terms(q, p))
        log_q = q.log_prob_stl if self.stl else q.log_prob
        return expectation(p.log_prob - log_q)


class _GradScale(torch.autograd.Function):
    """Identity whose backward multiplies by a factor set after the forward (DReG)."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, holder: dict, event_dim: int) -> torch.Tensor:
        ctx.holder, ctx.event_dim = holder, event_dim
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        factor = ctx.holder["factor"]  # batch layout (K, *plates)
        return grad * factor.reshape(factor.shape + (1,) * ctx.event_dim), None, None


@dataclass
class LogWeights:
    """Log importance weights of one draw.

    Attributes:
        log_w: ``(..., K)``, or ``(..., N, K)`` per element of the local plate.
        scale: Factor for sums over the local plate's minibatch (:math:`N / B`), else 1.
        plate_dim: The local plate's batch dimension, or ``None``.
        log_p: The model's part, same shape as ``log_w``.
        log_q: The guide's part, same shape as ``log_w``.
    """

    log_w: torch.Tensor
    scale: float
    plate_dim: int | None
    log_p: torch.Tensor
    log_q: torch.Tensor

    def estimate(self, per_element: torch.Tensor, plate_nesting: int) -> Estimate:
        """An :class:`Estimate` from per-element values (global: one value per draw).

        With a local plate the value is the scaled sum over the plate, each element's score
        sites get their own element's value as learning signal, and measure-valued
        derivatives may force the plate's elements at once.
        """
        if self.plate_dim is None:
            return Estimate(per_element)
        elements = per_element * self.scale
        signal = None
        if torch.is_grad_enabled() and elements.dim() == 1:
            k = self.log_w.shape[-1]
            expanded = elements.detach().unsqueeze(-1).expand(elements.shape + (k,))
            signal = self.to_batch_layout(expanded, plate_nesting)
        return Estimate(elements.sum(-1), signal, elements, self.plate_dim)

    def reduce(self, per_element: torch.Tensor) -> torch.Tensor:
        """Sum a per-element quantity (shape ``(..., N)``) over the local plate."""
        if self.plate_dim is None:
            return per_element
        return per_element.sum(-1) * self.scale

    def to_batch_layout(self, x: torch.Tensor, plate_nesting: int) -> torch.Tensor:
        """``(N, K)`` or ``(K,)`` into the sites' batch layout ``(K, *plates)``."""
        num = x.shape[-1]
        if self.plate_dim is None:
            return x.reshape((num,) + (1,) * plate_nesting)
        shape = [num] + [1] * plate_nesting
        shape[plate_nesting + 1 + self.plate_dim] = x.shape[-2]
        return x.transpose(-1, -2).reshape(shape)


def log_weights(q, p, log_q: Any, local_plate: str | None) -> LogWeights:
    """Importance log weights from a draw, its model density and the guide terms to use."""
    if local_plate is None:
        lp, lq = p.log_prob.total(), log_q.total()
        return LogWeights(lp - lq, 1.0, None, lp, lq)
    frame = None
    for record in q.records:
        frames = {f.name: f for f in record.frames}
        if local_plate not in frames:
            raise ObjectiveError(
                f"local_plate={local_plate!r}: guide site {record.name!r} is not inside that "
                "plate; per-data-point weights need every latent local to the plate (use "
                "local_plate=None for models with global latents)"
            )
        frame = frames[local_plate]
    if frame is None or frame.dim is None:
        raise ObjectiveError(f"local_plate={local_plate!r} must be a vectorized plate")
    lp = p.log_prob.local_total(frame.dim)
    lq = log_q.local_total(frame.dim)
    # Pyro's frame holds the minibatch size; the site's scale is N / B (1 without subsampling)
    scale = float(q.trace.nodes[q.records[-1].key[1]]["scale"])
    # Pyro scaled every local term by N/B: undo it inside the log-mean-exp, reapply outside.
    return LogWeights((lp - lq) / scale, scale, frame.dim, lp / scale, lq / scale)


def _plate_nesting() -> int:
    """The running execution's plate nesting."""
    return current_execution().plate_nesting


class IWAE(Objective):
    r"""The importance-weighted bound :math:`\mathbb E[\log\frac1K\sum_k w_k]` (Burda et al.).

    Args:
        num_particles: :math:`K`; the bound tightens as :math:`K` grows.
        stl: Sticking the landing for reparameterised sites; only with one particle (it is
            biased for :math:`K > 1`: use ``dreg``).
        dreg: Doubly reparameterised gradient (Tucker, Lawson, Gu & Maddison 2019): the guide's
            reparameterised gradient :math:`\sum_k \tilde w_k^2\,\partial_z\log w_k\,
            \partial_\phi z_k` with :math:`\tilde w = \mathrm{softmax}(\log w)`, the model's
            :math:`\sum_k \tilde w_k\nabla_\theta\log p(x, z_k)`. Unbiased for the IWAE gradient
            and its signal-to-noise ratio does not vanish as :math:`K` grows.
        local_plate: Weight each element of this plate separately (see the module docstring).
        max_plate_nesting: See :class:`~pplx.objectives.base.Objective`.
    """

    def __init__(
        self,
        num_particles: int = 2,
        stl: bool = False,
        dreg: bool = False,
        local_plate: str | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting)
        if stl and num_particles > 1:
            raise ValueError(
                "IWAE(stl=True) with num_particles > 1 gives a biased gradient (sticking the "
                "landing drops sum_k w_k grad log q(z_k), whose expectation is not zero once the "
                "weights depend on z; Tucker et al. 2019): use IWAE(dreg=True), the unbiased "
                "path-gradient estimator"
            )
        self.stl = stl
        self.dreg = dreg
        self.local_plate = local_plate

    def weights(self, model, guide, *args, **kwargs) -> LogWeights:
        """Simulate the guide, score the model and return the :class:`LogWeights`."""
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        log_q = q.log_prob_stl if self.stl else q.log_prob
        return log_weights(q, p, log_q, self.local_plate)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        if not self.dreg:
            w = self.weights(model, guide, *args, **kwargs)
            return w.estimate(logmeanexp(w.log_w), _plate_nesting())
        q = simulate(guide, *args, **kwargs)
        holder: dict = {}
        values = {}
        for record in q.records:
            name = record.key[1]
            if record.strategy is not None and record.strategy.pathwise:
                event_dim = record.fn.event_dim
                values[name] = _GradScale.apply(q.values[name], holder, event_dim)
            else:
                values[name] = q.values[name]
        p = density(model, q, *args, values=values, **kwargs)
        w = log_weights(q, p, q.log_prob_at(values, stl=True), self.local_plate)
        normalized = torch.softmax(w.log_w.detach(), -1)
        if torch.is_grad_enabled():
            holder["factor"] = w.to_batch_layout(normalized, q.plate_nesting)
        value = w.reduce(logmeanexp(w.log_w))
        path = w.reduce((normalized * w.log_w).sum(-1))
        return Estimate(value.detach() + path - path.detach())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_particles={self.num_particles}, dreg={self.dreg}, "
            f"stl={self.stl}, local_plate={self.local_plate!r})"
        )


class VIMCO(IWAE):
    r"""IWAE with the VIMCO leave-one-out learning signal (Mnih & Rezende 2016).

    For score-function sites of particle :math:`k` the learning signal is
    :math:`\hat L - \hat L_{-k}`, where :math:`\hat L_{-k}` replaces :math:`\log w_k` by the
    mean of the other particles' log weights. It is unbiased because :math:`\hat L_{-k}` does
    not depend on particle :math:`k`. With ``local_plate`` the signal is per data point.
    """

    def __init__(
        self,
        num_particles: int = 2,
        local_plate: str | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        if num_particles < 2:
            raise ValueError(f"VIMCO needs num_particles >= 2, got {num_particles}")
        super().__init__(
            num_particles, local_plate=local_plate, max_plate_nesting=max_plate_nesting
        )

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        w = self.weights(model, guide, *args, **kwargs)
        log_w = w.log_w
        per_element = logmeanexp(log_w)
        k = log_w.shape[-1]
        detached = log_w.detach()
        others = (detached.sum(-1, keepdim=True) - detached) / (k - 1)
        eye = torch.eye(k, dtype=torch.bool, device=log_w.device)
        swapped = torch.where(eye, others.unsqueeze(-1), detached.unsqueeze(-2))
        signal = per_element.detach().unsqueeze(-1) - logmeanexp(swapped)
        if w.plate_dim is not None:
            signal = signal * w.scale
        signal = w.to_batch_layout(signal, _plate_nesting()) if signal.dim() <= 2 else None
        if w.plate_dim is None:
            return Estimate(per_element, signal)
        elements = per_element * w.scale
        return Estimate(elements.sum(-1), signal, elements, w.plate_dim)


class Renyi(IWAE):
    r"""The variational Rényi bound (Li & Turner 2016).

    :math:`\frac{1}{1-\alpha}\log\frac1K\sum_k w_k^{1-\alpha}`.

    :math:`\alpha = 0` is IWAE; :math:`\alpha \to 1` the ELBO (the per-particle average of
    :math:`\log w_k`). Unlike Pyro's ``RenyiELBO``, non-reparameterisable and local latent
    sites are allowed: their gradients come from the sites' strategies (REINFORCE with a
    baseline, MVD or enumeration where it applies).
    """

    def __init__(
        self,
        alpha: float = 0.0,
        num_particles: int = 2,
        local_plate: str | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(
            num_particles, local_plate=local_plate, max_plate_nesting=max_plate_nesting
        )
        self.alpha = float(alpha)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        w = self.weights(model, guide, *args, **kwargs)
        if self.alpha == 1.0:
            return w.estimate(w.log_w.mean(-1), _plate_nesting())
        per_element = logmeanexp((1.0 - self.alpha) * w.log_w) / (1.0 - self.alpha)
        return w.estimate(per_element, _plate_nesting())

    def __repr__(self) -> str:
        return f"Renyi(alpha={self.alpha}, num_particles={self.num_particles})"


class CUBO(IWAE):
    r"""The :math:`\chi` upper bound :math:`\frac1n\log\frac1K\sum_k w_k^n` (Dieng et al. 2017).

    An upper bound on :math:`\log p(x)` for :math:`n \ge 1` (in expectation, up to the
    finite-:math:`K` bias of the log); ``loss`` returns the bound itself, which SVI minimises.
    """

    maximize = False

    def __init__(
        self,
        n: float = 2.0,
        num_particles: int = 2,
        local_plate: str | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"CUBO needs n >= 1 for an upper bound, got {n}")
        super().__init__(
            num_particles, local_plate=local_plate, max_plate_nesting=max_plate_nesting
        )
        self.n = float(n)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        w = self.weights(model, guide, *args, **kwargs)
        return w.estimate(logmeanexp(self.n * w.log_w) / self.n, _plate_nesting())

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
        local_plate: Self-normalise per element of this plate, for amortised guides with
            local latents and minibatches (see the module docstring).
    """

    def __init__(
        self,
        num_particles: int = 5,
        wake: str = "both",
        local_plate: str | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        if wake not in ("both", "p", "q"):
            raise ValueError(f"RWS: wake must be 'both', 'p' or 'q', got {wake!r}")
        if num_particles < 2:
            raise ValueError(f"RWS needs num_particles >= 2, got {num_particles}")
        super().__init__(num_particles, max_plate_nesting)
        self.wake = wake
        self.local_plate = local_plate

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        q = simulate(guide, *args, detach=True, **kwargs)
        p = density(model, q, *args, **kwargs)
        w = log_weights(q, p, q.log_prob, self.local_plate)
        normalized = torch.softmax(w.log_w.detach(), -1)
        value = w.reduce(logmeanexp(w.log_w)).detach()
        wake = torch.zeros_like(value)
        if self.wake in ("both", "p"):
            wake = wake + w.reduce((normalized * w.log_p).sum(-1))
        if self.wake in ("both", "q"):
            wake = wake + w.reduce((normalized * w.log_q).sum(-1))
        return Estimate(value + wake - wake.detach())

    def __repr__(self) -> str:
        return f"RWS(num_particles={self.num_particles}, wake={self.wake!r})"
