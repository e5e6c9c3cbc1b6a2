r"""Gradient strategies: how the derivative of an expectation flows through one random choice.

A strategy belongs to one sample site of a guide. For a site :math:`z \sim q_\theta` and the
rest of the program :math:`f` (its *downstream cost*), each strategy is a different unbiased
estimator of :math:`\nabla_\theta \mathbb E_{q_\theta}[f(z)]`:

* :class:`Reparam` (pathwise): :math:`z = g_\theta(\epsilon)`,
  :math:`\mathbb E[\nabla_\theta f(g_\theta(\epsilon))]`.
* :class:`Reinforce` (score function, Williams 1992):
  :math:`\mathbb E[(f(z) - b)\,\nabla_\theta \log q_\theta(z)]` with a baseline :math:`b`
  (:mod:`pplx.estimators.baselines`).
* :class:`Enumerate`: the exact sum :math:`\sum_z q_\theta(z) f(z)` over a finite support,
  in parallel (one batch dimension per enumerated site, as in Pyro's
  ``enumerate="parallel"``).
* :class:`MVD` (measure-valued derivative, Pflug 1989; Mohamed et al. 2020):
  :math:`\partial_\theta q_\theta = c_\theta (q^+_\theta - q^-_\theta)`, so the derivative is
  :math:`c_\theta(\mathbb E_{q^+}[f] - \mathbb E_{q^-}[f])`, estimated by re-executing the rest
  of the program with the site forced to coupled values.
* :class:`ImplicitReparam` (Figurnov et al. 2018): pathwise gradients through Gamma, Beta and
  Dirichlet samplers by implicit differentiation of the CDF.
* :class:`RejectionReparam` (Naesseth et al. 2017): pathwise gradients through the
  Marsaglia-Tsang acceptance-rejection sampler of the Gamma (and Beta, Dirichlet through Gammas)
  plus the score correction of the accepted proposal noise.

A site gets its strategy from ``infer={"estimator": ...}`` on its ``pyro.sample`` statement,
from :func:`pplx.estimators.with_estimators` (a handler that re-tags an existing guide), or by
default (:func:`default_strategy`): :class:`Reparam` where the distribution has ``rsample``,
otherwise :class:`Reinforce` with the ``"auto"`` baseline.
"""

from __future__ import annotations

from typing import Any

import torch.distributions as tdist

from pplx.estimators.baselines import Baseline, make_baseline


class StrategyError(ValueError):
    """A strategy that cannot apply to a site (the message names the site and an alternative)."""


def _dist_name(fn: Any) -> str:
    return type(fn).__name__


def base_distribution(fn: Any) -> Any:
    """Strip the wrappers that do not change how a site is sampled (Independent, expand, mask)."""
    while True:
        if isinstance(fn, tdist.Independent):
            fn = fn.base_dist
        elif type(fn).__name__ in ("MaskedDistribution",) and hasattr(fn, "base_dist"):
            fn = fn.base_dist
        elif type(fn).__name__ == "ExpandedDistribution" and hasattr(fn, "base_dist"):
            fn = fn.base_dist
        else:
            return fn


def is_discrete(fn: Any) -> bool:
    """Whether a distribution has a discrete support."""
    support = getattr(fn, "support", None)
    return bool(getattr(support, "is_discrete", False))


