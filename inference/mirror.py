r"""Mirror maps for constrained Stein samplers (Shi, Liu & Mackey, ICLR 2022).

A mirror map :math:`\psi` is a strictly convex function on a constrained set; particles move in
the dual space :math:`\eta = \nabla\psi(\theta)` and come back through
:math:`\theta = \nabla\psi^*(\eta)`, which always lands inside the set. The samplers need, for
each map, the Hessian :math:`\nabla^2\psi(\theta)` and its inverse as matrix-vector products,
and the divergence of the inverse Hessian, :math:`(\nabla\cdot\nabla^2\psi^{-1})_b =
\sum_a \partial_a (\nabla^2\psi^{-1})_{ab}`. All functions broadcast over leading dimensions.

Maps (entropic ones, as in the paper):

- :class:`SimplexEntropic`: :math:`\psi(\theta) = \sum_{i \le K} \theta_i \log\theta_i` with
  :math:`\theta_K = 1 - \sum_{i<K}\theta_i`, on the first ``K - 1`` coordinates;
  :math:`\nabla^2\psi^{-1} = \mathrm{diag}(\theta) - \theta\theta^\top` and
  :math:`\nabla\cdot\nabla^2\psi^{-1} = 1 - K\theta`.
- :class:`OrthantEntropic`: :math:`\psi = \sum \theta\log\theta - \theta` on
  :math:`\theta > a`; :math:`\nabla^2\psi^{-1} = \mathrm{diag}(\theta - a)`, divergence 1.
- :class:`BoxEntropic`: :math:`\psi = (b - a)\sum u\log u + (1-u)\log(1-u)`,
  :math:`u = (\theta - a)/(b - a)`; :math:`\nabla\psi = \mathrm{logit}\,u`,
  :math:`\nabla^2\psi^{-1} = \mathrm{diag}((b - a) u (1 - u))`, divergence :math:`1 - 2u`.
- :class:`Euclidean`: :math:`\psi = \|\theta\|^2/2` for unconstrained sites (MSVGD is then SVGD).
"""

from __future__ import annotations

import torch
from torch.distributions import constraints


