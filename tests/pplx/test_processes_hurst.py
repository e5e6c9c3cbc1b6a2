"""Hurst recovery: learn H from exact fBM paths under the MA-fBM likelihood (issue 6).

Paths are drawn exactly by Davies-Harte (:func:`pplx.processes.sample_fbm`, 64 paths on 100
steps of [0, 1], fixed seed). The model is a Pyro program with one parameter,
``pyro.param("hurst", constraint=interval(0, 1))``, and one observed site, the paths under the
exact covariance of the type-I Markov approximation (:func:`ma_fbm_covariance`, K = 10 speeds
on [1e-4, 1e4]); the guide is empty, so the ELBO is the log-likelihood and maximising it is
maximum likelihood. The gradient in H flows through the weights (incomplete gamma functions).
With 6,400 increments the statistical error of the estimate is about 0.003 (the exact-fBM
likelihood, fitted the same way, is the reference); the approximation adds a bias of at most
about 0.006 on this grid. The paper's grid (K = 5 on [0.05, 20]) is biased at H = 0.2 (the
fastest speed is too slow for lags of 0.01).
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from pplx.objectives import ELBO
from pplx.processes import fbm_covariance, geometric_gammas, ma_fbm_covariance, sample_fbm

F64 = torch.float64
HORIZON, NUM_STEPS, NUM_PATHS = 1.0, 100, 64
GAMMAS = dict(num_processes=10, gamma_max=1e4, gamma_min=1e-4)


def _paths(hurst, seed=0):
    gen = torch.Generator().manual_seed(seed)
    paths = sample_fbm((HORIZON, NUM_STEPS), hurst, NUM_PATHS, generator=gen, dtype=F64)
    return paths[:, 1:]  # B(0) = 0 carries no information


def _times():
    return torch.linspace(0.0, HORIZON, NUM_STEPS + 1, dtype=F64)[1:]


def _model(paths, covariance):
    hurst = pyro.param(
        "hurst", torch.tensor(0.5, dtype=F64), constraint=constraints.interval(0.0, 1.0)
    )
    cov = covariance(hurst)
    with pyro.plate("paths", paths.shape[0]):
        pyro.sample("x", dist.MultivariateNormal(paths.new_zeros(paths.shape[-1]), cov), obs=paths)


def _guide(paths, covariance):
    pass


def fit_hurst(paths, covariance, max_iter=50):
    """Maximum likelihood H: L-BFGS on the (exact, single-particle) ELBO of an empty guide."""
    pyro.clear_param_store()
    loss_fn = ELBO().differentiable_loss
    loss_fn(_model, _guide, paths, covariance)  # registers the parameter
    raw = pyro.param("hurst").unconstrained()
    optim = torch.optim.LBFGS([raw], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optim.zero_grad()
        loss = loss_fn(_model, _guide, paths, covariance)
        loss.backward()
        return loss

    optim.step(closure)
    return float(pyro.param("hurst").detach())


@pytest.mark.parametrize("hurst", [0.2, 0.5, 0.8])
def test_hurst_recovered_from_exact_fbm_paths(hurst):
    times = _times()
    gammas = geometric_gammas(**GAMMAS, dtype=F64)
    paths = _paths(hurst)

    estimate = fit_hurst(paths, lambda h: ma_fbm_covariance(times, h, gammas, kind="I"))
    assert abs(estimate - hurst) < 0.05
    # much tighter in fact: the approximation's bias is small against the exact likelihood
    reference = fit_hurst(paths, lambda h: fbm_covariance(times, h, kind="I"))
    assert abs(reference - hurst) < 0.02
    assert abs(estimate - reference) < 0.01


def test_elbo_of_empty_guide_is_the_log_likelihood():
    times = _times()[:20]
    gammas = geometric_gammas(**GAMMAS, dtype=F64)
    paths = _paths(0.3)[:, :20]

    def covariance(h):
        return ma_fbm_covariance(times, h, gammas, kind="I", horizon=HORIZON)

    pyro.clear_param_store()
    loss = ELBO().differentiable_loss(_model, _guide, paths, covariance)
    cov = covariance(torch.tensor(0.5, dtype=F64))
    expected = torch.distributions.MultivariateNormal(torch.zeros(20, dtype=F64), cov)
    torch.testing.assert_close(loss, -expected.log_prob(paths).sum())
    loss.backward()
    assert pyro.param("hurst").unconstrained().grad.abs() > 0
