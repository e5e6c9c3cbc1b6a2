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
import pytest
import torch

from pplx.objectives import ELBO
from pplx.processes import (
    fbm_covariance,
    fit_hurst,
    geometric_gammas,
    hurst_guide,
    hurst_model,
    ma_fbm_covariance,
    sample_fbm,
)

F64 = torch.float64
HORIZON, NUM_STEPS, NUM_PATHS = 1.0, 100, 64
GAMMAS = dict(num_processes=10, gamma_max=1e4, gamma_min=1e-4)


def _paths(hurst, seed=0):
    gen = torch.Generator().manual_seed(seed)
    paths = sample_fbm((HORIZON, NUM_STEPS), hurst, NUM_PATHS, generator=gen, dtype=F64)
    return paths[:, 1:]  # B(0) = 0 carries no information


def _times():
    return torch.linspace(0.0, HORIZON, NUM_STEPS + 1, dtype=F64)[1:]


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
    loss = ELBO().differentiable_loss(hurst_model, hurst_guide, paths, covariance)
    cov = covariance(torch.tensor(0.5, dtype=F64))
    expected = torch.distributions.MultivariateNormal(torch.zeros(20, dtype=F64), cov)
    torch.testing.assert_close(loss, -expected.log_prob(paths).sum())
    loss.backward()
    assert pyro.param("hurst").unconstrained().grad.abs() > 0
