r"""Baselines (control variates) for score-function gradients.

For a site :math:`z \sim q_\theta` with downstream cost :math:`f`, any :math:`b` that does not
depend on :math:`z` keeps :math:`\mathbb E[(f - b)\nabla_\theta\log q_\theta(z)]` unbiased,
because :math:`\mathbb E[\nabla_\theta\log q_\theta(z)] = 0`. A good :math:`b` tracks
:math:`\mathbb E[f]` and removes most of the estimator's variance.

* :class:`NoBaseline`: :math:`b = 0`.
* :class:`MovingAverage`: an exponential moving average of past downstream costs (Pyro's
  ``use_decaying_avg_baseline``); it depends only on earlier steps, so it stays unbiased.
* :class:`LeaveOneOut`: with :math:`K` independent particles,
  :math:`b_k = \frac{1}{K-1}\sum_{j\ne k} f_j` (Kool et al. 2019; Mnih & Rezende 2016);
  unbiased because particle :math:`k`'s baseline does not depend on particle :math:`k`.
* :class:`Learned`: a ``torch.nn.Module`` (e.g. of the data) trained alongside the model to
  minimise :math:`(f - b)^2` (Mnih & Gregor 2014).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch


@dataclass
class BaselineContext:
    """What a baseline may look at besides the cost.

    Attributes:
        num_particles: Number of vectorized particles :math:`K`.
        particle_dim: The (negative) dimension of the particles in the cost tensor.
        per_particle: Whether the cost differs between particles (objectives that are
            expectations of per-particle costs); ``False`` for IWAE-like objectives, whose
            cost is one number for all particles.
        args: Positional arguments of the objective (model and guide arguments).
        kwargs: Keyword arguments of the objective.
    """

    num_particles: int
    particle_dim: int
    per_particle: bool
    args: tuple = ()
    kwargs: dict | None = None


class Baseline:
    """Base class: ``baseline(site, cost, ctx)`` returns ``(b, loss)``.

    ``b`` broadcasts against ``cost``; ``loss`` is ``None`` or a scalar the surrogate minimises
    to train the baseline (it does not change the objective's value or gradient).
    """

    def __call__(
        self, site: str, cost: torch.Tensor, ctx: BaselineContext
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(b, loss)`` for ``site``'s downstream ``cost``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoBaseline(Baseline):
    """:math:`b = 0`."""

    def __call__(self, site, cost, ctx):  # noqa: D102
        return torch.zeros((), dtype=cost.dtype, device=cost.device), None


class MovingAverage(Baseline):
    r"""Exponential moving average of the site's mean downstream cost.

    :math:`b_t = \beta b_{t-1} + (1 - \beta)\,\overline{f}_{t-1}`, starting from
    :math:`b_0 = 0`. One average per site.

    Args:
        decay: :math:`\beta \in [0, 1)`.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"MovingAverage: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self._averages: dict[str, torch.Tensor] = {}

    def __call__(self, site, cost, ctx):  # noqa: D102
        previous = self._averages.get(site)
        if previous is None:
            b = torch.zeros((), dtype=cost.dtype, device=cost.device)
            self._averages[site] = cost.detach().mean()
        else:
            b = previous.to(cost)
            self._averages[site] = self.decay * b + (1 - self.decay) * cost.detach().mean()
        return b, None

    def __repr__(self) -> str:
        return f"MovingAverage(decay={self.decay})"


class LeaveOneOut(Baseline):
    r"""Mean of the other particles' costs, :math:`b_k = \frac{1}{K-1}\sum_{j\ne k} f_j`."""

    def __call__(self, site, cost, ctx):  # noqa: D102
        if ctx.num_particles < 2:
            raise ValueError(
                f"site {site!r}: the leave-one-out baseline needs num_particles >= 2, got "
                f"{ctx.num_particles}; raise num_particles or use MovingAverage()."
            )
        if not ctx.per_particle:
            raise ValueError(
                f"site {site!r}: the leave-one-out baseline needs a cost per particle, but this "
                "objective reduces its particles nonlinearly (IWAE-like); use VIMCO (the "
                "leave-one-out estimator for IWAE) or MovingAverage()."
            )
        dim = ctx.particle_dim
        if cost.dim() < -dim or cost.shape[dim] != ctx.num_particles:
            cost = cost.expand(
                cost.shape[:dim] + (ctx.num_particles,) + cost.shape[dim:][1:]
                if cost.dim() >= -dim
                else (ctx.num_particles,) + (1,) * (-dim - 1)
            )
        total = cost.sum(dim, keepdim=True)
        return (total - cost) / (ctx.num_particles - 1), None


class Learned(Baseline):
    r"""A ``torch.nn.Module`` baseline trained to minimise :math:`(f - b)^2`.

    Args:
        module: The network. Its output must broadcast against the site's cost, whose shape is
            the site's batch shape inside the particle plate, e.g. ``(K, 1, N)`` for a site in
            a plate of size ``N``; an output of shape ``(N,)`` or ``()`` does.
        inputs: ``inputs(*args, **kwargs)`` returns the tuple of module inputs from the
            objective's (model and guide) arguments. ``None`` calls ``module(*args, **kwargs)``.
        name: Name under which the module is registered with ``pyro.module`` (so that
            ``pyro.infer.SVI`` and the pplx SVI engine train it). Defaults to
            ``"baseline_<site>"``.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: Callable[..., tuple] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"Learned: module must be a torch.nn.Module, got {module!r}")
        self.module = module
        self.inputs = inputs
        self.name = name

    def __call__(self, site, cost, ctx):  # noqa: D102
        module = pyro.module(self.name or f"baseline_{site}", self.module)
        kwargs = ctx.kwargs or {}
        if self.inputs is None:
            b = module(*ctx.args, **kwargs)
        else:
            b = module(*self.inputs(*ctx.args, **kwargs))
        b = b.squeeze(-1) if b.dim() > 0 and b.shape[-1] == 1 and cost.shape[-1:] != (1,) else b
        try:
            torch.broadcast_shapes(b.shape, cost.shape)
        except RuntimeError as error:
            raise ValueError(
                f"site {site!r}: the learned baseline returned shape {tuple(b.shape)}, which "
                f"does not broadcast against the site's cost of shape {tuple(cost.shape)}"
            ) from error
        loss = (cost.detach() - b).pow(2).mean()
        return b.detach(), loss

    def __repr__(self) -> str:
        return f"Learned({type(self.module).__name__})"


class Auto(Baseline):
    """Leave-one-out with per-particle costs and two or more particles, else moving average."""

    def __init__(self) -> None:
        self._moving = MovingAverage()
        self._loo = LeaveOneOut()

    def __call__(self, site, cost, ctx):  # noqa: D102
        if ctx.per_particle and ctx.num_particles >= 2:
            return self._loo(site, cost, ctx)
        return self._moving(site, cost, ctx)

    def __repr__(self) -> str:
        return "'auto'"


_NAMES: dict[str, Callable[[], Baseline]] = {
    "none": NoBaseline,
    "auto": Auto,
    "moving_average": MovingAverage,
    "loo": LeaveOneOut,
    "leave_one_out": LeaveOneOut,
}


def make_baseline(value: Any) -> Baseline:
    """Turn ``None``, a name or a :class:`Baseline` into a :class:`Baseline`."""
    if value is None:
        return NoBaseline()
    if isinstance(value, Baseline):
        return value
    if isinstance(value, torch.nn.Module):
        return Learned(value)
    if isinstance(value, str) and value in _NAMES:
        return _NAMES[value]()
    raise ValueError(
        f"unknown baseline {value!r}; use None, one of {sorted(_NAMES)}, a torch.nn.Module or "
        "a pplx.estimators.baselines.Baseline"
    )