class MirrorMap:
    """Interface of a mirror map on one site's primal coordinates ``(..., d)``."""

    def check(self, support: constraints.Constraint, site: str) -> None:
        """Raise if this map does not fit a site's support."""

    def primal_dim(self, site_shape: torch.Size) -> int:
        """Number of primal coordinates for a site of ``site_shape``."""
        n = 1
        for s in site_shape:
            n *= s
        return n

    def to_site(self, theta: torch.Tensor, site_shape: torch.Size) -> torch.Tensor:
        """Site value ``(..., *site_shape)`` from primal coordinates ``(..., d)``."""
        return theta.reshape(theta.shape[:-1] + tuple(site_shape))

    def from_site(self, value: torch.Tensor, site_shape: torch.Size) -> torch.Tensor:
        """Primal coordinates ``(..., d)`` from a site value."""
        return value.reshape(value.shape[: value.dim() - len(site_shape)] + (-1,))

    def to_dual(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`\eta = \nabla\psi(\theta)`."""
        raise NotImplementedError

    def to_primal(self, eta: torch.Tensor) -> torch.Tensor:
        r""":math:`\theta = \nabla\psi^*(\eta)`."""
        raise NotImplementedError

    def hess_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla^2\psi(\theta)\, v`."""
        raise NotImplementedError

    def hess_inv_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla^2\psi(\theta)^{-1} v`."""
        raise NotImplementedError

    def div_hess_inv(self, theta: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla\cdot\nabla^2\psi(\theta)^{-1}`."""
        raise NotImplementedError


def _tiny(x: torch.Tensor) -> float:
    return torch.finfo(x.dtype).tiny


def _floor(x: torch.Tensor) -> float:
    r"""Smallest coordinate the Hessian is evaluated at: eps^2, about 1e-32 in float64.

    So :math:`1/\theta` cannot overflow for coordinates the sampler pushed to zero.
    """
    return torch.finfo(x.dtype).eps ** 2


class Euclidean(MirrorMap):
    r""":math:`\psi(\theta) = \|\theta\|^2 / 2`: the identity map, for unconstrained sites."""

    def check(self, support: constraints.Constraint, site: str) -> None:
        """Only for real-valued sites."""
        base = _base_support(support)
        if base is not constraints.real:
            raise ValueError(
                f"site {site!r} has support {support}, but the Euclidean mirror map needs a "
                "real-valued site; use the map matching the support (simplex, positive, interval)."
            )

    def to_dual(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return theta

    def to_primal(self, eta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return eta

    def hess_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return v

    def hess_inv_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return v

    def div_hess_inv(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.zeros_like(theta)


class OrthantEntropic(MirrorMap):
    r"""Entropic map on :math:`\theta > a` (``constraints.positive`` or ``greater_than(a)``)."""

    def __init__(self, lower: float = 0.0) -> None:
        self.lower = lower

    def check(self, support: constraints.Constraint, site: str) -> None:
        """Only for ``positive`` / ``greater_than`` supports."""
        base = _base_support(support)
        if not isinstance(base, _LOWER_BOUNDED) or float(base.lower_bound) != self.lower:
            raise ValueError(
                f"site {site!r} has support {support}, but OrthantEntropic(lower={self.lower}) "
                f"needs a support bounded below by {self.lower}"
            )

    def to_dual(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.log((theta - self.lower).clamp_min(_tiny(theta)))

    def to_primal(self, eta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.lower + torch.exp(eta)

    def hess_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return v / (theta - self.lower).clamp_min(_floor(theta))

    def hess_inv_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (theta - self.lower) * v

    def div_hess_inv(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.ones_like(theta)


class BoxEntropic(MirrorMap):
    """Entropic map on the box :math:`(a, b)^d` (``constraints.interval``, ``unit_interval``)."""

    def __init__(self, lower: float = 0.0, upper: float = 1.0) -> None:
        if not upper > lower:
            raise ValueError(f"BoxEntropic: need lower < upper, got ({lower}, {upper})")
        self.lower = lower
        self.upper = upper

    def check(self, support: constraints.Constraint, site: str) -> None:
        """Only for interval supports."""
        base = _base_support(support)
        if (
            not isinstance(base, (constraints.interval, constraints.half_open_interval))
            or float(base.lower_bound) != self.lower
            or float(base.upper_bound) != self.upper
        ):
            raise ValueError(
                f"site {site!r} has support {support}, but BoxEntropic({self.lower}, "
                f"{self.upper}) needs the interval ({self.lower}, {self.upper})"
            )

    def _u(self, theta: torch.Tensor) -> torch.Tensor:
        return (theta - self.lower) / (self.upper - self.lower)

    def to_dual(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        u = self._u(theta).clamp(_tiny(theta), 1 - torch.finfo(theta.dtype).eps)
        return torch.logit(u)

    def to_primal(self, eta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.lower + (self.upper - self.lower) * torch.sigmoid(eta)

    def hess_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return v / self.hess_inv_matvec(theta, torch.ones_like(theta)).clamp_min(_floor(theta))

    def hess_inv_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        u = self._u(theta)
        return (self.upper - self.lower) * u * (1 - u) * v

    def div_hess_inv(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return 1 - 2 * self._u(theta)


class SimplexEntropic(MirrorMap):
    """Entropic map on the probability simplex; primal coordinates are the first ``K - 1``."""

    def check(self, support: constraints.Constraint, site: str) -> None:
        """Only for ``constraints.simplex``."""
        if support is not constraints.simplex:
            raise ValueError(
                f"site {site!r} has support {support}, but SimplexEntropic needs "
                "constraints.simplex"
            )

    def primal_dim(self, site_shape: torch.Size) -> int:  # noqa: D102
        if len(site_shape) != 1:
            raise ValueError(
                "SimplexEntropic supports one simplex per site (shape (K,)), got "
                f"{tuple(site_shape)}"
            )
        return site_shape[0] - 1

    def to_site(self, theta: torch.Tensor, site_shape: torch.Size) -> torch.Tensor:  # noqa: D102
        last = 1 - theta.sum(-1, keepdim=True)
        return torch.cat([theta, last], -1).clamp_min(_tiny(theta))

    def from_site(self, value: torch.Tensor, site_shape: torch.Size) -> torch.Tensor:  # noqa: D102
        return value[..., :-1]

    def to_dual(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        tiny = _tiny(theta)
        last = (1 - theta.sum(-1, keepdim=True)).clamp_min(tiny)
        return torch.log(theta.clamp_min(tiny)) - torch.log(last)

    def to_primal(self, eta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        padded = torch.cat([eta, torch.zeros_like(eta[..., :1])], -1)
        return torch.softmax(padded, -1)[..., :-1]

    def hess_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        floor = _floor(theta)
        last = (1 - theta.sum(-1, keepdim=True)).clamp_min(floor)
        return v / theta.clamp_min(floor) + v.sum(-1, keepdim=True) / last

    def hess_inv_matvec(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return theta * v - theta * (theta * v).sum(-1, keepdim=True)

    def div_hess_inv(self, theta: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return 1 - (theta.shape[-1] + 1) * theta


# positive (Gamma, LogNormal) and nonnegative (Exponential, HalfNormal, HalfCauchy) supports
_LOWER_BOUNDED = (constraints.greater_than, constraints.greater_than_eq)


def _base_support(support: constraints.Constraint) -> constraints.Constraint:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def mirror_map_for(support: constraints.Constraint, site: str) -> MirrorMap:
    """The entropic mirror map that matches a site's support.

    Raises:
        ValueError: There is no mirror map for this support (name the site, suggest SVGD).
    """
    if support is constraints.simplex:
        return SimplexEntropic()
    base = _base_support(support)
    if base is constraints.real:
        return Euclidean()
    if isinstance(base, _LOWER_BOUNDED):
        return OrthantEntropic(float(base.lower_bound))
    if isinstance(base, (constraints.interval, constraints.half_open_interval)):
        return BoxEntropic(float(base.lower_bound), float(base.upper_bound))
    raise ValueError(
        f"no mirror map for site {site!r} with support {support}; mirrored samplers support "
        "real, positive, interval and simplex sites. Use SVGD (which moves through a bijection) "
        "or pass mirror_maps={site: ...}."
    )
