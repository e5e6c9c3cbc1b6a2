"""Tests of the stochastic-gradient MCMC engines (``pplx.inference.sgmcmc``): SGLD, pSGLD, SGHMC.

Statistical checks run many chains as one batch (init="prior" draws them from the target itself
for the Gaussian targets, or from the exact posterior for the regression, so no long warm-up is
needed) and compare against closed forms with a tolerance of 4 Monte Carlo standard errors.

Every update is linear on a Gaussian target, so the sampler's *exact* stationary covariance at a
finite step size solves a discrete Lyapunov equation (:func:`lyapunov`); the tests use it to
check that the discretisation bias is well below the standard error (or, for a large step, that
the draws follow it and not the target). With minibatches the extra gradient noise enters the
same linear recursion, so its contribution is computable too.
"""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.stats import effective_sample_size

from pplx.inference import (
    PSGLD,
    SGHMC,
    SGLD,
    Constant,
    Cyclical,
    ModelError,
    PolynomialDecay,
    SGMCMCState,
    load_checkpoint,
)
from pplx.inference.checkpoint import set_rng_state

D64 = torch.float64


def t(value, dtype=D64) -> torch.Tensor:
    return torch.as_tensor(value, dtype=dtype)


# --------------------------------------------------------------------------- linear algebra


def lyapunov(A: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Stationary covariance S = A S A^T + Q of x' = A x + e, Cov(e) = Q."""
    n = A.shape[0]
    eye = torch.eye(n * n, dtype=D64)
    return torch.linalg.solve(eye - torch.kron(A, A), Q.reshape(-1)).reshape(n, n)


def _blocks(m: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.cat([m, m], 1), torch.cat([m, m], 1)])


def linear_system(method, prec, step, friction=None, grad_noise=None):
    """The update of a sampler on N(mu, prec^-1) as x' = A x + e (x = position - mu).

    Returns ``(A, Q_thermal, Q_minibatch)``: the covariances of the injected noise and of the
    minibatch gradient noise (``grad_noise`` is the covariance of the gradient estimate). For
    SGHMC the state is (position, momentum); for pSGLD the preconditioner is frozen at its
    stationary value G = diag(E[g^2])^(-1/2) = diag(prec)^(-1/2) (its fluctuations are not
    modelled).
    """
    d = prec.shape[0]
    eye = torch.eye(d, dtype=D64)
    noise = torch.zeros(d, d, dtype=D64) if grad_noise is None else grad_noise
    if method == "sgld":  # x' = x + eps/2 (-prec x + xi) + sqrt(eps) n
        return eye - step / 2 * prec, step * eye, step**2 / 4 * noise
    if method == "psgld":
        g = torch.diag(prec.diagonal().rsqrt())
        return eye - step / 2 * g @ prec, step * g, step**2 / 4 * g @ noise @ g
    if method == "sghmc":  # v' = (1-a) v - eta prec x + eta xi + N(0, 2 a eta); x' = x + v'
        a = torch.cat(
            [
                torch.cat([eye - step * prec, (1 - friction) * eye], 1),
                torch.cat([-step * prec, (1 - friction) * eye], 1),
            ]
        )
        return a, _blocks(2 * friction * step * eye), _blocks(step**2 * noise)
    raise ValueError(method)


def stationary_cov(method, prec, step, friction=None, grad_noise=None) -> torch.Tensor:
    """Exact stationary covariance of the positions (with minibatch noise if given)."""
    A, q_thermal, q_batch = linear_system(method, prec, step, friction, grad_noise)
    d = prec.shape[0]
    return lyapunov(A, q_thermal + q_batch)[:d, :d]


