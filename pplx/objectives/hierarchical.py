r"""Hierarchical (semi-implicit) guides: HVI, IWHVI and DIWHVI.

A hierarchical guide samples auxiliary variables :math:`\psi` and then the model's latents
:math:`z`, :math:`q(z) = \int q(z\mid\psi)\,q(\psi)\,d\psi`, so :math:`\log q(z)` has no closed
form. With a *reverse model* :math:`r(\psi\mid z)` (a Pyro program that samples the same
auxiliary sites given the latents) the marginal density is estimated by self-normalised
importance sampling, the ``marginal`` / ``sir`` construct of programmable VI (Becker, Lew et
al., PLDI 2024):

.. math::

    \log\hat q(z) = \log\frac{1}{L+1}\sum_{l=0}^{L}\frac{q(z, \psi_l)}{r(\psi_l\mid z)},
    \qquad \psi_0 \text{ from the guide},\ \psi_{1:L} \sim r(\cdot\mid z),

whose expectation upper-bounds :math:`\log q(z)` (Sobolev & Vetrov 2019), so replacing
:math:`\log q` by it keeps a lower bound on :math:`\log p(x)`:

* ``HVI`` (:math:`L = 0`, Ranganath, Tran & Blei 2016):
  :math:`\mathbb E[\log p(x, z) + \log r(\psi\mid z) - \log q(z, \psi)]`;
* ``IWHVI(L)``: :math:`\mathbb E[\log p(x, z) - \log\hat q(z)]`, increasing in :math:`L`;
* ``DIWHVI(K, L)``: :math:`\mathbb E[\log\frac1K\sum_k p(x, z_k)/\hat q(z_k)]`, importance
  weighting on both levels (doubly).

Auxiliary sites are marked ``infer={"is_auxiliary": True}`` in the guide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch

from pplx.objectives.base import Objective
from pplx.objectives.program import (
    Estimate,
    ObjectiveError,
    _default_execution,
    density,
    logmeanexp,
    simulate,
)


def _in_plate(fn: Callable, name: str, size: int, dim: int) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(name, size, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def marginal_log_density(
    guide: Callable,
    reverse: Callable,
    num_inner: int,
    *args: Any,
    **kwargs: Any,
) -> tuple[Any, torch.Tensor]:
    r"""Simulate a hierarchical guide and estimate :math:`\log q(z)` of its latents.

    Args:
        guide: A guide whose auxiliary sites carry ``infer={"is_auxiliary": True}``.
        reverse: ``reverse(latents, *args, **kwargs)``: samples the auxiliary sites given the
            dict ``latents`` of the guide's other sites.
        num_inner: :math:`L`, the number of reverse-model samples (0 gives HVI's estimate).
        *args: The guide's arguments.
        **kwargs: The guide's keyword arguments.

    Returns:
        ``(draw, log_q_hat)``: the guide's :class:`~pplx.objectives.program.Draw` and the
        estimate, with the particles in the last dimension.
    """
    ex = _default_execution()
    q = simulate(guide, *args, **kwargs)
    aux = {r.key[1] for r in q.records if r.auxiliary}
    if not aux:
        raise ObjectiveError(
            "a hierarchical objective needs auxiliary guide sites: mark the guide's mixing "
            "variables with infer={'is_auxiliary': True}"
        )
    latents = {n: v for n, v in q.values.items() if n not in aux}
    joint = q.log_prob.total()
    r0 = density(reverse, q, latents, *args, partial=True, **kwargs).log_prob.total()
    log_ratio = (joint - r0).unsqueeze(-2)  # (..., 1, K): the guide's own psi_0
    if num_inner > 0:
        dim = -(ex.plate_nesting + 2 + ex.enum_dims)
        ex.enum_dims += 1
        name = f"_pplx_inner_{ex.num_calls}"
        inner = simulate(_in_plate(reverse, name, num_inner, dim), latents, *args, **kwargs)
        values = {**latents, **{n: inner.values[n] for n in aux}}
        replay = _in_plate(guide, name, num_inner, dim)
        q_inner = density(replay, q, *args, values=values, **kwargs)
        # (..., L, K): the inner samples sit just left of the particles after total()
        inner_ratio = q_inner.log_prob.total() - inner.log_prob.total()
        shape = torch.broadcast_shapes(log_ratio.shape[:-2], inner_ratio.shape[:-2])
        log_ratio = torch.cat(
            [
                log_ratio.expand(shape + log_ratio.shape[-2:]),
                inner_ratio.expand(shape + inner_ratio.shape[-2:]),
            ],
            -2,
        )
    return q, logmeanexp(log_ratio, dim=-2)


class _Hierarchical(Objective):
    def __init__(
        self,
        reverse: Callable,
        num_inner: int,
        num_particles: int,
        max_plate_nesting: int | None = None,
    ) -> None:
        if not callable(reverse):
            raise TypeError(f"reverse must be a Pyro program (callable), got {reverse!r}")
        if int(num_inner) != num_inner or num_inner < 0:
            raise ValueError(f"num_inner must be a non-negative integer, got {num_inner!r}")
        super().__init__(num_particles, max_plate_nesting)
        self.reverse = reverse
        self.num_inner = int(num_inner)

    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        r""":math:`\log p(x, z_k) - \log\hat q(z_k)` (last dimension: particles)."""
        q, log_q_hat = marginal_log_density(guide, self.reverse, self.num_inner, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        return p.log_prob.total() - log_q_hat

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_inner={self.num_inner}, "
            f"num_particles={self.num_particles})"
        )


class HVI(_Hierarchical):
    r"""Hierarchical variational inference (Ranganath, Tran & Blei 2016).

    :math:`\mathbb E_{q(z,\psi)}[\log p(x, z) + \log r(\psi\mid z) - \log q(z, \psi)]`.

    Args:
        reverse: The reverse model :math:`r(\psi\mid z)`.
        num_particles: Particles averaged per estimate.
    """

    def __init__(
        self, reverse: Callable, num_particles: int = 1, max_plate_nesting: int | None = None
    ) -> None:
        super().__init__(reverse, 0, num_particles, max_plate_nesting)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        return Estimate(self.log_weights(model, guide, *args, **kwargs).mean(-1))


class IWHVI(_Hierarchical):
    r"""Importance-weighted hierarchical VI (Sobolev & Vetrov 2019).

    :math:`\mathbb E[\log p(x, z) - \log\hat q_L(z)]` with :math:`L` reverse-model samples;
    :math:`L = 0` is HVI and the bound increases with :math:`L`.
    """

    def __init__(
        self,
        reverse: Callable,
        num_inner: int = 5,
        num_particles: int = 1,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(reverse, num_inner, num_particles, max_plate_nesting)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        return Estimate(self.log_weights(model, guide, *args, **kwargs).mean(-1))


class DIWHVI(_Hierarchical):
    r"""Doubly importance-weighted hierarchical VI.

    :math:`\mathbb E[\log\frac1K\sum_k p(x, z_k)/\hat q_L(z_k)]`: IWAE over :math:`K`
    particles whose guide density is the IWHVI estimate (Sobolev & Vetrov 2019, section 4).
    """

    def __init__(
        self,
        reverse: Callable,
        num_inner: int = 5,
        num_particles: int = 5,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(reverse, num_inner, num_particles, max_plate_nesting)

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        return Estimate(logmeanexp(self.log_weights(model, guide, *args, **kwargs)))
