"""Tests of ``pplx.estimators``: per-site gradient strategies, baselines and ``with_estimators``.

Unbiasedness checks compare the mean of N independent gradient estimates (fixed seeds) with the
exact gradient of the objective, computed by autograd on a closed form, a finite sum over the
discrete latents, or Gauss-Hermite quadrature (float64). The tolerance is 4 Monte Carlo standard
errors, SE = std / sqrt(N) over the N estimates, plus a tiny absolute epsilon for zero-variance
estimators. Gradients are taken with respect to the *unconstrained* parameters (the leaves Pyro
optimises, ``pyro.param(name).unconstrained()``), so the exact references differentiate through
``torch.distributions.transform_to(constraint)`` exactly as the param store does.

The ELBO is linear in its particles, so an estimate with K particles is the mean of K independent
single-particle estimates: a few calls with many particles give cheap, exact standard errors.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from helpers.estimation import (
    F64,
    INITS_B,
    INITS_C,
    INITS_N,
    LOG_2PI,
    MU_C,
    PRIOR_B,
    PRIOR_C,
    X_B,
    X_C,
    X_N,
    assert_unbiased,
    bernoulli_guide,
    bernoulli_model,
    categorical_guide,
    categorical_model,
    exact_loss_and_grad,
    fresh,
    gauss_hermite,
    gradient_samples,
    init_params,
    linear_baseline,
    logmeanexp,
    normal_guide,
    normal_model,
    t,
)
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoDelta, AutoNormal

from pplx.estimators import (
    MVD,
    Enumerate,
    ImplicitReparam,
    Learned,
    LeaveOneOut,
    MovingAverage,
    NoBaseline,
    Reinforce,
    RejectionReparam,
    Reparam,
    StrategyError,
    default_strategy,
    with_estimators,
)
from pplx.objectives import ELBO, IWAE, density, expectation, objective, simulate

# ------------------------------------------------------------------ Bernoulli latent, Gaussian
# z ~ Bernoulli(0.4), x ~ N(-0.5 + delta z, 1) with a model parameter delta; guide q(z) =
# Bernoulli(p). The ELBO is a finite sum over z in {0, 1}.


def bernoulli_elbo_loss(p, delta):
    z = t(0.0, 1.0)
    log_q = dist.Bernoulli(p).log_prob(z)
    log_p = dist.Bernoulli(t(PRIOR_B)).log_prob(z) + dist.Normal(-0.5 + delta * z, 1.0).log_prob(
        X_B
    )
    return -(log_q.exp() * (log_p - log_q)).sum()


class ConstantBaseline(torch.nn.Module):
    """A learnable constant (ignores the data)."""

    def __init__(self):
        super().__init__()
        self.value = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, *args):
        return self.value


BERNOULLI_STRATEGIES = {
    "reinforce-none": lambda: Reinforce(None),
    "reinforce-moving-average": lambda: Reinforce("moving_average"),
    "reinforce-loo": lambda: Reinforce("loo"),
    "reinforce-auto": lambda: Reinforce(),
    "reinforce-learned-linear": lambda: Reinforce(linear_baseline()),
    "reinforce-learned-constant": lambda: Reinforce(Learned(ConstantBaseline())),
    "reinforce-module": lambda: Reinforce(ConstantBaseline()),
    "mvd": MVD,
    "mvd-class": lambda: MVD,
    "enumerate": Enumerate,
    "default": lambda: None,
}


@pytest.mark.parametrize("name", list(BERNOULLI_STRATEGIES))
def test_bernoulli_site_elbo_unbiased(name):
    guide = bernoulli_guide(BERNOULLI_STRATEGIES[name]())
    values, grads = gradient_samples(
        ELBO(num_particles=32), bernoulli_model, guide, ["p", "delta"], 40, X_B
    )
    loss, grad = exact_loss_and_grad(bernoulli_elbo_loss, INITS_B)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


def test_default_strategy():
    assert isinstance(default_strategy(dist.Normal(0.0, 1.0)), Reparam)
    assert isinstance(default_strategy(dist.Gamma(2.0, 1.0)), Reparam)
    default = default_strategy(dist.Bernoulli(0.3))
    assert isinstance(default, Reinforce)
    assert repr(default.baseline) == "'auto'"


# ------------------------------------------------------------------ Normal-Normal
# z ~ N(0, 1), x ~ N(w z, 1) with a model parameter w; guide N(m, s). The ELBO is in closed form.


def normal_elbo_loss(m, s, w):
    log_prior = -0.5 * (m**2 + s**2) - 0.5 * LOG_2PI
    log_lik = -0.5 * ((X_N - w * m) ** 2 + w**2 * s**2) - 0.5 * LOG_2PI
    entropy = 0.5 * torch.log(2 * math.pi * math.e * s**2)
    return -(log_prior + log_lik + entropy)


@pytest.mark.parametrize(
    "strategy,stl",
    [
        (None, False),
        (Reparam(), False),
        (Reinforce(), False),
        (Reinforce(None), False),
        (MVD(), False),
        (None, True),
    ],
    ids=["default", "reparam", "reinforce", "reinforce-none", "mvd", "reparam-stl"],
)
def test_normal_site_elbo_unbiased(strategy, stl):
    values, grads = gradient_samples(
        ELBO(num_particles=32, stl=stl),
        normal_model,
        normal_guide(strategy),
        list(INITS_N),
        40,
        X_N,
    )
    loss, grad = exact_loss_and_grad(normal_elbo_loss, INITS_N)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# z ~ N(0, I_2), x ~ N(z, I_2); guide N(m, diag(s)).to_event(1): MVD and REINFORCE on an
# event-shaped site (one weak derivative per element).

X_E = t(1.0, -0.5)
INITS_E = {"m": (t(0.2, 0.4), constraints.real), "s": (t(0.7, 1.2), constraints.positive)}


def event_model(x):
    z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def event_guide(strategy):
    def guide(x):
        m = pyro.param("m", INITS_E["m"][0])
        s = pyro.param("s", INITS_E["s"][0], constraint=constraints.positive)
        pyro.sample("z", dist.Normal(m, s).to_event(1), infer={"estimator": strategy})

    return guide


def event_elbo_loss(m, s):
    log_prior = (-0.5 * (m**2 + s**2) - 0.5 * LOG_2PI).sum()
    log_lik = (-0.5 * ((X_E - m) ** 2 + s**2) - 0.5 * LOG_2PI).sum()
    entropy = (0.5 * torch.log(2 * math.pi * math.e * s**2)).sum()
    return -(log_prior + log_lik + entropy)


@pytest.mark.parametrize("strategy", [MVD(), Reinforce()], ids=["mvd", "reinforce"])
def test_event_shaped_normal_site_elbo_unbiased(strategy):
    values, grads = gradient_samples(
        ELBO(num_particles=32), event_model, event_guide(strategy), ["m", "s"], 40, X_E
    )
    loss, grad = exact_loss_and_grad(event_elbo_loss, INITS_E)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# ------------------------------------------------------------------ Gamma, Beta, Dirichlet
# Conjugate models: the ELBO needs only E[z], E[log z] (digamma) and the guide's entropy.


def conjugate_guide(family, inits):
    """``strategy -> guide``: ``z ~ family(*params)`` with positive parameters from ``inits``."""

    def make(strategy):
        def guide():
            params = [pyro.param(n, v, constraint=c) for n, (v, c) in inits.items()]
            pyro.sample("z", family(*params), infer={"estimator": strategy})

        return guide

    return make


X_GP = t(3.0, 1.0, 4.0)
INITS_GAMMA = {"a": (t(0.6), constraints.positive), "b": (t(1.5), constraints.positive)}


def gamma_poisson_model():
    z = pyro.sample("z", dist.Gamma(t(2.0), t(1.0)))
    with pyro.plate("data", 3):
        pyro.sample("x", dist.Poisson(z), obs=X_GP)


def gamma_poisson_loss(a, b):
    mean_log, mean = torch.digamma(a) - torch.log(b), a / b
    log_prior = (2.0 - 1.0) * mean_log - mean - math.lgamma(2.0)
    log_lik = (X_GP * mean_log - mean - torch.lgamma(X_GP + 1)).sum()
    return -(log_prior + log_lik + dist.Gamma(a, b).entropy())


X_BB = t(1.0, 0.0, 1.0, 1.0)
INITS_BETA = {"a": (t(2.0), constraints.positive), "b": (t(0.7), constraints.positive)}


def beta_bernoulli_model():
    z = pyro.sample("z", dist.Beta(t(1.5), t(1.5)))
    with pyro.plate("data", 4):
        pyro.sample("x", dist.Bernoulli(z), obs=X_BB)


def beta_bernoulli_loss(a, b):
    log_z = torch.digamma(a) - torch.digamma(a + b)
    log_1mz = torch.digamma(b) - torch.digamma(a + b)
    log_prior = 0.5 * log_z + 0.5 * log_1mz - (2 * math.lgamma(1.5) - math.lgamma(3.0))
    log_lik = X_BB.sum() * log_z + (1 - X_BB).sum() * log_1mz
    return -(log_prior + log_lik + dist.Beta(a, b).entropy())


X_DC = torch.tensor([0, 2, 2, 1, 2])
ALPHA0 = t(1.0, 2.0, 1.5)
INITS_DIR = {"a": (t(0.8, 2.5, 1.2), constraints.positive)}


def dirichlet_categorical_model():
    z = pyro.sample("z", dist.Dirichlet(ALPHA0))
    with pyro.plate("data", 5):
        pyro.sample("x", dist.Categorical(z), obs=X_DC)


def dirichlet_categorical_loss(a):
    log_z = torch.digamma(a) - torch.digamma(a.sum())
    log_prior = (
        ((ALPHA0 - 1) * log_z).sum() + torch.lgamma(ALPHA0.sum()) - torch.lgamma(ALPHA0).sum()
    )
    counts = torch.bincount(X_DC, minlength=3).to(F64)
    return -(log_prior + (counts * log_z).sum() + dist.Dirichlet(a).entropy())


FAMILIES = {
    "gamma": (
        gamma_poisson_model,
        conjugate_guide(dist.Gamma, INITS_GAMMA),
        gamma_poisson_loss,
        INITS_GAMMA,
    ),
    "beta": (
        beta_bernoulli_model,
        conjugate_guide(dist.Beta, INITS_BETA),
        beta_bernoulli_loss,
        INITS_BETA,
    ),
    "dirichlet": (
        dirichlet_categorical_model,
        conjugate_guide(dist.Dirichlet, INITS_DIR),
        dirichlet_categorical_loss,
        INITS_DIR,
    ),
}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(
    "strategy",
    [ImplicitReparam(), RejectionReparam(boost=1), RejectionReparam(boost=3)],
    ids=["implicit", "rejection-boost1", "rejection-boost3"],
)
def test_gamma_beta_dirichlet_sites_elbo_unbiased(family, strategy):
    model, make_guide, loss_fn, inits = FAMILIES[family]
    values, grads = gradient_samples(
        ELBO(num_particles=16), model, make_guide(strategy), list(inits), 40
    )
    loss, grad = exact_loss_and_grad(loss_fn, inits)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize("boost", [1, 3])
def test_rejection_reparam_gamma_mean_and_log_mean(boost):
    """d/d(alpha, beta) of E[z] and E[log z] under Gamma(alpha, beta) with alpha < 1.

    A user objective whose program's expectation is E[z] + E[log z]: the exact gradient is that
    of alpha / beta + digamma(alpha) - log(beta).
    """

    def model():
        pyro.sample("z", dist.Gamma(t(1.0), t(1.0)))

    @objective(num_particles=32)
    def moments(model, guide):
        q = simulate(guide)
        z = q.values["z"]
        return (z + torch.log(z)).mean(-1)

    inits = {"a": (t(0.4), constraints.positive), "b": (t(2.0), constraints.positive)}

    def loss_fn(a, b):
        return -(a / b + torch.digamma(a) - torch.log(b))

    def guide():
        a = pyro.param("a", inits["a"][0], constraint=constraints.positive)
        b = pyro.param("b", inits["b"][0], constraint=constraints.positive)
        pyro.sample("z", dist.Gamma(a, b), infer={"estimator": RejectionReparam(boost=boost)})

    init_params(model, guide)
    leaves = [pyro.param(n).unconstrained() for n in inits]
    grads = []
    for _ in range(60):
        loss = moments.differentiable_loss(model, guide)
        grads.append(torch.stack(torch.autograd.grad(loss, leaves)))
    _, grad = exact_loss_and_grad(loss_fn, inits)
    assert_unbiased(torch.stack(grads), grad)


# ------------------------------------------------------------------ Poisson and Categorical

X_P = t(5.0)
INITS_P = {"lam": (t(2.0), constraints.positive)}


def poisson_model(x):
    z = pyro.sample("z", dist.Poisson(t(3.0)))
    pyro.sample("x", dist.Normal(z, t(2.0)), obs=x)


def poisson_guide(strategy):
    def guide(x):
        lam = pyro.param("lam", INITS_P["lam"][0], constraint=constraints.positive)
        pyro.sample("z", dist.Poisson(lam), infer={"estimator": strategy})

    return guide


def poisson_elbo_loss(lam):
    z = torch.arange(80, dtype=F64)  # P(z >= 80) is below 1e-80 for rates 2 and 3
    log_q = dist.Poisson(lam).log_prob(z)
    f = dist.Poisson(t(3.0)).log_prob(z) + dist.Normal(z, 2.0).log_prob(X_P) - log_q
    return -(log_q.exp() * f).sum()


def categorical_elbo_loss(probs):
    z = torch.arange(3)
    f = dist.Categorical(PRIOR_C).log_prob(z) + dist.Normal(MU_C, 1.0).log_prob(X_C)
    return -(probs * (f - torch.log(probs))).sum()


@pytest.mark.parametrize(
    "strategy", [MVD(), Reinforce(), Reinforce(None)], ids=["mvd", "reinforce", "reinforce-none"]
)
def test_poisson_site_elbo_unbiased(strategy):
    values, grads = gradient_samples(
        ELBO(num_particles=32), poisson_model, poisson_guide(strategy), ["lam"], 40, X_P
    )
    loss, grad = exact_loss_and_grad(poisson_elbo_loss, INITS_P)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize(
    "strategy",
    [MVD(), Reinforce(), Reinforce(None), Enumerate()],
    ids=["mvd", "reinforce", "reinforce-none", "enumerate"],
)
def test_categorical_site_elbo_unbiased(strategy):
    values, grads = gradient_samples(
        ELBO(num_particles=32), categorical_model, categorical_guide(strategy), ["probs"], 40, X_C
    )
    loss, grad = exact_loss_and_grad(categorical_elbo_loss, INITS_C)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# ------------------------------------------------------------------ composition of strategies
# A guide where a discrete site depends on an earlier continuous one: w ~ N(m, s) then
# z | w ~ Bernoulli(logits = a + w); model w ~ N(0, 1), z | w ~ Bernoulli(logits = w),
# x ~ N(z + w, 1). The exact ELBO is a sum over z inside a Gauss-Hermite integral over w, so
# every pair of strategies is checked, including MVD re-executions that must redraw z.

X_D = t(1.3)
INITS_D = {
    "m": (t(0.2), constraints.real),
    "s": (t(0.9), constraints.positive),
    "a": (t(-0.3), constraints.real),
}


def dependent_model(x):
    w = pyro.sample("w", dist.Normal(t(0.0), 1.0))
    z = pyro.sample("z", dist.Bernoulli(logits=w))
    pyro.sample("x", dist.Normal(z + w, 1.0), obs=x)


def dependent_guide(strategy_w, strategy_z):
    def guide(x):
        m = pyro.param("m", INITS_D["m"][0])
        s = pyro.param("s", INITS_D["s"][0], constraint=constraints.positive)
        a = pyro.param("a", INITS_D["a"][0])
        w = pyro.sample("w", dist.Normal(m, s), infer={"estimator": strategy_w})
        pyro.sample("z", dist.Bernoulli(logits=a + w), infer={"estimator": strategy_z})

    return guide


def dependent_loss(reduce, num_particles, sign=-1.0, nodes=24):
    """The exact loss of ``reduce(log w)`` for ``num_particles`` particles (quadrature)."""
    eps, weights = gauss_hermite(nodes, num_particles)
    configs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_particles)), dtype=F64)

    def loss_fn(m, s, a):
        w = m + s * eps  # (P, K)
        total = 0.0
        for z in configs:
            log_qz = dist.Bernoulli(logits=a + w).log_prob(z)
            log_q = dist.Normal(m, s).log_prob(w) + log_qz
            log_p = (
                dist.Normal(0.0, 1.0).log_prob(w)
                + dist.Bernoulli(logits=w).log_prob(z)
                + dist.Normal(z + w, 1.0).log_prob(X_D)
            )
            total = total + (weights * log_qz.sum(-1).exp() * reduce(log_p - log_q)).sum()
        return sign * total

    return loss_fn


COMBINATIONS = {
    "reparam+reinforce": (Reparam(), Reinforce()),
    "reparam+mvd": (Reparam(), MVD()),
    "reparam+enumerate": (Reparam(), Enumerate()),
    "mvd+mvd": (MVD(), MVD()),
    "mvd+enumerate": (MVD(), Enumerate()),
    "reinforce+enumerate": (Reinforce(), Enumerate()),
    "reinforce+reinforce": (Reinforce(), Reinforce()),
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_dependent_sites_elbo_unbiased(name):
    guide = dependent_guide(*COMBINATIONS[name])
    values, grads = gradient_samples(
        ELBO(num_particles=64), dependent_model, guide, list(INITS_D), 50, X_D
    )
    loss, grad = exact_loss_and_grad(dependent_loss(lambda lw: lw.mean(-1), 1), INITS_D)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize(
    "strategy_w,strategy_z",
    [
        pytest.param(Reparam(), MVD(), id="reparam+mvd", marks=pytest.mark.slow),
        pytest.param(MVD(), MVD(), id="mvd+mvd"),
        pytest.param(MVD(), Reinforce(), id="mvd+reinforce", marks=pytest.mark.slow),
    ],
)
def test_dependent_sites_iwae_unbiased(strategy_w, strategy_z):
    guide = dependent_guide(strategy_w, strategy_z)
    values, grads = gradient_samples(
        IWAE(num_particles=2), dependent_model, guide, list(INITS_D), 200, X_D
    )
    loss, grad = exact_loss_and_grad(dependent_loss(logmeanexp, 2), INITS_D)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# ------------------------------------------------------------------ plates
# mu ~ N(0, 1) global; z_n ~ Bernoulli(0.3) local in a plate of 2; x_n ~ N(mu + 1.5 z_n, 1).
# Guide: mu ~ N(m, s) (reparameterised), z_n ~ Bernoulli(p_n).

X_PL = t(0.4, 2.1)
SHIFT = 1.5
INITS_PL = {
    "m": (t(0.5), constraints.real),
    "s": (t(0.7), constraints.positive),
    "p": (t(0.4, 0.6), constraints.unit_interval),
}


def plate_model(x):
    mu = pyro.sample("mu", dist.Normal(t(0.0), 1.0))
    with pyro.plate("data", 2):
        z = pyro.sample("z", dist.Bernoulli(t(0.3)))
        pyro.sample("x", dist.Normal(mu + SHIFT * z, 1.0), obs=x)


def plate_guide(strategy):
    def guide(x):
        m = pyro.param("m", INITS_PL["m"][0])
        s = pyro.param("s", INITS_PL["s"][0], constraint=constraints.positive)
        p = pyro.param("p", INITS_PL["p"][0], constraint=constraints.unit_interval)
        pyro.sample("mu", dist.Normal(m, s))
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Bernoulli(p), infer={"estimator": strategy})

    return guide


def shifted_mixture_elbo_loss(x, m, s, p):
    """Exact -ELBO of mu ~ N(0, 1), z_i ~ Bern(0.3), x_i ~ N(mu + SHIFT z_i, 1) (per-element p)."""
    elbo = -0.5 * (m**2 + s**2) - 0.5 * LOG_2PI + 0.5 * torch.log(2 * math.pi * math.e * s**2)
    for z in (0.0, 1.0):
        q_z = p if z else 1 - p
        term = (
            math.log(0.3 if z else 0.7)
            - torch.log(q_z)
            - 0.5 * ((x - m - SHIFT * z) ** 2 + s**2)
            - 0.5 * LOG_2PI
        )
        elbo = elbo + (q_z * term).sum()
    return -elbo


def plate_elbo_loss(m, s, p):
    return shifted_mixture_elbo_loss(X_PL, m, s, p)


def plate_iwae_loss(num_particles, nodes=20):
    eps, weights = gauss_hermite(nodes, num_particles)
    configs = torch.tensor(
        list(itertools.product([0.0, 1.0], repeat=2 * num_particles)), dtype=F64
    )

    def loss_fn(m, s, p):
        mu = m + s * eps  # (P, K)
        log_w_mu = dist.Normal(0.0, 1.0).log_prob(mu) - dist.Normal(m, s).log_prob(mu)
        total = 0.0
        for config in configs:
            z = config.reshape(num_particles, 2)
            log_q = dist.Bernoulli(p).log_prob(z).sum(-1)
            log_p = dist.Bernoulli(t(0.3)).log_prob(z).sum(-1) + dist.Normal(
                mu.unsqueeze(-1) + SHIFT * z, 1.0
            ).log_prob(X_PL).sum(-1)
            log_w = log_p - log_q + log_w_mu
            total = total + log_q.sum().exp() * (weights * logmeanexp(log_w)).sum()
        return -total

    return loss_fn


@pytest.mark.parametrize(
    "strategy", [MVD(), Enumerate(), Reinforce()], ids=["mvd", "enumerate", "reinforce"]
)
def test_plate_local_discrete_global_normal_elbo_unbiased(strategy):
    values, grads = gradient_samples(
        ELBO(num_particles=32), plate_model, plate_guide(strategy), list(INITS_PL), 40, X_PL
    )
    loss, grad = exact_loss_and_grad(plate_elbo_loss, INITS_PL)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param(MVD(), id="mvd"),
        pytest.param(Reinforce(), id="reinforce", marks=pytest.mark.slow),
    ],
)
def test_plate_local_discrete_global_normal_iwae_unbiased(strategy):
    values, grads = gradient_samples(
        IWAE(num_particles=2), plate_model, plate_guide(strategy), list(INITS_PL), 200, X_PL
    )
    loss, grad = exact_loss_and_grad(plate_iwae_loss(2), INITS_PL)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


def test_plate_aware_rao_blackwellisation_lowers_variance():
    """The library ELBO credits z_n only with the costs of slice n (and later global costs).

    The same ELBO written as one per-particle cost (a tensor-valued program, so every score
    site sees the whole log weight) is unbiased too but much noisier for p.
    """

    @objective(num_particles=8)
    def one_cost_elbo(model, guide, *args):
        q = simulate(guide, *args)
        p = density(model, q, *args)
        return expectation((p.log_prob - q.log_prob).total())

    guide = plate_guide(Reinforce(None))
    _, exact = exact_loss_and_grad(plate_elbo_loss, INITS_PL)
    _, grads_rb = gradient_samples(ELBO(num_particles=8), plate_model, guide, ["p"], 100, X_PL)
    pyro.set_rng_seed(1)
    _, grads_one = gradient_samples(one_cost_elbo, plate_model, guide, ["p"], 100, X_PL)
    assert_unbiased(grads_rb, exact[-2:])
    assert_unbiased(grads_one, exact[-2:])
    # observed variance ratio ~ 1/110; a factor 10 leaves a wide margin for sampling noise
    assert bool((grads_rb.var(0) * 10 < grads_one.var(0)).all())


# ------------------------------------------------------------------ scaled sites
# Pyro scales a site's log density by poutine.scale and by a subsampled plate's N / B. The
# estimator of the scaled objective must score the choice with its *unscaled* log q (the choice
# is made once, whatever its weight in the objective): Pyro's ScoreParts keep score_function
# unscaled for this reason.

SCALED_STRATEGIES = [
    pytest.param(MVD(), id="mvd"),
    pytest.param(Reinforce(), id="reinforce"),
    pytest.param(Enumerate(), id="enumerate"),
]

KL_SCALE = 0.5


def annealed_model(x):
    delta = pyro.param("delta", fresh(INITS_B["delta"][0]))
    with poutine.scale(scale=KL_SCALE):
        z = pyro.sample("z", dist.Bernoulli(t(PRIOR_B)))
    pyro.sample("x", dist.Normal(-0.5 + delta * z, 1.0), obs=x)


def annealed_guide(strategy):
    def guide(x):
        p = pyro.param("p", fresh(INITS_B["p"][0]), constraint=constraints.unit_interval)
        with poutine.scale(scale=KL_SCALE):
            pyro.sample("z", dist.Bernoulli(p), infer={"estimator": strategy})

    return guide


def annealed_elbo_loss(p, delta):
    z = t(0.0, 1.0)
    log_q = dist.Bernoulli(p).log_prob(z)
    log_lik = dist.Normal(-0.5 + delta * z, 1.0).log_prob(X_B)
    kl_terms = dist.Bernoulli(t(PRIOR_B)).log_prob(z) - log_q
    return -(log_q.exp() * (KL_SCALE * kl_terms + log_lik)).sum()


@pytest.mark.parametrize("strategy", SCALED_STRATEGIES)
def test_poutine_scale_elbo_unbiased(strategy):
    """KL annealing with poutine.scale: E_q[log p(x | z) + 0.5 (log p(z) - log q(z))]."""
    values, grads = gradient_samples(
        ELBO(num_particles=32), annealed_model, annealed_guide(strategy), ["p", "delta"], 40, X_B
    )
    loss, grad = exact_loss_and_grad(annealed_elbo_loss, INITS_B)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# The plate model with 4 data points, subsampled 2 at a time: the estimator is unbiased for the
# full-data ELBO.

X_SUB = t(0.4, 2.1, -0.3, 1.0)
INITS_SUB = {
    "m": (t(0.5), constraints.real),
    "s": (t(0.7), constraints.positive),
    "p": (t(0.4, 0.6, 0.2, 0.7), constraints.unit_interval),
}


def subsampled_model(x):
    mu = pyro.sample("mu", dist.Normal(t(0.0), 1.0))
    with pyro.plate("data", 4, subsample_size=2) as idx:
        z = pyro.sample("z", dist.Bernoulli(t(0.3)))
        pyro.sample("x", dist.Normal(mu + SHIFT * z, 1.0), obs=x[idx])


def subsampled_guide(strategy):
    def guide(x):
        m = pyro.param("m", INITS_SUB["m"][0])
        s = pyro.param("s", INITS_SUB["s"][0], constraint=constraints.positive)
        p = pyro.param("p", INITS_SUB["p"][0], constraint=constraints.unit_interval)
        pyro.sample("mu", dist.Normal(m, s))
        with pyro.plate("data", 4, subsample_size=2) as idx:
            pyro.sample("z", dist.Bernoulli(p[idx]), infer={"estimator": strategy})

    return guide


def subsampled_elbo_loss(m, s, p):
    return shifted_mixture_elbo_loss(X_SUB, m, s, p)


@pytest.mark.parametrize("strategy", SCALED_STRATEGIES)
def test_subsampled_plate_elbo_unbiased(strategy):
    values, grads = gradient_samples(
        ELBO(num_particles=16),
        subsampled_model,
        subsampled_guide(strategy),
        list(INITS_SUB),
        150,
        X_SUB,
    )
    loss, grad = exact_loss_and_grad(subsampled_elbo_loss, INITS_SUB)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# ------------------------------------------------------------------ variance


_VARIANCES: dict[str, float] = {}

VARIANCE_STRATEGIES = {
    "none": lambda: Reinforce(None),
    "loo": lambda: Reinforce("loo"),
    "auto": lambda: Reinforce(),
    "learned": lambda: Reinforce(linear_baseline()),
    "mvd": MVD,
}


def gradient_variance(name, num_particles=4, num=150):
    """Variance of the d loss / d logit(p) estimates on the Bernoulli model (ELBO, 4 particles).

    Fixed seeds make it a deterministic function of ``name``: cached across tests. A learned
    baseline is first trained for 100 steps (the guide's parameters stay fixed).
    """
    if name not in _VARIANCES:
        _VARIANCES[name] = _gradient_variance(VARIANCE_STRATEGIES[name](), num_particles, num)
    return _VARIANCES[name]


def _gradient_variance(strategy, num_particles, num):
    baseline = getattr(strategy, "baseline", None)
    train_steps = 100 if isinstance(baseline, Learned) else 0
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = bernoulli_guide(strategy)
    elbo = ELBO(num_particles=num_particles)
    if train_steps:
        init_params(bernoulli_model, guide, X_B)
        module = baseline.module
        optim = torch.optim.Adam(module.parameters(), lr=0.05)
        for _ in range(train_steps):
            optim.zero_grad()
            elbo.loss_and_grads(bernoulli_model, guide, X_B)
            optim.step()
    _, grads = gradient_samples(elbo, bernoulli_model, guide, ["p"], num, X_B)
    _, exact = exact_loss_and_grad(bernoulli_elbo_loss, INITS_B)
    assert_unbiased(grads, exact[:1])
    return float(grads.var())


def test_leave_one_out_and_learned_baselines_reduce_reinforce_variance():
    none = gradient_variance("none")
    loo = gradient_variance("loo")
    learned = gradient_variance("learned")
    # observed: none 0.35, loo 0.024, learned 0.015 (after 100 training steps)
    assert loo < none / 4
    assert learned < none / 4


def test_learned_baseline_is_trained_by_loss_and_grads():
    baseline = linear_baseline()
    module = baseline.module
    guide = bernoulli_guide(Reinforce(baseline))
    init_params(bernoulli_model, guide, X_B)
    before = [p for p in module.parameters()]
    ELBO(num_particles=4).loss_and_grads(bernoulli_model, guide, X_B)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())
    assert all(torch.equal(b, p) for b, p in zip(before, module.parameters()))
    # registered with the param store (so pyro.infer.SVI trains it)
    assert any(name.startswith("baseline_z") for name in pyro.get_param_store().keys())


def test_enumerate_has_zero_variance_for_a_single_discrete_site():
    values, grads = gradient_samples(
        ELBO(num_particles=1),
        bernoulli_model,
        bernoulli_guide(Enumerate()),
        ["p", "delta"],
        20,
        X_B,
    )
    loss, grad = exact_loss_and_grad(bernoulli_elbo_loss, INITS_B)
    torch.testing.assert_close(grads, grad.expand_as(grads), rtol=0, atol=1e-12)
    torch.testing.assert_close(values, loss.expand_as(values), rtol=0, atol=1e-12)


def test_mvd_variance_below_reinforce_on_a_bernoulli_site():
    # observed with 4 particles: REINFORCE without baseline 0.35, MVD 0 (exact)
    assert gradient_variance("mvd") < gradient_variance("none") / 3


def test_mvd_variance_below_default_reinforce_on_a_bernoulli_site():
    """On a single Bernoulli site the weak derivative p'(f(1) - f(0)) of p is exact.

    MVD drops the zero-mean direct derivative of the site's own log q at the primal draw, so
    the gradient in logit(p) has no variance at all (REINFORCE with its default leave-one-out
    baseline: 0.024).
    """
    assert gradient_variance("mvd") < 1e-20
    assert gradient_variance("mvd") < gradient_variance("auto")


# ------------------------------------------------------------------ errors


def single_site_guide(fn, strategy):
    def guide(*args):
        pyro.sample("z", fn, infer={"estimator": strategy})

    return guide


def test_reparam_on_a_discrete_site_raises():
    guide = single_site_guide(dist.Bernoulli(t(0.3)), Reparam())
    with pytest.raises(StrategyError, match=r"site 'z'.*Enumerate\(\) or MVD\(\)"):
        ELBO().differentiable_loss(bernoulli_model, guide, X_B)


def test_enumerate_on_a_continuous_site_raises():
    guide = single_site_guide(dist.Normal(t(0.3), 1.0), Enumerate())
    with pytest.raises(StrategyError, match=r"site 'z'.*Enumerate\(\).*use Reparam\(\)"):
        ELBO().differentiable_loss(normal_model, guide, X_N)


def test_mvd_on_an_unsupported_distribution_raises():
    guide = single_site_guide(dist.Gamma(t(2.0), 1.0), MVD())
    with pytest.raises(StrategyError, match=r"site 'z'.*MVD\(\).*Gamma.*use Reparam\(\)"):
        ELBO().differentiable_loss(gamma_poisson_model, guide)


def test_implicit_and_rejection_reparam_on_a_normal_site_raise():
    for strategy in (ImplicitReparam(), RejectionReparam()):
        guide = single_site_guide(dist.Normal(t(0.3), 1.0), strategy)
        with pytest.raises(StrategyError, match=r"site 'z'.*Normal.*Reparam\(\)"):
            ELBO().differentiable_loss(normal_model, guide, X_N)


def test_enumerate_in_a_sequential_plate_raises():
    data = t(1.0, 0.0, 1.0)

    def model(x):
        for i in pyro.plate("data", 3):
            z = pyro.sample(f"z_{i}", dist.Bernoulli(t(0.4)))
            pyro.sample(f"x_{i}", dist.Normal(z, 1.0), obs=x[i])

    def guide(x):
        for i in pyro.plate("data", 3):
            pyro.sample(f"z_{i}", dist.Bernoulli(t(0.3)), infer={"estimator": Enumerate()})

    with pytest.raises(StrategyError, match=r"site 'z_0'.*sequential plate 'data'.*MVD\(\)"):
        ELBO().differentiable_loss(model, guide, data)


def test_enumerated_local_site_before_an_independent_global_site_is_exact():
    """Guide order does not matter when no cost mixes the enumerated plate slices."""

    def guide(x):
        m = pyro.param("m", INITS_PL["m"][0])
        s = pyro.param("s", INITS_PL["s"][0], constraint=constraints.positive)
        p = pyro.param("p", INITS_PL["p"][0], constraint=constraints.unit_interval)
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Bernoulli(p), infer={"estimator": Enumerate()})
        pyro.sample("mu", dist.Normal(m, s))

    values, grads = gradient_samples(
        ELBO(num_particles=32), plate_model, guide, list(INITS_PL), 40, X_PL
    )
    loss, grad = exact_loss_and_grad(plate_elbo_loss, INITS_PL)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


def test_enumerated_local_site_feeding_a_global_site_raises():
    def guide(x):
        with pyro.plate("data", 2):
            z = pyro.sample("z", dist.Bernoulli(t(0.4)), infer={"estimator": Enumerate()})
        pyro.sample("mu", dist.Normal(z.sum(-1, keepdim=True), 1.0))

    with pytest.raises(StrategyError, match=r"site 'z'.*global sites first.*MVD\(\)"):
        ELBO(num_particles=2).differentiable_loss(plate_model, guide, X_PL)


def test_mvd_warns_when_a_nonlinear_objective_forces_many_elements():
    data = torch.zeros(300, dtype=F64)

    def model(x):
        with pyro.plate("data", 300):
            z = pyro.sample("z", dist.Bernoulli(t(0.4)))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 300):
            pyro.sample("z", dist.Bernoulli(t(0.3)), infer={"estimator": MVD()})

    # IWAE mixes the particles: 2 particles x 300 slices x 2 branches > 512 re-executions
    with pytest.warns(RuntimeWarning, match=r"site 'z': MVD\(\) re-executes.*600 elements"):
        IWAE(num_particles=2).differentiable_loss(model, guide, data)


def test_invalid_estimator_tag_raises():
    guide = single_site_guide(dist.Bernoulli(t(0.3)), "mvd")
    with pytest.raises(StrategyError, match=r"site 'z'.*infer\['estimator'\]"):
        ELBO().differentiable_loss(bernoulli_model, guide, X_B)


def test_with_estimators_naming_a_missing_site_raises():
    guide = with_estimators(bernoulli_guide(), {"zz": MVD()})
    with pytest.raises(ValueError, match="no latent sample site named 'zz'"):
        ELBO().differentiable_loss(bernoulli_model, guide, X_B)


def test_leave_one_out_baseline_errors():
    guide = bernoulli_guide(Reinforce("loo"))
    with pytest.raises(ValueError, match=r"site 'z'.*num_particles >= 2, got 1"):
        ELBO(num_particles=1).differentiable_loss(bernoulli_model, guide, X_B)
    with pytest.raises(ValueError, match=r"site 'z'.*IWAE-like.*VIMCO"):
        IWAE(num_particles=3).differentiable_loss(bernoulli_model, guide, X_B)


def test_learned_baseline_with_a_wrong_shape_raises():
    module = torch.nn.Linear(1, 3).double()
    guide = bernoulli_guide(Reinforce(Learned(module, inputs=lambda x: (x.reshape(1),))))
    with pytest.raises(ValueError, match=r"site 'z'.*learned baseline returned shape \(3,\)"):
        ELBO(num_particles=4).differentiable_loss(bernoulli_model, guide, X_B)


def test_constructor_validation():
    with pytest.raises(ValueError, match="unknown baseline 'foo'"):
        Reinforce("foo")
    with pytest.raises(ValueError, match="boost must be an integer >= 1"):
        RejectionReparam(boost=0)
    with pytest.raises(ValueError, match="boost must be an integer >= 1"):
        RejectionReparam(boost=1.5)
    with pytest.raises(ValueError, match="decay must be in"):
        MovingAverage(decay=1.0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Learned(lambda x: x)
    assert isinstance(Reinforce(None).baseline, NoBaseline)
    assert isinstance(Reinforce("leave_one_out").baseline, LeaveOneOut)
    assert isinstance(Reinforce(torch.nn.Linear(1, 1)).baseline, Learned)


# ------------------------------------------------------------------ with_estimators


def test_with_estimators_overrides_guide_tags_and_accepts_a_function():
    """Re-tagging a Reinforce-tagged guide with Enumerate gives the zero-variance gradient."""
    loss, grad = exact_loss_and_grad(bernoulli_elbo_loss, INITS_B)
    tagged = [
        with_estimators(bernoulli_guide(Reinforce()), {"z": Enumerate()}),
        with_estimators(bernoulli_guide(Reinforce()), {"z": Enumerate}),
        with_estimators(
            bernoulli_guide(Reinforce()), lambda name, fn: Enumerate() if name == "z" else None
        ),
    ]
    for guide in tagged:
        values, grads = gradient_samples(ELBO(), bernoulli_model, guide, ["p", "delta"], 3, X_B)
        torch.testing.assert_close(grads, grad.expand_as(grads), rtol=0, atol=1e-12)
        torch.testing.assert_close(values, loss.expand_as(values), rtol=0, atol=1e-12)


def autonormal_setup(mapping):
    guide = AutoNormal(normal_model, init_scale=0.8)
    tagged = with_estimators(guide, mapping)
    init_params(normal_model, tagged, X_N)
    names = ["AutoNormal.locs.z", "AutoNormal.scales.z", "w"]
    inits = {
        "m": (pyro.param(names[0]).detach(), constraints.real),
        "s": (pyro.param(names[1]).detach(), constraints.positive),
        "w": (pyro.param("w").detach(), constraints.real),
    }
    _, exact = exact_loss_and_grad(normal_elbo_loss, inits)
    _, grads = gradient_samples(ELBO(num_particles=32), normal_model, tagged, names, 40, X_N)
    return grads, exact


def test_autoguide_retagged_on_its_auxiliary_site():
    grads, exact = autonormal_setup({"z_unconstrained": Reinforce()})
    assert_unbiased(grads, exact)


def test_autoguide_retagged_by_latent_name():
    """A tag for AutoNormal's latent "z" applies to its random site "z_unconstrained"."""
    grads, exact = autonormal_setup({"z": Reinforce()})
    assert_unbiased(grads, exact)


def test_tagging_a_deterministic_delta_site_raises():
    guide = with_estimators(AutoDelta(normal_model), {"z": Reinforce()})
    with pytest.raises(StrategyError, match=r"site 'z' is a deterministic \(Delta\) site"):
        ELBO().differentiable_loss(normal_model, guide, X_N)