def time_average_cov(A: torch.Tensor, Q: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """Cov of (1/T) sum_{t=start}^{start+T-1} x_t for x' = A x + e, Cov(e) = Q, x_0 = 0.

    x_t = sum_{k<t} A^(t-1-k) e_k, so the window sum is sum_k P_k e_k with
    P_k = sum_{j=max(start-1-k, 0)}^{start+T-2-k} A^j (prefix sums of the powers of A).
    """
    n, end = A.shape[0], start + length
    powers = [torch.eye(n, dtype=D64)]
    for _ in range(end):
        powers.append(powers[-1] @ A)
    prefix = torch.cat([torch.zeros(1, n, n, dtype=D64), torch.stack(powers).cumsum(0)])
    k = torch.arange(end - 1)
    p = prefix[end - 1 - k] - prefix[(start - 1 - k).clamp(min=0)]
    return (p @ Q @ p.transpose(-1, -2)).sum(0) / length**2


# --------------------------------------------------------------------------- estimators


def pooled_moments(z: torch.Tensor):
    """Mean and covariance of draws ``(C, S, d)`` pooled over chains, with the covariance's
    standard error from batch means: each chain's average of (z - mean)(z - mean)^T is one
    batch, and chains that share no randomness are independent, so SE = sd over chains /
    sqrt(C) (exact whatever the autocorrelation, as long as the chains are independent).
    """
    chains = z.shape[0]
    mean = z.reshape(-1, z.shape[-1]).mean(0)
    dev = z - mean
    per_chain = (dev.unsqueeze(-1) * dev.unsqueeze(-2)).mean(1)
    return mean, per_chain.mean(0), per_chain.std(0) / math.sqrt(chains)


def correlation_with_se(z: torch.Tensor) -> tuple[float, float]:
    """Correlation of the two coordinates of draws ``(C, S, 2)`` and its standard error.

    Delta method on batch means: r = c01 / sqrt(c00 c11) is linearised around the pooled
    moments, each chain's moments give one pseudo-value of r, and SE = sd of the pseudo-values
    over (independent) chains / sqrt(C).
    """
    chains = z.shape[0]
    dev = z - z.reshape(-1, 2).mean(0)
    moments = torch.stack(
        [
            (dev[..., 0] ** 2).mean(1),
            (dev[..., 1] ** 2).mean(1),
            (dev[..., 0] * dev[..., 1]).mean(1),
        ]
    )  # (3, C): c00, c11, c01 of each chain
    c00, c11, c01 = moments.mean(1)
    r = c01 / (c00 * c11).sqrt()
    grad = torch.stack([-r / (2 * c00), -r / (2 * c11), 1 / (c00 * c11).sqrt()])
    pseudo = (grad.unsqueeze(1) * moments).sum(0)
    return float(r), float(pseudo.std() / math.sqrt(chains))


def mean_se(result, site: str, variance: torch.Tensor) -> torch.Tensor:
    """Standard error of a posterior mean from the result's bulk ESS: sqrt(var / ESS)."""
    ess = result.effective_sample_size()[site]
    assert (ess > 100).all(), ess  # below this the error estimates themselves are unreliable
    return (variance / ess).sqrt()


# --------------------------------------------------------------------------- models

SD = 2.0  # N(0, SD^2): not 1, so that variance, standard deviation and precision all differ


def normal_model():
    pyro.sample("x", dist.Normal(t(0.0), t(SD)))


MVN_LOC = t([1.0, -2.0])
MVN_COV = t([[1.0, 0.8 * 2.0], [0.8 * 2.0, 4.0]])  # sds 1 and 2, correlation 0.8
MVN_PREC = torch.linalg.inv(MVN_COV)


def mvn_model():
    pyro.sample("z", dist.MultivariateNormal(MVN_LOC, MVN_COV))


# Bayesian linear regression, y ~ N(X w, NOISE^2), w ~ N(0, I): exact Gaussian posterior.
N_DATA, DIM, BATCH, NOISE = 1000, 3, 100, 1.0


def _regression_data():
    gen = torch.Generator().manual_seed(1)
    design_corr = 0.8 * torch.eye(DIM, dtype=D64) + 0.2  # correlated regressors
    x = torch.randn(N_DATA, DIM, generator=gen, dtype=D64) @ torch.linalg.cholesky(design_corr).T
    y = x @ t([1.0, -0.5, 0.25]) + NOISE * torch.randn(N_DATA, generator=gen, dtype=D64)
    return x, y


X_REG, Y_REG = _regression_data()
REG_PREC = torch.eye(DIM, dtype=D64) + X_REG.T @ X_REG / NOISE**2
REG_COV = torch.linalg.inv(REG_PREC)
REG_MEAN = REG_COV @ X_REG.T @ Y_REG / NOISE**2
# Covariance of Pyro's minibatch gradient (N/B) sum_{i in batch} g_i, batch drawn without
# replacement, g_i = x_i (y_i - x_i.w) / NOISE^2 at the posterior mean (its dependence on w is
# O(1/N) smaller): N^2/B (N-B)/(N-1) times the population covariance of the g_i.
_PER_DATUM = X_REG * (Y_REG - X_REG @ REG_MEAN).unsqueeze(-1) / NOISE**2
REG_GRAD_NOISE = (
    N_DATA**2 / BATCH * (N_DATA - BATCH) / (N_DATA - 1) * torch.cov(_PER_DATUM.T, correction=0)
)


def regression_model(x, y, batch_size=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(DIM, dtype=D64), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        # (x * w).sum(-1), not x @ w: w is (chains, 1, DIM) inside the chain batch
        pyro.sample("y", dist.Normal((x[idx] * w).sum(-1), NOISE), obs=y[idx])


def posterior_draws(num: int, seed: int = 2) -> torch.Tensor:
    """Exact posterior draws of the regression weights, ``(num, DIM)``: chains start there."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, DIM, generator=gen, dtype=D64)
    return REG_MEAN + z @ torch.linalg.cholesky(REG_COV).T


Y_LOC = 0.5 + torch.randn(N_DATA, generator=torch.Generator().manual_seed(3), dtype=D64)
LOC_PREC = 0.01 + N_DATA
LOC_MEAN = float(Y_LOC.sum()) / LOC_PREC


def location_model(y, batch_size=None):
    """mu ~ N(0, 10^2), y_i ~ N(mu, 1): posterior precision 0.01 + N."""
    mu = pyro.sample("mu", dist.Normal(t(0.0), t(10.0)))
    with pyro.plate("data", y.shape[0], subsample_size=batch_size) as idx:
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])


def constrained_model(y):
    """A Beta probability, a HalfNormal scale and a real location."""
    p = pyro.sample("p", dist.Beta(t(2.0), t(2.0)))
    scale = pyro.sample("scale", dist.HalfNormal(t(1.0)))
    loc = pyro.sample("loc", dist.Normal(t(0.0), t(1.0)))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(loc, scale), obs=y)
        pyro.sample("hit", dist.Bernoulli(p), obs=(y > 0).to(y.dtype))


Y_SMALL = t([0.3, -1.2, 0.8, 2.1, -0.4, 0.9])


def constrained_init(chains: int, scale: float = 1.0, dtype=D64) -> dict[str, torch.Tensor]:
    """Constrained starting values near the posterior for every chain.

    Prior draws are no good start here: a HalfNormal draw of 0.01 makes the likelihood's
    gradient in log-scale ~ sum (y - loc)^2 / scale^2 ~ 1e5, and a step size that suits the
    posterior blows up from there.
    """
    values = {"p": 0.5, "scale": scale, "loc": 0.3}
    return {k: torch.full((chains,), v, dtype=dtype) for k, v in values.items()}


SAMPLERS = {"sgld": SGLD, "psgld": PSGLD, "sghmc": SGHMC}


# ---------------------------------------------------------------- 1. step-size convention


@pytest.mark.parametrize(
    "method, kwargs, chains, warmup, draws",
    [
        # eps = 0.1 on N(0, 4): rho = 1 - eps / (2 SD^2) = 0.9875, bias factor 1.006.
        ("sgld", {"step_size": 0.1}, 1024, 100, 1000),
        # eta = 0.01, friction 0.1: critically damped on N(0, 4) (friction = 2 sqrt(eta) / SD).
        ("sghmc", {"step_size": 0.01, "friction": 0.1}, 1024, 100, 1000),
        # pSGLD: the RMSprop average (beta = 0.999) needs ~2000 steps to settle; G ~ SD, so the
        # effective step is eps * SD = 0.2. Besides the discretisation bias (~1.3 %, below)
        # its adaptive preconditioner adds ~1.5 % (measured: 4.11 +- 0.03 with 1024 chains);
        # that is about 1 SE at this size. See test_psgld_documented_setting_is_unbiased.
        ("psgld", {"step_size": 0.1}, 256, 2000, 1000),
    ],
)
def test_normal_target_mean_and_variance(method, kwargs, chains, warmup, draws):
    sampler = SAMPLERS[method](normal_model, jit=True, **kwargs)
    result = sampler.run(num_samples=draws, warmup_steps=warmup, num_chains=chains)
    x = result.get_samples()["x"]
    assert x.dtype == D64 and x.shape == (chains * draws,)
    mean, var = float(x.mean()), float(x.var())
    ess = float(result.effective_sample_size()["x"])
    assert ess > 1000
    se_mean, se_var = math.sqrt(var / ess), var * math.sqrt(2 / ess)

    # Discretisation bias from the exact stationary variance of the linear update.
    predicted = float(
        stationary_cov(method, t([[SD**-2]]), kwargs["step_size"], kwargs.get("friction"))
    )
    assert abs(predicted - SD**2) < (1.0 if method == "psgld" else 0.5) * se_var
    assert abs(mean) < 4 * se_mean
    assert abs(var - SD**2) < 4 * se_var, (var, se_var)


def test_sgld_large_step_follows_exact_discretisation_formula():
    # Welling & Teh's convention theta += eps/2 grad + N(0, eps): on N(0, s^2) the chain is
    # AR(1) with rho = 1 - eps/(2 s^2), whose stationary variance is s^2 / (1 - eps/(4 s^2)).
    # With eps = s^2 / 2 that is 8/7 s^2 (+14 %), far outside the Monte Carlo error.
    eps = 0.5 * SD**2
    result = SGLD(normal_model, step_size=eps, jit=True).run(
        num_samples=1000, warmup_steps=50, num_chains=256
    )
    x = result.get_samples()["x"]
    var = float(x.var())
    se = var * math.sqrt(2 / float(result.effective_sample_size()["x"]))
    exact = SD**2 / (1 - eps / (4 * SD**2))
    assert exact == pytest.approx(8 / 7 * SD**2)
    assert abs(var - exact) < 4 * se, (var, exact, se)
    assert abs(var - SD**2) > 8 * se  # the convention is visible: it is not the target variance
    # other conventions would give s^2 / (1 - eps/(2 s^2)) (eps, not eps/2, on the gradient
    # with N(0, 2 eps) noise) = 1.33 s^2, or s^2 / 2 (eps on the gradient, N(0, eps) noise)
    assert abs(var - SD**2 / (1 - eps / (2 * SD**2))) > 8 * se


def test_sghmc_large_step_follows_exact_discretisation():
    # The practical SGHMC update (v' = (1-a) v + eta grad + N(0, 2 a eta), x' = x + v') on
    # N(0, s^2) is linear in (x, v): its exact stationary variance solves a Lyapunov equation.
    eta, friction = 2.0, 0.5
    exact = float(stationary_cov("sghmc", t([[SD**-2]]), eta, friction))
    assert exact == pytest.approx(1.2 * SD**2)  # +20 %
    result = SGHMC(normal_model, step_size=eta, friction=friction, jit=True).run(
        num_samples=1000, warmup_steps=50, num_chains=256
    )
    x = result.get_samples()["x"]
    var = float(x.var())
    se = var * math.sqrt(2 / float(result.effective_sample_size()["x"]))
    assert abs(var - exact) < 4 * se, (var, exact, se)
    assert abs(var - SD**2) > 8 * se


def test_sghmc_with_unit_friction_is_sgld_with_twice_the_step():
    # friction = 1: v' = eta g + sqrt(2 eta) n and x' = x + v', i.e. SGLD with eps = 2 eta
    # (x + eps/2 g + sqrt(eps) n). Both draw one randn per step after the same model call, so
    # the same seed gives the same noise. Not bitwise: SGLD rounds (x + eps/2 g) + sqrt(eps) n,
    # SGHMC x + ((0 v + eta g) + sqrt(2 eta) n); the update is contracting, so the rounding
    # differences stay at the level of float64 epsilon.
    eta = 0.05
    pyro.set_rng_seed(5)
    sghmc = SGHMC(normal_model, step_size=eta, friction=1.0).run(
        num_samples=300, warmup_steps=10, num_chains=8
    )
    pyro.set_rng_seed(5)
    sgld = SGLD(normal_model, step_size=2 * eta).run(
        num_samples=300, warmup_steps=10, num_chains=8
    )
    a, b = sghmc.samples["x"], sgld.samples["x"]
    assert a.std() > 1  # the chains moved
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(sghmc.sample_stats["lp"], sgld.sample_stats["lp"])


@pytest.mark.parametrize("case", ["mvn", "minibatch"])
def test_jit_and_eager_give_the_same_chains(case):
    # The statistical tests use jit=True for speed; it must not change the draws. With
    # minibatches the indices are inputs of the compiled function: each step gets a fresh one.
    if case == "mvn":
        model, args, kwargs = mvn_model, (), {"step_size": 0.05}
    else:
        model, args, kwargs = regression_model, (X_REG, Y_REG, BATCH), {"step_size": 1e-5}
        kwargs["init"] = posterior_draws(4)
    results = []
    for jit in (False, True):
        pyro.set_rng_seed(7)
        sampler = SGHMC(model, jit=jit, **kwargs)
        results.append(sampler.run(*args, num_samples=50, warmup_steps=5, num_chains=4))
    eager, jitted = results
    for site in eager.samples:
        torch.testing.assert_close(eager.samples[site], jitted.samples[site], rtol=0, atol=1e-12)
    torch.testing.assert_close(eager.sample_stats["lp"], jitted.sample_stats["lp"])
    if case == "minibatch":
        # the compiled minibatch estimate changes from call to call at the same position
        potential = sampler.potential(*args)
        z = posterior_draws(4)
        assert not torch.equal(potential.log_density(z), potential.log_density(z))


def test_psgld_documented_setting_is_unbiased():
    # The PSGLD docstring: "On N(0, 4) with step 0.02, ... 0.999 gives 4.1 (within Monte Carlo
    # error)". That was measured with ESS ~130 (SE ~0.5). Here the variance is 4.37 +- 0.05
    # (8 SE off; 4.42 +- 0.10 after 8000 warm-up steps, so no transient). The same sampler
    # with its preconditioner frozen after the 2000 warm-up steps gives 4.06 +- 0.07 (against
    # 4.01 from the discretisation formula): the bias comes from adapting G while sampling,
    # G being correlated with the chain's recent positions.
    chains = 2048
    result = PSGLD(normal_model, step_size=0.02, jit=True).run(
        num_samples=2000, warmup_steps=2000, num_chains=chains
    )
    _, cov, se = pooled_moments(result.samples["x"].unsqueeze(-1))
    assert abs(float(cov) - SD**2) < 4 * float(se), (float(cov), float(se))


def test_psgld_first_step_from_the_mode_is_sane():
    # N(0, 0.5^2) started at its mode: every sensible preconditioner (G ~ 0.5) moves by about
    # sqrt(0.01 * 0.5) = 0.07. The first kept draw (warmup_steps=1) is the position after one
    # update; it lands ~30 (60 posterior sds) away.
    def narrow():
        pyro.sample("x", dist.Normal(t(0.0), t(0.5)))

    result = PSGLD(narrow, step_size=0.01, init=torch.zeros(16, 1, dtype=D64)).run(
        num_samples=1, warmup_steps=1, num_chains=16
    )
    assert result.samples["x"].abs().max() < 1.0, result.samples["x"].flatten()


# ---------------------------------------------------------------- 2. correlated 2-D target


@pytest.mark.parametrize(
    "method, kwargs, chains, warmup, draws, max_bias",
    [
        # stiff direction: eps * lambda_max / 4 = 2 % bias on a variance of 0.31
        ("sgld", {"step_size": 0.025}, 1024, 100, 1500, 0.5),
        ("sghmc", {"step_size": 0.01, "friction": 0.1}, 1024, 100, 1000, 0.5),
        # pSGLD: frozen-preconditioner discretisation bias ~0.7 SE here, plus the adaptive
        # preconditioner's own (see test_psgld_documented_setting_is_unbiased); 256 chains
        # keep the total near 1 SE.
        ("psgld", {"step_size": 0.1}, 256, 2000, 1000, 1.0),
    ],
)
def test_correlated_gaussian_mean_and_covariance(method, kwargs, chains, warmup, draws, max_bias):
    sampler = SAMPLERS[method](mvn_model, jit=True, **kwargs)
    result = sampler.run(num_samples=draws, warmup_steps=warmup, num_chains=chains)
    z = result.get_samples(group_by_chain=True)["z"]
    assert z.shape == (chains, draws, 2)
    mean, cov, se = pooled_moments(z)
    predicted = stationary_cov(method, MVN_PREC, kwargs["step_size"], kwargs.get("friction"))
    assert ((predicted - MVN_COV).abs() < max_bias * se).all(), (predicted - MVN_COV) / se
    assert ((mean - MVN_LOC).abs() < 4 * mean_se(result, "z", cov.diagonal())).all(), mean
    assert ((cov - MVN_COV).abs() < 4 * se).all(), (cov - MVN_COV) / se
    # the correlation is recovered, not just the scales
    corr, corr_se = correlation_with_se(z)
    assert abs(corr - 0.8) < 4 * corr_se, (corr, corr_se)


# ---------------------------------------------------------------- 3. regression


@pytest.mark.parametrize(
    "method, kwargs",
    [
        # eps * lambda: 0.0075 .. 0.014 (lambda = eigenvalues of the posterior precision)
        ("sgld", {"step_size": 1e-5}),
        # eta * lambda ~ 1e-3, slightly overdamped (critical friction 2 sqrt(eta lambda) ~ 0.07)
        ("sghmc", {"step_size": 1e-6, "friction": 0.1}),
    ],
)
def test_regression_with_minibatches_matches_exact_posterior(method, kwargs):
    chains, warmup, draws = 128, 200, 1500
    sampler = SAMPLERS[method](regression_model, init=posterior_draws(chains), jit=True, **kwargs)
    result = sampler.run(
        X_REG, Y_REG, BATCH, num_samples=draws, warmup_steps=warmup, num_chains=chains
    )
    w = result.get_samples(group_by_chain=True)["w"]
    assert torch.isfinite(w).all()
    A, q_thermal, q_batch = linear_system(
        method, REG_PREC, kwargs["step_size"], kwargs.get("friction"), REG_GRAD_NOISE
    )

    # All chains share the minibatch of a step, so the part of the gradient noise that does
    # not depend on w is common to them: w_{c,t} = shared_t + own_{c,t}. The shared part does
    # not average out over chains; its contribution to the pooled mean's variance is exact for
    # the linear update (time_average_cov, starting from 0 since the chains start at
    # independent exact posterior draws). The chains' own parts are independent: their
    # contribution is the spread of the per-chain means over chains.
    shared = time_average_cov(A, q_batch, warmup, draws)[:DIM, :DIM]
    own = w.mean(1).var(0) / chains
    se_mean = (own + shared.diagonal()).sqrt()
    mean = w.mean((0, 1))
    assert ((mean - REG_MEAN).abs() < 4 * se_mean).all(), (mean - REG_MEAN) / se_mean

    # Covariance across chains at each step: the shared part cancels, what is left is each
    # chain's own fluctuation, whose stationary covariance is the full-batch one (thermal
    # noise only). Batches: one chain's average over time; chains independent.
    dev = w - w.mean(0, keepdim=True)
    per_chain = (dev.unsqueeze(-1) * dev.unsqueeze(-2)).mean(1) * chains / (chains - 1)
    within, se = per_chain.mean(0), per_chain.std(0) / math.sqrt(chains)
    predicted_within = lyapunov(A, q_thermal)[:DIM, :DIM]
    assert ((predicted_within - REG_COV).abs() < 0.25 * se).all()  # discretisation: < 0.3 %
    assert ((within - REG_COV).abs() < 4 * se).all(), (within - REG_COV) / se

    # The marginal covariance of a chain adds the shared part: the minibatch noise inflates the
    # variance "slightly" -- by 2-4 % here (Lyapunov with the minibatch noise covariance).
    inflation = lyapunov(A, q_batch)[:DIM, :DIM].diagonal() / REG_COV.diagonal()
    assert (inflation > 0.01).all() and (inflation < 0.05).all(), inflation
    # The pooled covariance exceeds the across-chain one by the shared part's empirical
    # variance: ~3 % expected, from only a few autocorrelation times of one shared path.
    flat = w.reshape(-1, DIM)
    pooled = torch.cov(flat.T)
    excess = (pooled - within).diagonal() / REG_COV.diagonal()
    assert (excess > -4 * se.diagonal() / REG_COV.diagonal()).all(), excess
    assert (excess < 0.2).all(), excess


def test_regression_full_batch_matches_exact_posterior():
    # No subsample_size: exact gradients, independent chains (jit: no minibatch to freeze).
    chains, warmup, draws, eps = 64, 100, 1000, 2e-5
    sampler = SGLD(regression_model, step_size=eps, init=posterior_draws(chains, 4), jit=True)
    result = sampler.run(
        X_REG, Y_REG, None, num_samples=draws, warmup_steps=warmup, num_chains=chains
    )
    w = result.get_samples(group_by_chain=True)["w"]
    mean, cov, se = pooled_moments(w)
    predicted = stationary_cov("sgld", REG_PREC, eps)
    assert ((predicted - REG_COV).abs() < 0.25 * se).all()  # discretisation: < 0.5 %
    assert ((mean - REG_MEAN).abs() < 4 * mean_se(result, "w", cov.diagonal())).all()
    assert ((cov - REG_COV).abs() < 4 * se).all(), (cov - REG_COV) / se


def _cross_chain_design_effect(draws: torch.Tensor) -> tuple[float, float]:
    """Variance of the across-chain mean relative to (within-step variance / chains), ``(C, S)``.

    1 for independent chains; (1 + (C - 1) r) / (1 - r) for chains with pairwise correlation r.
    Returns the ratio and its standard error sqrt(2 / ESS) from the ESS of the across-chain
    mean's path.
    """
    chains = draws.shape[0]
    path = draws.mean(0)
    ratio = float(path.var() * chains / draws.var(0).mean())
    ess = float(effective_sample_size(path.reshape(1, -1), chain_dim=0, sample_dim=1))
    return ratio, math.sqrt(2 / ess)


def test_chains_are_independent_with_full_batch_gradients():
    # eps * lambda = 0.5: AR(1) with rho = 0.75, so the path holds ~100 independent values.
    chains = 64
    gen = torch.Generator().manual_seed(5)
    init = LOC_MEAN + torch.randn(chains, 1, generator=gen, dtype=D64) / math.sqrt(LOC_PREC)
    result = SGLD(location_model, step_size=5e-4, init=init).run(
        Y_LOC, num_samples=800, warmup_steps=20, num_chains=chains
    )
    ratio, se = _cross_chain_design_effect(result.samples["mu"])
    assert abs(ratio - 1) < 4 * se, (ratio, se)


@pytest.mark.parametrize("minibatches", [None, "per_chain", "shared"])
def test_chains_are_independent_with_minibatches(minibatches):
    # Same run with minibatches of 100. Shared by all chains, the minibatch noise
    # (eps/2)^2 N^2/B (1 - B/N) var(y) per step is about the size of the injected noise eps,
    # so roughly half of each chain's fluctuation is common to all (r ~ 0.5): the across-chain
    # mean varies ~70x more than it would for independent chains (measured: 69 against
    # 1.01 +- 0.15 with a minibatch per chain, the default).
    chains = 64
    gen = torch.Generator().manual_seed(5)
    init = LOC_MEAN + torch.randn(chains, 1, generator=gen, dtype=D64) / math.sqrt(LOC_PREC)
    sampler = SGLD(location_model, step_size=5e-4, init=init, minibatches=minibatches)
    result = sampler.run(Y_LOC, BATCH, num_samples=800, warmup_steps=20, num_chains=chains)
    ratio, se = _cross_chain_design_effect(result.samples["mu"])
    if minibatches == "shared":  # the common noise correlates the chains (r ~ 0.5)
        assert result.info["shared_minibatches"]
        assert ratio > 10, (ratio, se)
    else:  # every chain draws its own minibatch
        assert not result.info["shared_minibatches"]
        assert abs(ratio - 1) < 4 * se, (ratio, se)


def _location_model_reading_values(y, batch_size=None):
    """location_model with a Python read of a tensor value (vmap cannot batch it)."""
    mu = pyro.sample("mu", dist.Normal(t(0.0), t(10.0)))
    with pyro.plate("data", y.shape[0], subsample_size=batch_size) as idx:
        scale = 1.0 if float(y[idx].abs().max()) < 1e6 else 2.0
        pyro.sample("y", dist.Normal(mu, scale), obs=y[idx])


def test_per_chain_minibatches_need_a_model_that_runs_under_vmap():
    sampler = SGLD(_location_model_reading_values, minibatches="per_chain", jit=False)
    with pytest.raises(ModelError, match="one minibatch per chain.*minibatches='shared'"):
        sampler.run(Y_LOC, BATCH, num_samples=2, warmup_steps=0, num_chains=2)
    # the default falls back to shared minibatches, with a warning, and says so in the result
    sampler = SGLD(_location_model_reading_values, step_size=1e-4, jit=False)
    with pytest.warns(RuntimeWarning, match="Falling back to minibatches shared by all"):
        result = sampler.run(Y_LOC, BATCH, num_samples=2, warmup_steps=0, num_chains=2)
    assert result.info["shared_minibatches"]
    # one chain, or no subsampling: nothing is shared
    result = sampler.run(Y_LOC, BATCH, num_samples=2, warmup_steps=0, num_chains=1)
    assert not result.info["shared_minibatches"]
    result = SGLD(location_model, step_size=1e-4).run(
        Y_LOC, num_samples=2, warmup_steps=0, num_chains=3
    )
    assert not result.info["shared_minibatches"]
    with pytest.raises(ValueError, match="minibatches must be 'per_chain', 'shared' or None"):
        SGLD(location_model, minibatches="chain")


# ---------------------------------------------------------------- 4. chains as a batch


def test_chains_thinning_stats_and_supports():
    sampler = SGLD(constrained_model, step_size=0.02, init=constrained_init(8))
    result = sampler.run(Y_SMALL, num_samples=50, warmup_steps=20, num_chains=8, thinning=3)
    grouped = result.get_samples(group_by_chain=True)
    assert set(grouped) == {"p", "scale", "loc"}
    for value in grouped.values():
        assert value.shape == (8, 50) and value.dtype == D64
        assert torch.isfinite(value).all()
    assert result.get_samples()["loc"].shape == (400,)
    assert (result.num_chains, result.num_draws) == (8, 50)
    # constrained sites stay in their support
    assert (grouped["scale"] > 0).all()
    assert ((grouped["p"] > 0) & (grouped["p"] < 1)).all()
    # chains are different chains: no two share a draw
    loc = grouped["loc"]
    assert len(torch.unique(loc[:, -1])) == 8
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.isclose(loc[i], loc[j]).any()
    assert result.info["num_chains"] == 8
    assert result.info["num_samples"] == 50
    assert result.info["num_steps"] == 20 + 50 * 3
    assert result.info["divergences"] == 0
    stats = result.sample_stats
    assert set(stats) == {"lp", "step_size", "diverging"}
    for name in stats:
        assert stats[name].shape == (8, 50), name
    assert stats["diverging"].dtype == torch.bool and not stats["diverging"].any()
    assert (stats["step_size"] == 0.02).all()
    # lp is the log density (unconstrained space, Jacobian included) at the kept draw itself
    potential = sampler.potential(Y_SMALL)
    z = potential.pack({k: v.reshape(-1) for k, v in grouped.items()})
    torch.testing.assert_close(stats["lp"].reshape(-1), potential.log_density(z))


def test_thinning_keeps_every_kth_draw():
    runs = {}
    for thinning, draws in ((3, 20), (1, 60)):
        pyro.set_rng_seed(11)
        sampler = SGHMC(constrained_model, step_size=0.005, init=constrained_init(4))
        runs[thinning] = sampler.run(
            Y_SMALL, num_samples=draws, warmup_steps=7, num_chains=4, thinning=thinning
        )
    thin, full = runs[3], runs[1]
    assert thin.info["num_steps"] == 7 + 20 * 3 == full.info["num_steps"]
    for site in ("p", "scale", "loc"):
        assert torch.equal(thin.samples[site], full.samples[site][:, 2::3])
    assert torch.equal(thin.sample_stats["lp"], full.sample_stats["lp"][:, 2::3])


def test_to_arviz_and_diagnostics():
    result = SGLD(constrained_model, step_size=0.02, init=constrained_init(4)).run(
        Y_SMALL, num_samples=40, warmup_steps=10, num_chains=4
    )
    data = result.to_arviz()
    posterior = data["posterior"]
    assert set(posterior.data_vars) == {"p", "scale", "loc"}
    assert posterior.sizes["chain"] == 4 and posterior.sizes["draw"] == 40
    assert {"lp", "step_size", "diverging"} <= set(data["sample_stats"].data_vars)
    rhat, ess = az.rhat(data), az.ess(data)
    for name in ("p", "scale", "loc"):
        assert np.isfinite(float(rhat[name])) and float(ess[name]) > 0
    summary = result.summary()
    assert list(summary.index) == ["p", "scale", "loc"]


def test_init_options():
    # a dict of constrained values, a tensor, and "uniform"
    values = {"p": t([0.2, 0.7]), "scale": t([0.5, 2.0]), "loc": t([0.0, 1.0])}
    sampler = SGLD(constrained_model, step_size=1e-3, init=values)
    state = sampler.init(Y_SMALL, num_chains=2)
    samples = sampler.potential(Y_SMALL).to_samples(state.position)
    for name, value in values.items():
        torch.testing.assert_close(samples[name], value)
    with pytest.raises(ValueError, match=r"initial positions must have shape \(3, 3\)"):
        sampler.init(Y_SMALL, num_chains=3)
    uniform = SGLD(constrained_model, init="uniform").init(Y_SMALL, num_chains=5)
    assert uniform.position.shape == (5, 3) and (uniform.position.abs() < 2).all()
    with pytest.raises(ValueError, match="init must be 'prior' or 'uniform'"):
        SGLD(constrained_model, init="map").init(Y_SMALL, num_chains=2)


# ---------------------------------------------------------------- 5. schedules


def test_schedule_values():
    assert Constant(0.3)(0) == Constant(0.3)(10**6) == 0.3
    decay = PolynomialDecay(0.1, b=10.0, gamma=0.55)
    for step in (0, 1, 5, 100, 10**5):
        assert decay(step) == pytest.approx(0.1 * (10 + step) ** -0.55, rel=1e-12)
    assert decay(0) == pytest.approx(0.1 * 10**-0.55)
    assert PolynomialDecay(2.0)(3) == pytest.approx(2.0 * 4**-0.55)  # defaults b=1, gamma=0.55
    assert all(decay(s) > decay(s + 1) for s in range(50))

    cyc = Cyclical(0.2, cycle_length=10)
    assert cyc(0) == pytest.approx(0.2)
    assert cyc(5) == pytest.approx(0.1)  # half way: cos(pi/2) = 0
    assert cyc(7) == pytest.approx(0.1 * (math.cos(0.7 * math.pi) + 1))
    assert 0 < cyc(9) < 0.01  # the smallest step of a cycle is positive
    assert cyc(10) == pytest.approx(0.2) and cyc(27) == pytest.approx(cyc(7))


@pytest.mark.parametrize(
    "schedule", [Cyclical(0.02, cycle_length=7), PolynomialDecay(0.03, b=2.0, gamma=0.7)]
)
def test_recorded_step_size_follows_schedule(schedule):
    warmup, thinning, draws = 3, 2, 12
    result = SGLD(constrained_model, step_size=schedule, init=constrained_init(3)).run(
        Y_SMALL, num_samples=draws, warmup_steps=warmup, num_chains=3, thinning=thinning
    )
    # the draw kept at the k-th kept step is the position that step started from, recorded
    # with the step size the schedule gave at that step: t = warmup + thinning (k + 1) - 1
    expected = t([schedule(warmup + thinning * (k + 1) - 1) for k in range(draws)])
    recorded = result.sample_stats["step_size"]
    assert recorded.shape == (3, draws)
    torch.testing.assert_close(recorded, expected.expand(3, draws))
    assert result.state.step_size == schedule(warmup + thinning * draws - 1)


@pytest.mark.parametrize("bad", [0.0, -0.01, float("nan")])
def test_schedule_giving_non_positive_step_raises(bad):
    def schedule(step):
        return 0.01 if step < 5 else bad

    sampler = SGLD(normal_model, step_size=schedule)
    with pytest.raises(ValueError, match=r"schedule gave .* at step 5"):
        sampler.run(num_samples=10, warmup_steps=0, num_chains=2)


@pytest.mark.parametrize("cls", [SGLD, PSGLD, SGHMC])
@pytest.mark.parametrize("bad", [0, 0.0, -1e-3, float("nan"), "0.1", None])
def test_non_positive_constant_step_raises(cls, bad):
    with pytest.raises(ValueError, match="step_size must be positive"):
        cls(normal_model, step_size=bad)


@pytest.mark.parametrize("step", [np.float32(0.01), torch.tensor(0.01)], ids=["np32", "tensor"])
def test_positive_numeric_scalar_step_is_accepted(step):
    assert SGLD(normal_model, step_size=step).schedule(0) == pytest.approx(0.01)


def test_polynomial_decay_with_zero_offset_is_refused():
    with pytest.raises(ValueError, match="b"):
        SGLD(normal_model, step_size=PolynomialDecay(0.1, b=0.0)).run(
            num_samples=2, warmup_steps=0, num_chains=2
        )


# ---------------------------------------------------------------- 6. checkpoints


class Crash(RuntimeError):
    pass


def _crash_after(monkeypatch, sampler, calls: int) -> None:
    """Make ``sampler.step`` raise on its ``calls + 1``-th call."""
    original = sampler.step
    count = {"n": 0}

    def step(state, *args, **kwargs):
        if count["n"] == calls:
            raise Crash("simulated crash")
        count["n"] += 1
        return original(state, *args, **kwargs)

    monkeypatch.setattr(sampler, "step", step)


CHECKPOINT_CASES = {
    "sgld": (SGLD, {"step_size": 0.02}, constrained_model, (Y_SMALL,)),
    "psgld": (PSGLD, {"step_size": 0.01}, constrained_model, (Y_SMALL,)),
    "sghmc": (SGHMC, {"step_size": 0.005, "friction": 0.2}, constrained_model, (Y_SMALL,)),
    # minibatch indices come from torch's RNG too: they must be restored as well
    "sgld-minibatch": (
        SGLD,
        {"step_size": 1e-5, "init": posterior_draws(4)},
        regression_model,
        (X_REG, Y_REG, BATCH),
    ),
}
for _case in ("sgld", "psgld", "sghmc"):
    CHECKPOINT_CASES[_case][1]["init"] = constrained_init(4)
RUN = {"num_samples": 30, "warmup_steps": 15, "num_chains": 4, "thinning": 2}  # 75 steps


def _uninterrupted(case, path):
    cls, kwargs, model, args = CHECKPOINT_CASES[case]
    pyro.set_rng_seed(21)
    return cls(model, checkpoint=path, checkpoint_every=10, **kwargs).run(*args, **RUN)


def _crashed_run(case, path, monkeypatch) -> None:
    cls, kwargs, model, args = CHECKPOINT_CASES[case]
    pyro.set_rng_seed(21)
    sampler = cls(model, checkpoint=path, checkpoint_every=10, **kwargs)
    _crash_after(monkeypatch, sampler, 47)  # mid-sampling, 7 steps past the last checkpoint
    with pytest.raises(Crash):
        sampler.run(*args, **RUN)


def _assert_same_run(a, b) -> None:
    assert a.samples.keys() == b.samples.keys()
    for site in a.samples:
        assert torch.equal(a.samples[site], b.samples[site]), site
    for name in ("lp", "step_size", "diverging"):
        assert torch.equal(a.sample_stats[name], b.sample_stats[name]), name
    assert a.info == b.info


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_checkpoint_survives_a_crash(case, tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    _crashed_run(case, path, monkeypatch)
    cls = CHECKPOINT_CASES[case][0]
    payload = load_checkpoint(path, cls.default_name)
    assert payload["step"] == 40  # the last multiple of checkpoint_every before the crash
    assert len(payload["draws"]) == (40 - 15) // 2
    assert payload["position"].shape[0] == 4
    assert not list(tmp_path.glob(".ckpt-*"))  # no temporary files left behind


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_resume_after_crash_equals_uninterrupted_run(case, tmp_path, monkeypatch):
    reference = _uninterrupted(case, tmp_path / "reference.ckpt")
    path = tmp_path / "run.ckpt"
    _crashed_run(case, path, monkeypatch)
    cls, kwargs, model, args = CHECKPOINT_CASES[case]
    pyro.set_rng_seed(999)  # the checkpoint's RNG state must win over whatever the seed is now
    resumed = cls(model, checkpoint=path, checkpoint_every=10, **kwargs).run(
        *args, resume=True, **RUN
    )
    _assert_same_run(resumed, reference)


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_checkpoint_state_resumes_exactly(case, tmp_path, monkeypatch):
    # What resume=True should do, spelled out (works around the load bug above): the state and
    # RNG in the checkpoint are complete, so continuing from them reproduces the uninterrupted
    # run bit for bit.
    reference = _uninterrupted(case, tmp_path / "reference.ckpt")
    path = tmp_path / "run.ckpt"
    _crashed_run(case, path, monkeypatch)
    cls, kwargs, model, args = CHECKPOINT_CASES[case]
    pyro.set_rng_seed(999)
    sampler = cls(model, checkpoint=path, checkpoint_every=10, **kwargs)
    sampler.potential(*args)  # build (and validate) the model before restoring the RNG
    payload = load_checkpoint(path, sampler.name)
    set_rng_state(payload.pop("rng"))
    state = SGMCMCState(**{k: v for k, v in payload.items() if k in SGMCMCState.__annotations__})
    resumed = sampler.run(*args, state=state, **RUN)
    _assert_same_run(resumed, reference)


def test_run_continues_from_a_state():
    # run(state=...) continues a finished run: 20 + 20 draws equal one run of 40.
    pyro.set_rng_seed(3)
    sampler = SGHMC(constrained_model, step_size=0.005, init=constrained_init(3))
    first = sampler.run(Y_SMALL, num_samples=20, warmup_steps=10, num_chains=3)
    both = sampler.run(Y_SMALL, num_samples=40, warmup_steps=10, num_chains=3, state=first.state)
    pyro.set_rng_seed(3)
    sampler = SGHMC(constrained_model, step_size=0.005, init=constrained_init(3))
    once = sampler.run(Y_SMALL, num_samples=40, warmup_steps=10, num_chains=3)
    _assert_same_run(both, once)
    assert torch.equal(first.samples["loc"], once.samples["loc"][:, :20])


def test_resume_without_a_checkpoint_file_starts_afresh(tmp_path):
    reference = _uninterrupted("sgld", tmp_path / "reference.ckpt")
    cls, kwargs, model, args = CHECKPOINT_CASES["sgld"]
    pyro.set_rng_seed(21)
    path = tmp_path / "missing.ckpt"
    fresh = cls(model, checkpoint=path, checkpoint_every=10, **kwargs).run(
        *args, resume=True, **RUN
    )
    _assert_same_run(fresh, reference)
    assert load_checkpoint(path, "sgld")["step"] == 75  # written at the end


def test_resume_refuses_a_checkpoint_of_another_engine(tmp_path):
    path = tmp_path / "run.ckpt"
    SGLD(normal_model, step_size=0.01, checkpoint=path).run(
        num_samples=5, warmup_steps=0, num_chains=2
    )
    with pytest.raises(ValueError, match="written by engine 'sgld', not 'sghmc'"):
        SGHMC(normal_model, step_size=0.01, checkpoint=path).run(
            num_samples=5, warmup_steps=0, num_chains=2, resume=True
        )


# ---------------------------------------------------------------- 7. divergences


def test_huge_step_on_stiff_target_raises_with_step_size_advice():
    def stiff():
        pyro.sample("x", dist.Normal(t(0.0), t(0.01)))

    # eps / (2 s^2) = 5000: the chain is multiplied by ~-5000 per step and overflows
    with pytest.raises(FloatingPointError, match=r"non-finite gradient .* lower the step size"):
        SGLD(stiff, step_size=1.0).run(num_samples=200, warmup_steps=0, num_chains=4)


def test_unstable_step_flags_divergent_draws_with_a_warning():
    def unit():
        pyro.sample("x", dist.Normal(t(0.0), t(1.0)))

    # eps = 4.2 on N(0, 1): rho = 1 - eps/2 = -1.1, |x| grows 10 % per step but stays finite
    with pytest.warns(RuntimeWarning, match="nats below their chain's median.*Lower the step"):
        result = SGLD(unit, step_size=4.2).run(num_samples=150, warmup_steps=0, num_chains=4)
    diverging = result.sample_stats["diverging"]
    assert diverging.shape == (4, 150)
    assert not diverging[:, :20].any()  # before the chain ran away
    assert diverging[:, -20:].all()  # after
    assert result.info["divergences"] == int(diverging.sum()) > 0
    assert torch.isfinite(result.sample_stats["lp"]).all()


def test_divergence_through_a_constrained_site_gives_step_size_advice():
    # scale 0.05: the first gradient in log-scale is ~ sum (y - loc)^2 / scale^2 = 2600, the
    # step jumps to log-scale ~63, the next gradient ~ -exp(126) jumps to ~ -1e53, and the
    # third evaluation sees scale = exp(-1e53) = 0.
    sampler = SGLD(constrained_model, step_size=0.05, init=constrained_init(2, scale=0.05))
    with pytest.raises(FloatingPointError, match="step size"):
        sampler.run(Y_SMALL, num_samples=20, warmup_steps=0, num_chains=2)


def test_healthy_run_flags_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = SGHMC(mvn_model, step_size=0.01).run(
            num_samples=300, warmup_steps=50, num_chains=8
        )
    assert not result.sample_stats["diverging"].any()
    assert result.info["divergences"] == 0


# ---------------------------------------------------------------- 8. errors


def test_discrete_latent_site_is_refused_by_name():
    def model():
        pyro.sample("coin", dist.Bernoulli(t(0.3)))
        pyro.sample("x", dist.Normal(t(0.0), t(1.0)))

    for cls in (SGLD, PSGLD, SGHMC):
        with pytest.raises(ModelError, match=r"\['coin'\] are discrete"):
            cls(model).run(num_samples=5, warmup_steps=0, num_chains=2)


def test_non_vectorizable_models_are_refused():
    def item_model(y):
        mu = pyro.sample("mu", dist.Normal(t(0.0), t(1.0)))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(float(mu), 1.0), obs=y)  # breaks on a batch of mu

    with pytest.raises(ModelError, match="does not broadcast over particles"):
        SGLD(item_model).run(Y_SMALL, num_samples=5, warmup_steps=0, num_chains=2)

    def silent_model(y):
        mu = pyro.sample("mu", dist.Normal(t(0.0), t(1.0)))
        with pyro.plate("data", y.shape[0]):
            # mu.sum() is mu for one chain, but the sum over chains for a batch
            pyro.sample("y", dist.Normal(mu.sum(), 1.0), obs=y)

    with pytest.raises(ModelError, match="site 'y' does not broadcast"):
        SGLD(silent_model).run(Y_SMALL, num_samples=5, warmup_steps=0, num_chains=2)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("num_chains", 0),
        ("num_chains", 2.0),
        ("num_samples", 0),
        ("thinning", 0),
        ("warmup_steps", -1),
        ("num_samples", 1.5),
    ],
)
def test_run_arguments_are_checked(argument, value, monkeypatch):
    sampler = SGLD(normal_model)
    monkeypatch.setattr(sampler, "step", lambda *a, **k: pytest.fail("sampling started"))
    settings = {"num_samples": 5, "warmup_steps": 0, "num_chains": 2, argument: value}
    with pytest.raises(ValueError, match=rf"sgld: {argument} must be an integer >= "):
        sampler.run(**settings)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (SGLD, {"checkpoint_every": 0}, "checkpoint_every must be >= 1"),
        (PSGLD, {"beta": 1.0}, r"beta must be in \[0, 1\)"),
        (PSGLD, {"eps": 0.0}, "eps must be positive"),
        (SGHMC, {"friction": 0.0}, r"friction must be in \(0, 1\]"),
        (SGHMC, {"friction": 1.5}, r"friction must be in \(0, 1\]"),
    ],
)
def test_constructor_arguments_are_checked(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(normal_model, **kwargs)


def test_subsample_larger_than_data_fails_before_sampling(monkeypatch):
    sampler = SGLD(regression_model, step_size=1e-5)
    monkeypatch.setattr(sampler, "step", lambda *a, **k: pytest.fail("sampling started"))
    # pplx checks the plate while it traces the model, before Pyro's own (vaguer) check
    with pytest.raises(ModelError, match="subsample_size=2000 is larger than its size 1000"):
        sampler.run(X_REG, Y_REG, 2 * N_DATA, num_samples=5, warmup_steps=0, num_chains=2)


def test_subsample_larger_than_data_error_names_plate_and_sizes():
    sampler = SGLD(regression_model, step_size=1e-5)
    with pytest.raises(ModelError, match=r"plate 'data'.*subsample_size=2000.*size 1000"):
        sampler.run(X_REG, Y_REG, 2 * N_DATA, num_samples=5, warmup_steps=0, num_chains=2)


# ---------------------------------------------------------------- 9. dtype / device


def test_float32_model_gives_float32_draws():
    y32 = Y_SMALL.float()

    def model32(y):
        p = pyro.sample("p", dist.Beta(torch.tensor(2.0), torch.tensor(2.0)))
        scale = pyro.sample("scale", dist.HalfNormal(torch.tensor(1.0)))
        loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0), torch.tensor(1.0)))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(loc, scale), obs=y)
            pyro.sample("hit", dist.Bernoulli(p), obs=(y > 0).float())

    for cls in (SGLD, PSGLD, SGHMC):
        sampler = cls(model32, step_size=0.01, init=constrained_init(3, dtype=torch.float32))
        result = sampler.run(y32, num_samples=20, warmup_steps=5, num_chains=3)
        for value in result.samples.values():
            assert value.dtype == torch.float32 and torch.isfinite(value).all()
        assert result.sample_stats["lp"].dtype == torch.float32
        assert result.state.position.dtype == torch.float32


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [SGLD, PSGLD, SGHMC])
def test_device_smoke(cls, device):
    x = X_REG[:200].to(device)
    y = Y_REG[:200].to(device)

    def model(x, y, batch_size):
        w = pyro.sample(
            "w", dist.Normal(torch.zeros(DIM, dtype=D64, device=device), 1.0).to_event(1)
        )
        with pyro.plate("data", x.shape[0], subsample_size=batch_size, device=device) as idx:
            pyro.sample("y", dist.Normal((x[idx] * w).sum(-1), NOISE), obs=y[idx])

    result = cls(model, step_size=1e-4).run(
        x, y, 50, num_samples=20, warmup_steps=10, num_chains=4
    )
    w = result.samples["w"]
    assert w.device.type == device and w.shape == (4, 20, DIM)
    assert torch.isfinite(w).all()
    assert result.sample_stats["lp"].device.type == device
    assert not result.info["shared_minibatches"]  # a minibatch per chain on this device too


def test_draws_flagged_only_at_the_start_of_a_chain_ask_for_a_longer_warmup():
    def unit():
        pyro.sample("x", dist.Normal(t(0.0), t(1.0)))

    # started 100 sd away with no warm-up: the first draws sit far below the chain's median
    init = {"x": torch.full((2,), 100.0, dtype=torch.float64)}
    with pytest.warns(RuntimeWarning, match="open their chains.*raise warmup_steps"):
        result = SGLD(unit, step_size=0.1, init=init).run(
            num_samples=200, warmup_steps=0, num_chains=2
        )
    diverging = result.sample_stats["diverging"]
    assert diverging[:, 0].all() and not diverging[:, -100:].any()
