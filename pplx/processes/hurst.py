r"""Maximum-likelihood Hurst index from observed paths, as a Pyro program.

The model has one parameter, ``pyro.param("hurst", constraint=interval(0, 1))``, and one
observed site: independent zero-mean Gaussian paths, :math:`x_i \sim \mathcal N(0, C(H))`, under
a covariance function ``covariance(H)`` (for instance :func:`~pplx.processes.fbm.ma_fbm_covariance`
of the Markov approximation, whose weights are differentiable in :math:`H`, or the exact
:func:`~pplx.processes.fbm.fbm_covariance`). With the empty :func:`hurst_guide` the ELBO is the
log-likelihood, so maximising it (:func:`fit_hurst`, L-BFGS through
:class:`pplx.objectives.ELBO`) gives the maximum-likelihood :math:`H`.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pplx.objectives import ELBO

Covariance = Callable[[torch.Tensor], torch.Tensor]


def hurst_model(paths: torch.Tensor, covariance: Covariance) -> None:
    """Paths ``(num_paths, num_times)`` ~ N(0, C(H)) independently; H a Pyro parameter."""
    hurst = pyro.param("hurst", paths.new_tensor(0.5), constraint=constraints.interval(0.0, 1.0))
    cov = covariance(hurst)
    with pyro.plate("paths", paths.shape[0]):
        pyro.sample("x", dist.MultivariateNormal(paths.new_zeros(paths.shape[-1]), cov), obs=paths)


def hurst_guide(paths: torch.Tensor, covariance: Covariance) -> None:
    """Empty: H is a parameter, so the ELBO is the log-likelihood."""


def fit_hurst(paths: torch.Tensor, covariance: Covariance, max_iter: int = 50) -> float:
    """Maximum-likelihood H by L-BFGS on the ELBO of :func:`hurst_model` (clears the store)."""
    pyro.clear_param_store()
    loss_fn = ELBO().differentiable_loss
    loss_fn(hurst_model, hurst_guide, paths, covariance)  # registers the parameter
    raw = pyro.param("hurst").unconstrained()
    optim = torch.optim.LBFGS([raw], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optim.zero_grad()
        loss = loss_fn(hurst_model, hurst_guide, paths, covariance)
        loss.backward()
        return loss

    optim.step(closure)
    return float(pyro.param("hurst").detach())
