r"""Closed-form KL divergences for the ELBO, including ones that need the sampled value.

:class:`~pplx.objectives.ELBO` with ``analytic_kl=True`` replaces, at every reparameterised
latent site, the pair of Monte Carlo terms :math:`\log p(z) - \log q(z)` by
:math:`-\mathrm{KL}(q \,\|\, p)` where a closed form is known (as Pyro's
``TraceMeanField_ELBO`` does). :func:`kl_at` is the lookup: first a rule registered here with
:func:`register_kl_at`, then :func:`torch.distributions.kl_divergence`.

A rule registered here receives the site's sampled value as well. That covers priors whose
factors condition on the path itself, such as an autoregressive prior
:math:`p(z_{1:T}) = \prod_t p(z_t \mid z_{<t})` against a guide
:math:`q(z_{1:T}) = \prod_t q(z_t)` that factorises over steps:

.. math:: \mathrm{KL}(q \,\|\, p) = \sum_t \mathbb E_{q(z_{<t})}\,
    \mathrm{KL}\big(q(z_t) \,\|\, p(\cdot \mid z_{<t})\big),

so the closed-form per-step KLs at the sampled history are an unbiased estimate of the KL
with the noise of :math:`z_t` itself integrated out (Rao-Blackwellised). Such a rule must
return an unbiased estimate of the KL whose expectation is the KL; it may depend on the
value through the history only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import Distribution, kl_divergence

__all__ = ["kl_at", "register_kl_at"]

KLRule = Callable[[Distribution, Distribution, torch.Tensor], torch.Tensor]
_RULES: dict[tuple[type, type], KLRule] = {}


def register_kl_at(type_q: type, type_p: type) -> Callable[[KLRule], KLRule]:
    """Decorator: register ``fn(q, p, value)`` as the KL of ``q`` from ``p`` at ``value``.

    The rule applies to subclasses too (the most specific registered pair wins, as in
    :func:`torch.distributions.kl.register_kl`). It returns a tensor of the distributions'
    batch shape, or raises :class:`NotImplementedError` when it has no closed form for these
    particular instances (the ELBO then falls back to the Monte Carlo terms).

    Example:
        >>> @register_kl_at(MyGuideDist, MyPrior)  # doctest: +SKIP
        ... def _kl(q, p, value):
        ...     return ...
    """
    if not (isinstance(type_q, type) and isinstance(type_p, type)):
        raise TypeError(f"register_kl_at expects two classes, got {type_q!r}, {type_p!r}")

    def decorator(fn: KLRule) -> KLRule:
        _RULES[type_q, type_p] = fn
        return fn

    return decorator


def _lookup(type_q: type, type_p: type) -> KLRule | None:
    best, best_rank = None, None
    for (rq, rp), fn in _RULES.items():
        if issubclass(type_q, rq) and issubclass(type_p, rp):
            rank = (type_q.__mro__.index(rq), type_p.__mro__.index(rp))
            if best_rank is None or rank < best_rank:
                best, best_rank = fn, rank
    return best


def kl_at(q: Distribution, p: Distribution, value: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(q \,\|\, p)` in closed form, or an unbiased estimate given ``value``.

    Args:
        q: The guide's distribution at a site.
        p: The model's distribution at the same site.
        value: The value the guide sampled there (used by rules registered with
            :func:`register_kl_at` only).

    Returns:
        A tensor of the sites' batch shape.

    Raises:
        NotImplementedError: if neither a registered rule nor
            :func:`torch.distributions.kl_divergence` knows the pair.
    """
    rule = _lookup(type(q), type(p))
    if rule is not None:
        return rule(q, p, value)
    return kl_divergence(q, p)
