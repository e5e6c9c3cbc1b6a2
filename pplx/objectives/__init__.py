"""Variational objectives written as programs, turned into unbiased gradient estimators.

Primitives (:mod:`pplx.objectives.program`): :func:`simulate`, :func:`density`,
:func:`expectation`, :func:`logmeanexp`, :class:`Estimate`; the transform
(:mod:`pplx.objectives.transform`) composes each site's gradient strategy
(:mod:`pplx.estimators`). Library objectives implement Pyro's ELBO interface.
"""

from pplx.objectives.base import Objective, objective
from pplx.objectives.diagnostics import GradientStats, compare_estimators, gradient_variance
from pplx.objectives.hierarchical import DIWHVI, HVI, IWHVI, marginal_log_density
from pplx.objectives.library import CUBO, ELBO, IWAE, RWS, VIMCO, Renyi
from pplx.objectives.program import (
    Draw,
    Estimate,
    ModelDensity,
    ObjectiveError,
    Terms,
    density,
    expectation,
    logmeanexp,
    simulate,
)

__all__ = [
    "CUBO",
    "DIWHVI",
    "HVI",
    "IWHVI",
    "ELBO",
    "IWAE",
    "RWS",
    "VIMCO",
    "Draw",
    "Estimate",
    "GradientStats",
    "ModelDensity",
    "Objective",
    "ObjectiveError",
    "Renyi",
    "Terms",
    "compare_estimators",
    "density",
    "expectation",
    "gradient_variance",
    "logmeanexp",
    "marginal_log_density",
    "objective",
    "simulate",
]