class Strategy:
    """Base class of the per-site gradient strategies.

    Subclasses say whether the site's value carries a gradient path (``pathwise``), whether a
    score-function term is needed (``uses_score``) and validate that they apply to a site.
    """

    #: the sampled value is differentiable in the distribution's parameters
    pathwise: bool = False
    #: the estimator adds a score-function term :math:`(f - b)\nabla\log q`
    uses_score: bool = False

    def check(self, name: str, fn: Any) -> None:
        """Raise :class:`StrategyError` if this strategy cannot apply to site ``name``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Reparam(Strategy):
    """Pathwise (reparameterisation) gradient through ``rsample``."""

    pathwise = True

    def check(self, name: str, fn: Any) -> None:  # noqa: D102
        if not getattr(fn, "has_rsample", False):
            alternative = "Enumerate() or MVD()" if is_discrete(fn) else "Reinforce()"
            raise StrategyError(
                f"site {name!r}: Reparam() needs a reparameterisable distribution, but "
                f"{_dist_name(fn)} has no rsample; use {alternative} for this site."
            )


class Reinforce(Strategy):
    r"""Score-function (REINFORCE) gradient with an optional baseline.

    Args:
        baseline: ``None`` or ``"none"`` (no baseline), ``"auto"`` (leave-one-out across
            particles when the objective is linear in per-particle costs and there are at least
            two particles, else a moving average), ``"moving_average"``, ``"loo"``, or a
            :class:`~pplx.estimators.baselines.Baseline` instance (e.g.
            :class:`~pplx.estimators.baselines.Learned` wrapping a ``torch.nn.Module``).
    """

    uses_score = True

    def __init__(self, baseline: str | Baseline | None = "auto") -> None:
        self.baseline = make_baseline(baseline)

    def __repr__(self) -> str:
        return f"Reinforce(baseline={self.baseline!r})"


class Enumerate(Strategy):
    """Exact parallel enumeration over a finite support (one new batch dimension)."""

    def check(self, name: str, fn: Any) -> None:  # noqa: D102
        if not getattr(fn, "has_enumerate_support", False):
            alternative = "Reparam()" if getattr(fn, "has_rsample", False) else "Reinforce()"
            raise StrategyError(
                f"site {name!r}: Enumerate() needs a finite support, but {_dist_name(fn)} "
                f"cannot be enumerated; use {alternative} for this site."
            )


class MVD(Strategy):
    r"""Measure-valued derivative: re-execute the rest of the program at coupled values.

    Supported distributions (see :mod:`pplx.estimators.mvd`): Bernoulli, Categorical,
    Poisson and Normal (loc and scale), also wrapped in ``.to_event()``. Each element of the
    site costs one extra batched execution of the rest of the program per branch of its
    decomposition (2 for Bernoulli and Poisson, 4 for Normal, the number of categories for
    Categorical), vectorized as extra batch dimensions.
    """

    def check(self, name: str, fn: Any) -> None:  # noqa: D102
        from pplx.estimators.mvd import SUPPORTED, supports

        if not supports(fn):
            alternative = "Reparam()" if getattr(fn, "has_rsample", False) else "Reinforce()"
            raise StrategyError(
                f"site {name!r}: MVD() has no measure-valued derivative for "
                f"{_dist_name(base_distribution(fn))} (supported: {', '.join(SUPPORTED)}); use "
                f"{alternative} for this site."
            )


_IMPLICIT = ("Gamma", "Beta", "Dirichlet")


class ImplicitReparam(Strategy):
    r"""Implicit reparameterisation gradients (Figurnov, Mohamed & Mnih 2018).

    For a sample :math:`z = F^{-1}_\theta(u)` the gradient is
    :math:`\nabla_\theta z = -\nabla_\theta F_\theta(z) / q_\theta(z)`, computed without
    inverting the CDF. PyTorch's Gamma (and hence Beta and Dirichlet) ``rsample`` implements
    exactly this rule, so this strategy checks the distribution and samples with ``rsample``.
    """

    pathwise = True

    def check(self, name: str, fn: Any) -> None:  # noqa: D102
        if _dist_name(base_distribution(fn)) not in _IMPLICIT:
            raise StrategyError(
                f"site {name!r}: ImplicitReparam() applies to {', '.join(_IMPLICIT)}, not "
                f"{_dist_name(base_distribution(fn))}; use Reparam() or Reinforce() instead."
            )


class RejectionReparam(Strategy):
    r"""Reparameterisation through the acceptance-rejection sampler (Naesseth et al. 2017).

    The Marsaglia-Tsang sampler writes an accepted Gamma(:math:`\alpha`) draw as
    :math:`z = h(\epsilon, \alpha) = (\alpha - \tfrac13)(1 + \epsilon/\sqrt{9\alpha - 3})^3`
    with :math:`\epsilon` distributed as :math:`\pi(\epsilon;\alpha) = q_\alpha(h(\epsilon,
    \alpha))\,|\partial_\epsilon h|`. The gradient is the pathwise term through :math:`h` plus
    the correction :math:`\mathbb E[f(h(\epsilon,\alpha))\nabla_\alpha\log\pi(\epsilon;
    \alpha)]`. Shape augmentation with ``boost`` uniform variables,
    :math:`\mathrm{Gamma}(\alpha) = \mathrm{Gamma}(\alpha + B)\prod_{i<B}U_i^{1/(\alpha+i)}`,
    shrinks the correction's variance (Naesseth et al., section 5). Beta and Dirichlet are
    sampled as normalised Gammas.

    Args:
        boost: Number :math:`B \ge 1` of shape-augmentation steps.
    """

    pathwise = True
    uses_score = True

    def __init__(self, boost: int = 1, baseline: str | Baseline | None = "auto") -> None:
        if int(boost) != boost or boost < 1:
            raise ValueError(f"RejectionReparam: boost must be an integer >= 1, got {boost!r}")
        self.boost = int(boost)
        self.baseline = make_baseline(baseline)

    def check(self, name: str, fn: Any) -> None:  # noqa: D102
        if _dist_name(base_distribution(fn)) not in _IMPLICIT:
            raise StrategyError(
                f"site {name!r}: RejectionReparam() applies to {', '.join(_IMPLICIT)}, not "
                f"{_dist_name(base_distribution(fn))}; use Reparam() or Reinforce() instead."
            )

    def __repr__(self) -> str:
        return f"RejectionReparam(boost={self.boost})"


def default_strategy(fn: Any) -> Strategy:
    """Reparam where the distribution has ``rsample``, else Reinforce with a baseline."""
    if getattr(fn, "has_rsample", False):
        return Reparam()
    return Reinforce("auto")


def as_strategy(value: Any, name: str) -> Strategy:
    """Accept a :class:`Strategy` instance or class (``MVD`` as well as ``MVD()``)."""
    if isinstance(value, type) and issubclass(value, Strategy):
        value = value()
    if not isinstance(value, Strategy):
        raise StrategyError(
            f"site {name!r}: infer['estimator'] must be a pplx.estimators strategy such as "
            f"Reparam(), Reinforce(), Enumerate() or MVD(), got {value!r}"
        )
    return value
