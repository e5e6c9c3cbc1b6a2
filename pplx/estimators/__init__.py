"""Per-site gradient strategies for objectives (see :mod:`pplx.estimators.strategies`).

Tag a guide site with ``pyro.sample(name, dist, infer={"estimator": MVD()})`` or re-tag an
existing guide (an autoguide too) with :func:`with_estimators`.
"""

from pplx.estimators.baselines import (
    Baseline,
    Learned,
    LeaveOneOut,
    MovingAverage,
    NoBaseline,
)
from pplx.estimators.strategies import (
    MVD,
    Enumerate,
    ImplicitReparam,
    Reinforce,
    RejectionReparam,
    Reparam,
    Strategy,
    StrategyError,
    default_strategy,
)
from pplx.estimators.tagging import with_estimators

__all__ = [
    "MVD",
    "Baseline",
    "Enumerate",
    "ImplicitReparam",
    "Learned",
    "LeaveOneOut",
    "MovingAverage",
    "NoBaseline",
    "Reinforce",
    "RejectionReparam",
    "Reparam",
    "Strategy",
    "StrategyError",
    "default_strategy",
    "with_estimators",
]
