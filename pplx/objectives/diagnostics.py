r"""Gradient-variance diagnostics: compare estimators on your own model.

:func:`gradient_variance` evaluates an objective's gradient estimator ``num_samples`` times at
fixed parameters and reports, per parameter, the mean gradient, its variance and the
signal-to-noise ratio :math:`\mathrm{SNR} = |\mathbb E[g]| / \sqrt{\mathrm{Var}[g]}`
(Rainforth et al. 2018 use it to compare IWAE estimators). :func:`compare_estimators` does this
for several (objective, guide) pairs, e.g. the same guide under different strategies, and
returns one table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch

from pplx.objectives.base import Objective


@dataclass
class GradientStats:
    """Per-parameter gradient statistics of one estimator.

    Attributes:
        mean: Parameter name to the mean gradient (same shape as the parameter).
        variance: Parameter name to the per-element variance of one gradient estimate.
        num_samples: Number of gradient estimates.
        seconds: Wall time per estimate.
    """

    mean: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]
    num_samples: int
    seconds: float = float("nan")

    @property
    def snr(self) -> dict[str, torch.Tensor]:
        r"""Per-element signal-to-noise ratio :math:`|\bar g| / \mathrm{sd}(g)`."""
        return {
            name: self.mean[name].abs() / self.variance[name].sqrt().clamp_min(1e-300)
            for name in self.mean
        }

    def std_error(self) -> dict[str, torch.Tensor]:
        """Monte Carlo standard error of each mean gradient."""
        return {n: (v / self.num_samples).sqrt() for n, v in self.variance.items()}

    def table(self) -> Any:
        """A pandas DataFrame with one row per parameter.

        Columns: ``size``, ``mean_norm`` (norm of the mean gradient), ``variance`` (sum of
        element variances, the trace of the covariance), ``snr`` (mean of element SNRs) and
        ``seconds`` per estimate.
        """
        import pandas as pd

        rows = []
        snr = self.snr
        for name in self.mean:
            rows.append(
                {
                    "parameter": name,
                    "size": self.mean[name].numel(),
                    "mean_norm": float(self.mean[name].norm()),
                    "variance": float(self.variance[name].sum()),
                    "snr": float(snr[name].mean()),
                    "seconds": self.seconds,
                }
            )
        return pd.DataFrame(rows).set_index("parameter")


def _parameters(objective: Objective, model, guide, args, kwargs) -> dict[str, torch.Tensor]:
    with poutine.trace(param_only=True) as tracer:
        objective.differentiable_loss(model, guide, *args, **kwargs)
    names = [n for n, s in tracer.trace.nodes.items() if s["type"] == "param"]
    return {n: pyro.param(n).unconstrained() for n in names}


def gradient_variance(
    objective: Objective,
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 100,
    params: list[str] | None = None,
    **kwargs: Any,
) -> GradientStats:
    """Run ``objective``'s gradient estimator ``num_samples`` times at fixed parameters.

    The gradients are of the *loss* (what an optimiser descends) with respect to the
    unconstrained parameters; nothing is updated.

    Args:
        objective: A pplx objective (or any object with Pyro's ``differentiable_loss``).
        model: The model.
        guide: The guide.
        *args: Arguments of model and guide.
        num_samples: Number of independent gradient estimates (at least 2).
        params: Names of the parameters to report (default: every parameter touched).
        **kwargs: Keyword arguments of model and guide.
    """
    import time

    if num_samples < 2:
        raise ValueError(
            f"num_samples must be at least 2 to estimate a variance, got {num_samples}"
        )
    leaves = _parameters(objective, model, guide, args, kwargs)
    if params is not None:
        unknown = sorted(set(params) - set(leaves))
        if unknown:
            raise ValueError(
                f"gradient_variance: no parameter named {unknown[0]!r}; the estimator touches "
                f"{sorted(leaves)}"
            )
        leaves = {n: leaves[n] for n in params}
    names = list(leaves)
    tensors = [leaves[n] for n in names]
    total = [torch.zeros_like(t) for t in tensors]
    total_sq = [torch.zeros_like(t) for t in tensors]
    start = time.perf_counter()
    for _ in range(num_samples):
        loss = objective.differentiable_loss(model, guide, *args, **kwargs)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for i, g in enumerate(grads):
            g = torch.zeros_like(tensors[i]) if g is None else g.detach()
            total[i] += g
            total_sq[i] += g * g
    seconds = (time.perf_counter() - start) / num_samples
    mean = {n: s / num_samples for n, s in zip(names, total, strict=True)}
    variance = {
        n: ((sq - num_samples * mean[n] ** 2) / (num_samples - 1)).clamp_min(0.0)
        for n, sq in zip(names, total_sq, strict=True)
    }
    return GradientStats(mean, variance, num_samples, seconds)


def compare_estimators(
    candidates: Mapping[str, tuple[Objective, Callable]],
    model: Callable,
    *args: Any,
    num_samples: int = 100,
    params: list[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Gradient statistics of several ``label -> (objective, guide)`` pairs in one table.

    Returns:
        A pandas DataFrame indexed by (estimator, parameter) with the columns of
        :meth:`GradientStats.table`.
    """
    import pandas as pd

    tables = {}
    for label, (objective, guide) in candidates.items():
        stats = gradient_variance(
            objective, model, guide, *args, num_samples=num_samples, params=params, **kwargs
        )
        tables[label] = stats.table()
    return pd.concat(tables, names=["estimator", "parameter"])
