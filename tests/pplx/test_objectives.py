"""Tests of ``pplx.objectives``: library objectives, user objectives, Pyro's ELBO interface.

An objective's value is the expectation of its program's output at the chosen number of
particles K (for IWAE, E[log (1/K) sum_k w_k]); ``differentiable_loss`` has the loss's value
(minus the objective for lower bounds, the bound itself for CUBO) and an unbiased gradient.

Unbiasedness checks compare the mean of N independent estimates (fixed seeds) with the exact
loss and gradient, computed in float64 by autograd on an exact finite sum over the 2^K (or 3^K)
configurations of K discrete particles, or on Gauss-Hermite quadrature over K Gaussian
particles. Tolerance: 4 standard errors, SE = std / sqrt(N), plus a tiny absolute epsilon.
Gradients are with respect to the unconstrained parameters (``pyro.param(n).unconstrained()``),
so the exact references go through ``torch.distributions.transform_to(constraint)``.
"""

from __future__ import annotations

import itertools
import math
import re

import pyro
import pyro.distributions as dist
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
    gauss_hermite,
    gradient_samples,
    init_params,
    linear_baseline,
    normal_guide,
    normal_model,
    t,
)
from helpers.estimation import (
    logmeanexp as lme,
)
from pyro.distributions import constraints

import pplx.objectives as po
from pplx.estimators import MVD, Enumerate, Reinforce, StrategyError
from pplx.inference import SVI
from pplx.objectives import (
    CUBO,
    ELBO,
    IWAE,
    RWS,
    VIMCO,
    Estimate,
    ObjectiveError,
    Renyi,
    density,
    expectation,
    logmeanexp,
    objective,
    simulate,
)

# The objectives as reductions of the log weights (last dimension: particles), with the sign
# of their loss: -1 for lower bounds, +1 for CUBO (which SVI minimises as is).
REDUCTIONS = {
    "elbo": (lambda lw: lw.mean(-1), -1.0),
    "iwae": (lme, -1.0),
    "vimco": (lme, -1.0),
    "renyi": (lambda lw: lme(0.5 * lw) / 0.5, -1.0),
    "cubo": (lambda lw: lme(2.0 * lw) / 2.0, 1.0),
}


def make_objective(kind, num_particles):
    return {
        "elbo": lambda: ELBO(num_particles=num_particles),
        "iwae": lambda: IWAE(num_particles=num_particles),
        "vimco": lambda: VIMCO(num_particles=num_particles),
        "renyi": lambda: Renyi(alpha=0.5, num_particles=num_particles),
        "cubo": lambda: CUBO(n=2, num_particles=num_particles),
    }[kind]()


# ------------------------------------------------------------------ Bernoulli latent, Gaussian
# z ~ Bernoulli(0.4), x ~ N(-0.5 + delta z, 1) (model parameter delta); guide Bernoulli(p).
# With K particles every objective is a finite sum over the 2^K configurations.

K_B = 3


def bernoulli_log_pq(z, p, delta):
    log_q = dist.Bernoulli(p).log_prob(z)
    log_p = dist.Bernoulli(t(PRIOR_B)).log_prob(z) + dist.Normal(-0.5 + delta * z, 1.0).log_prob(
        X_B
    )
    return log_p, log_q


def bernoulli_configs(num_particles):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_particles)), dtype=F64)


def bernoulli_loss(kind, num_particles):
    reduce, sign = REDUCTIONS[kind]
    configs = bernoulli_configs(num_particles)

    def loss_fn(p, delta):
        log_p, log_q = bernoulli_log_pq(configs, p, delta)  # (2^K, K)
        return sign * (log_q.sum(-1).exp() * reduce(log_p - log_q)).sum()

    return loss_fn


STRATEGIES = {
    "reinforce-none": lambda: Reinforce(None),
    "reinforce-auto": lambda: Reinforce(),
    "mvd": MVD,
}
EXTRA_STRATEGIES = {
    "reinforce-moving-average": lambda: Reinforce("moving_average"),
    "reinforce-learned": lambda: Reinforce(linear_baseline()),
}


def check_bernoulli(kind, strategy, num=200):
    objective_ = make_objective(kind, K_B)
    values, grads = gradient_samples(
        objective_, bernoulli_model, bernoulli_guide(strategy), ["p", "delta"], num, X_B
    )
    loss, grad = exact_loss_and_grad(bernoulli_loss(kind, K_B), INITS_B)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("kind", ["iwae", "vimco", "renyi", "cubo"])
def test_objectives_with_bernoulli_particles_unbiased(kind, strategy):
    check_bernoulli(kind, STRATEGIES[strategy]())


@pytest.mark.parametrize("strategy", list(EXTRA_STRATEGIES))
def test_iwae_with_other_baselines_unbiased(strategy):
    check_bernoulli("iwae", EXTRA_STRATEGIES[strategy]())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(EXTRA_STRATEGIES))
@pytest.mark.parametrize("kind", ["vimco", "renyi", "cubo"])
def test_objectives_with_other_baselines_unbiased(kind, strategy):
    check_bernoulli(kind, EXTRA_STRATEGIES[strategy](), num=1000)


def test_elbo_with_bernoulli_particles_unbiased():
    """The ELBO is the K-independent finite sum; 64 particles per estimate."""
    values, grads = gradient_samples(
        ELBO(num_particles=64), bernoulli_model, bernoulli_guide(MVD()), ["p", "delta"], 30, X_B
    )
    loss, grad = exact_loss_and_grad(bernoulli_loss("elbo", 1), INITS_B)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize("kind", ["iwae", "vimco", "renyi", "cubo"])
def test_enumerate_with_a_nonlinear_objective_raises(kind):
    guide = bernoulli_guide(Enumerate())
    with pytest.raises(StrategyError, match=r"site 'z'.*Enumerate\(\).*MVD\(\) or Reinforce\(\)"):
        make_objective(kind, K_B).differentiable_loss(bernoulli_model, guide, X_B)


def test_enumerate_gives_the_exact_elbo_value():
    loss, _ = exact_loss_and_grad(bernoulli_loss("elbo", 1), INITS_B)
    guide = bernoulli_guide(Enumerate())
    init_params(bernoulli_model, guide, X_B)
    assert ELBO().loss(bernoulli_model, guide, X_B) == pytest.approx(float(loss), abs=1e-12)
    assert ELBO(num_particles=3).estimate(bernoulli_model, guide, X_B) == pytest.approx(
        -float(loss), abs=1e-12
    )


# ------------------------------------------------------------------ Categorical particles
# z ~ Categorical(0.2, 0.5, 0.3), x ~ N(mu_z, 1); guide Categorical(probs): 3^K configurations.


@pytest.mark.parametrize("strategy", [MVD(), Reinforce()], ids=["mvd", "reinforce"])
def test_iwae_with_categorical_particles_unbiased(strategy):
    configs = torch.tensor(list(itertools.product(range(3), repeat=2)))

    def loss_fn(probs):
        log_q = dist.Categorical(probs).log_prob(configs)
        log_p = dist.Categorical(PRIOR_C).log_prob(configs) + dist.Normal(
            MU_C[configs], 1.0
        ).log_prob(X_C)
        return -(log_q.sum(-1).exp() * lme(log_p - log_q)).sum()

    values, grads = gradient_samples(
        IWAE(num_particles=2), categorical_model, categorical_guide(strategy), ["probs"], 200, X_C
    )
    loss, grad = exact_loss_and_grad(loss_fn, INITS_C)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# ------------------------------------------------------------------ Normal-Normal
# z ~ N(0, 1), x ~ N(w z, 1) (model parameter w); guide N(m, s). K Gaussian particles: the
# objectives are integrals over K standard normals, done by Gauss-Hermite quadrature (20 nodes
# per dimension; the values agree with 40 nodes to 1e-12).

K_N = 3


def normal_loss(kind, num_particles, nodes=20):
    reduce, sign = REDUCTIONS[kind]
    eps, weights = gauss_hermite(nodes, num_particles)

    def loss_fn(m, s, w):
        z = m + s * eps
        log_w = (
            dist.Normal(0.0, 1.0).log_prob(z)
            + dist.Normal(w * z, 1.0).log_prob(X_N)
            - dist.Normal(m, s).log_prob(z)
        )
        return sign * (weights * reduce(log_w)).sum()

    return loss_fn


NORMAL_OBJECTIVES = {
    "iwae": ("iwae", lambda: IWAE(num_particles=K_N)),
    "iwae-dreg": ("iwae", lambda: IWAE(num_particles=K_N, dreg=True)),
    "vimco": ("vimco", lambda: VIMCO(num_particles=K_N)),
    "renyi": ("renyi", lambda: Renyi(alpha=0.5, num_particles=K_N)),
    "cubo": ("cubo", lambda: CUBO(n=2, num_particles=K_N)),
    "iwae-stl-1": ("iwae", lambda: IWAE(num_particles=1, stl=True)),
    "elbo-analytic-kl": ("elbo", lambda: ELBO(num_particles=K_N, analytic_kl=True)),
}


def check_normal(name, strategy=None, num=200):
    kind, make = NORMAL_OBJECTIVES[name]
    objective_ = make()
    values, grads = gradient_samples(
        objective_, normal_model, normal_guide(strategy), list(INITS_N), num, X_N
    )
    loss, grad = exact_loss_and_grad(normal_loss(kind, objective_.num_particles), INITS_N)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)
    return grads


@pytest.mark.parametrize("name", list(NORMAL_OBJECTIVES))
def test_objectives_with_normal_particles_unbiased(name):
    check_normal(name)


@pytest.mark.parametrize(
    "name,strategy",
    [
        pytest.param("iwae", MVD(), id="iwae-mvd"),
        pytest.param("vimco", Reinforce(), id="vimco-reinforce"),
        pytest.param("iwae", Reinforce(), id="iwae-reinforce", marks=pytest.mark.slow),
        pytest.param("vimco", MVD(), id="vimco-mvd", marks=pytest.mark.slow),
    ],
)
def test_iwae_with_score_and_mvd_normal_particles_unbiased(name, strategy):
    check_normal(name, strategy)


def test_dreg_lowers_the_variance_of_the_guide_gradient():
    plain = check_normal("iwae", num=100)
    pyro.clear_param_store()
    dreg = check_normal("iwae-dreg", num=100)
    # observed variance ratio ~ 1/750 for m and 1/44 for log s; the model gradient is the same
    assert bool((dreg[:, :2].var(0) * 10 < plain[:, :2].var(0)).all())


def test_iwae_stl_with_several_particles_raises():
    """Sticking the landing is biased for IWAE with K > 1 (Tucker et al. 2019, section 4).

    It drops sum_k w~_k d/dphi log q(z_k), whose expectation is not 0 once the normalised
    weights depend on z (measured here: d loss / d m -0.68 against the exact -0.26, 175 SE);
    dreg=True is the unbiased path-gradient estimator. With one particle it is the ELBO's STL
    (checked unbiased above as "iwae-stl-1").
    """
    with pytest.raises(ValueError, match=r"stl=True.*dreg=True"):
        IWAE(num_particles=K_N, stl=True)


# ------------------------------------------------------------------ closed-form KL
# ELBO(analytic_kl=True) is checked unbiased above ("elbo-analytic-kl"); here: that it is the
# closed form where it applies, lowers the variance, and falls back or fails clearly.


def latent_only_model(x=None):
    pyro.sample("z", dist.Normal(t(0.5), 2.0))


def test_analytic_kl_is_the_closed_form_without_noise():
    pyro.clear_param_store()
    guide = normal_guide()
    objective_ = ELBO(analytic_kl=True)
    losses = [objective_.differentiable_loss(latent_only_model, guide, X_N) for _ in range(2)]
    m, s = pyro.param("m"), pyro.param("s")
    exact = torch.distributions.kl_divergence(dist.Normal(m, s), dist.Normal(t(0.5), 2.0))
    assert losses[0].item() == pytest.approx(exact.item(), rel=1e-6)
    assert losses[1].item() == losses[0].item()  # no Monte Carlo noise left


def test_analytic_kl_lowers_the_gradient_variance():
    _, mc = gradient_samples(ELBO(), normal_model, normal_guide(), list(INITS_N), 200, X_N)
    _, ak = gradient_samples(
        ELBO(analytic_kl=True), normal_model, normal_guide(), list(INITS_N), 200, X_N
    )
    assert (ak.var(0) <= mc.var(0)).all(), (ak.var(0), mc.var(0))


def test_analytic_kl_keeps_monte_carlo_terms_where_there_is_no_closed_form():
    def student_model(x):
        pyro.sample("z", dist.StudentT(3.0, t(0.0), 1.0))

    def reinforce_guide(x):
        pyro.sample("z", dist.Normal(t(0.3), 1.0), infer={"estimator": Reinforce(None)})

    objective_ = ELBO(analytic_kl=True)
    for model, guide in ((student_model, normal_guide()), (latent_only_model, reinforce_guide)):
        pyro.clear_param_store()
        values = {objective_.loss(model, guide, X_N) for _ in range(3)}
        assert len(values) == 3  # still sampled: no closed form used


def test_analytic_kl_errors():
    with pytest.raises(ValueError, match=r"stl=True, analytic_kl=True"):
        ELBO(stl=True, analytic_kl=True)

    def scaled_model(x):
        with pyro.poutine.scale(scale=0.5):
            latent_only_model(x)

    pyro.clear_param_store()
    with pytest.raises(po.ObjectiveError, match=r"site 'z'.*same poutine.scale"):
        ELBO(analytic_kl=True).loss(scaled_model, normal_guide(), X_N)


# ------------------------------------------------------------------ reweighted wake-sleep
# RWS's gradient is not the gradient of a fixed objective: its expectation is
# E[sum_k softmax(log w)_k grad log p(x, z_k)] (wake-p) and the same with log q (wake-q).


def rws_expected_loss(wake, num_particles):
    configs = bernoulli_configs(num_particles)

    def loss_fn(p, delta):
        log_p, log_q = bernoulli_log_pq(configs, p, delta)
        normalized = torch.softmax((log_p - log_q).detach(), -1)
        prob = log_q.sum(-1).exp().detach()
        signal = torch.zeros_like(prob)
        if wake in ("p", "both"):
            signal = signal + (normalized * log_p).sum(-1)
        if wake in ("q", "both"):
            signal = signal + (normalized * log_q).sum(-1)
        return -(prob * signal).sum()

    return loss_fn


@pytest.mark.parametrize("wake", ["p", "q", "both"])
def test_rws_expected_gradients(wake):
    values, grads = gradient_samples(
        RWS(num_particles=K_B, wake=wake),
        bernoulli_model,
        bernoulli_guide(Enumerate()),  # RWS ignores strategies: nothing is differentiated
        ["p", "delta"],
        200,
        X_B,
    )
    _, grad = exact_loss_and_grad(rws_expected_loss(wake, K_B), INITS_B)
    iwae_loss, _ = exact_loss_and_grad(bernoulli_loss("iwae", K_B), INITS_B)
    assert_unbiased(grads, grad)
    assert_unbiased(values, iwae_loss)
    if wake == "p":
        assert bool((grads[:, 0] == 0).all())  # no guide gradient
    if wake == "q":
        assert bool((grads[:, 1] == 0).all())  # no model gradient


# ------------------------------------------------------------------ per-data-point weights
# Only local latents: z_n ~ Bernoulli(0.3), x_n ~ N(delta z_n - 0.5, 1), n = 1..4; guide
# Bernoulli(p_n). With local_plate="data" the objective is sum_n E[f(log w_{., n})], each a
# finite sum over 2^K configurations; with subsample_size=2 the minibatch sum is scaled by 2.

X_L = t(0.4, 2.1, -0.3, 1.0)
INITS_L = {
    "p": (t(0.4, 0.6, 0.2, 0.7), constraints.unit_interval),
    "delta": (t(1.5), constraints.real),
}


def local_model_and_guide(subsample_size, strategy):
    def model(x):
        delta = pyro.param("delta", INITS_L["delta"][0])
        with pyro.plate("data", 4, subsample_size=subsample_size) as idx:
            z = pyro.sample("z", dist.Bernoulli(t(0.3)))
            pyro.sample("x", dist.Normal(delta * z - 0.5, 1.0), obs=x[idx])

    def guide(x):
        p = pyro.param("p", INITS_L["p"][0], constraint=constraints.unit_interval)
        with pyro.plate("data", 4, subsample_size=subsample_size) as idx:
            pyro.sample("z", dist.Bernoulli(p[idx]), infer={"estimator": strategy})

    return model, guide


def local_log_pq(configs, p, delta):
    z = configs.unsqueeze(-1)  # (C, K, 1)
    log_q = dist.Bernoulli(p).log_prob(z)  # (C, K, N)
    log_p = dist.Bernoulli(t(0.3)).log_prob(z) + dist.Normal(delta * z - 0.5, 1.0).log_prob(X_L)
    return log_p.transpose(-1, -2), log_q.transpose(-1, -2)  # (C, N, K)


def local_loss(kind, num_particles):
    reduce, sign = REDUCTIONS[kind]
    configs = bernoulli_configs(num_particles)

    def loss_fn(p, delta):
        log_p, log_q = local_log_pq(configs, p, delta)
        return sign * (log_q.sum(-1).exp() * reduce(log_p - log_q)).sum()

    return loss_fn


LOCAL_OBJECTIVES = {
    "iwae": lambda: IWAE(num_particles=2, local_plate="data"),
    "vimco": lambda: VIMCO(num_particles=2, local_plate="data"),
    "cubo": lambda: CUBO(n=2, num_particles=2, local_plate="data"),
}


@pytest.mark.parametrize(
    "kind,subsample_size",
    [
        pytest.param("iwae", None, id="iwae-full"),
        pytest.param("vimco", 2, id="vimco-minibatch"),
        pytest.param("cubo", 2, id="cubo-minibatch"),
        pytest.param("iwae", 2, id="iwae-minibatch", marks=pytest.mark.slow),
        pytest.param("vimco", None, id="vimco-full", marks=pytest.mark.slow),
        pytest.param("cubo", None, id="cubo-full", marks=pytest.mark.slow),
    ],
)
def test_local_plate_objectives_with_mvd_unbiased(kind, subsample_size):
    model, guide = local_model_and_guide(subsample_size, MVD())
    values, grads = gradient_samples(
        LOCAL_OBJECTIVES[kind](), model, guide, list(INITS_L), 150, X_L
    )
    loss, grad = exact_loss_and_grad(local_loss(kind, 2), INITS_L)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


def test_local_plate_vimco_with_reinforce_unbiased():
    model, guide = local_model_and_guide(None, Reinforce())
    values, grads = gradient_samples(
        LOCAL_OBJECTIVES["vimco"](), model, guide, list(INITS_L), 200, X_L
    )
    loss, grad = exact_loss_and_grad(local_loss("vimco", 2), INITS_L)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize("kind", ["iwae", "cubo"])
@pytest.mark.parametrize("subsample_size", [None, 2])
def test_local_plate_objectives_with_reinforce_unbiased(kind, subsample_size):
    """Each data point's score sites get that point's own bound as learning signal."""
    model, guide = local_model_and_guide(subsample_size, Reinforce(None))
    values, grads = gradient_samples(
        LOCAL_OBJECTIVES[kind](), model, guide, list(INITS_L), 400, X_L
    )
    loss, grad = exact_loss_and_grad(local_loss(kind, 2), INITS_L)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


def test_local_plate_vimco_with_reinforce_and_minibatches_unbiased():
    """The score of a site in a subsampled plate is its unscaled log q (the signal is scaled).

    Scaling the score too (Pyro's scaled site log_prob) doubles the score term: 2-3x the exact
    gradient, 14 SE with 2000 estimates.
    """
    model, guide = local_model_and_guide(2, Reinforce())
    values, grads = gradient_samples(
        LOCAL_OBJECTIVES["vimco"](), model, guide, list(INITS_L), 300, X_L
    )
    loss, grad = exact_loss_and_grad(local_loss("vimco", 2), INITS_L)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


@pytest.mark.parametrize("subsample_size", [None, 2], ids=["full", "minibatch"])
def test_local_plate_rws_expected_gradients(subsample_size):
    configs = bernoulli_configs(2)

    def loss_fn(p, delta):
        log_p, log_q = local_log_pq(configs, p, delta)  # (C, N, K)
        normalized = torch.softmax((log_p - log_q).detach(), -1)
        prob = log_q.sum(-1).exp().detach()
        return -(prob * (normalized * (log_p + log_q)).sum(-1)).sum()

    model, guide = local_model_and_guide(subsample_size, None)
    _, grads = gradient_samples(
        RWS(num_particles=2, local_plate="data"), model, guide, list(INITS_L), 150, X_L
    )
    _, grad = exact_loss_and_grad(loss_fn, INITS_L)
    assert_unbiased(grads, grad)


def test_local_plate_with_a_global_latent_raises():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(t(0.0), 1.0))
        with pyro.plate("data", 4):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", t(0.0)), 1.0))

    with pytest.raises(ObjectiveError, match=r"local_plate='data'.*'mu'.*local_plate=None"):
        IWAE(num_particles=2, local_plate="data").differentiable_loss(model, guide, X_L)


# ------------------------------------------------------------------ objective values
# z ~ N(0, 1), x ~ N(z, 1): log p(x) = log N(x; 0, 2). Guide N(3, 1), far from the posterior
# N(0.75, 0.5), so that the bound keeps tightening over K = 1, 4, 16, 64 (expected values
# -7.0, -3.9, -2.55, -2.06 against log p(x) = -1.83; the gaps are 6 to 10 standard errors).


def test_bound_values_are_ordered_and_increase_with_k():
    x = t(1.5)
    m, s = 3.0, 1.0

    def model(x):
        z = pyro.sample("z", dist.Normal(t(0.0), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(pyro.param("m", t(m)), pyro.param("s", t(s))))

    log_evidence = float(dist.Normal(t(0.0), math.sqrt(2.0)).log_prob(x))
    exact_elbo = (
        -0.5 * (m**2 + s**2)
        - 0.5 * ((1.5 - m) ** 2 + s**2)
        - LOG_2PI
        + 0.5 * math.log(2 * math.pi * math.e * s**2)
    )

    def mean_and_se(objective_, num):
        values = torch.tensor([objective_.estimate(model, guide, x) for _ in range(num)])
        return float(values.mean()), float(values.std() / math.sqrt(num))

    init_params(model, guide, x)
    elbo, elbo_se = mean_and_se(ELBO(num_particles=100), 20)
    assert abs(elbo - exact_elbo) < 4 * elbo_se
    assert ELBO(num_particles=100).loss(model, guide, x) == pytest.approx(-exact_elbo, abs=1.0)
    previous, previous_se = exact_elbo, 0.0
    for k in (1, 4, 16, 64):
        value, se = mean_and_se(IWAE(num_particles=k), 250)
        if k == 1:
            assert abs(value - exact_elbo) < 4 * se  # IWAE with one particle is the ELBO
        else:
            assert value - previous > 4 * math.hypot(se, previous_se)
        assert value < log_evidence + 4 * se
        previous, previous_se = value, se
    assert previous < log_evidence  # K = 64 is still below the evidence
    value, se = mean_and_se(IWAE(num_particles=2), 250)
    assert abs(value - normal_iwae_value(m, s, x, 2)) < 4 * se


def normal_iwae_value(m, s, x, num_particles, nodes=20):
    """E[log mean_k w_k] for the model z ~ N(0, 1), x ~ N(z, 1) and guide N(m, s)."""
    eps, weights = gauss_hermite(nodes, num_particles)
    z = m + s * eps
    log_w = (
        dist.Normal(0.0, 1.0).log_prob(z)
        + dist.Normal(z, 1.0).log_prob(x)
        - dist.Normal(m, s).log_prob(z)
    )
    return float((weights * lme(log_w)).sum())


def test_cubo_value_is_the_exact_expectation_and_loss_is_the_bound():
    guide = bernoulli_guide(MVD())
    init_params(bernoulli_model, guide, X_B)
    bound, _ = exact_loss_and_grad(bernoulli_loss("cubo", K_B), INITS_B)
    cubo = CUBO(n=2, num_particles=K_B)
    losses = torch.tensor([cubo.loss(bernoulli_model, guide, X_B) for _ in range(200)])
    assert_unbiased(losses, bound)
    iwae, _ = exact_loss_and_grad(bernoulli_loss("iwae", K_B), INITS_B)
    assert float(bound) > -float(iwae)  # the upper bound sits above the lower bound


# ------------------------------------------------------------------ Pyro's interface
# mu ~ N(0, 1), x_i ~ N(mu, 1), i = 1..3: the posterior is N(sum(x) / 4, 1 / 4).

X_FIT = t(1.8, 2.5, 2.2)
POST_MEAN, POST_SD = float(X_FIT.sum()) / 4, 0.5


def fit_model(x):
    mu = pyro.sample("mu", dist.Normal(t(0.0), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def fit_guide(x):
    loc = pyro.param("loc", t(0.0))
    scale = pyro.param("scale", t(1.0), constraint=constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def test_objectives_are_pyro_elbos():
    for objective_ in (ELBO(), IWAE(), VIMCO(), Renyi(), CUBO(), RWS()):
        assert isinstance(objective_, pyro.infer.ELBO)
    elbo_module = ELBO(num_particles=4)(fit_model, fit_guide)  # Pyro's ELBOModule
    loss = elbo_module(X_FIT)
    assert loss.dim() == 0 and loss.requires_grad


def test_pyro_svi_with_iwae_fits_a_conjugate_model():
    svi = pyro.infer.SVI(
        fit_model, fit_guide, pyro.optim.Adam({"lr": 0.05}), loss=IWAE(num_particles=8)
    )
    locs = []
    for step in range(400):
        loss = svi.step(X_FIT)
        assert math.isfinite(loss)
        if step >= 200:
            locs.append(pyro.param("loc").item())
    # The K=8 bound is flat in the guide (gradient noise ~10x its signal near the optimum), so
    # Adam wanders: average the iterates. Observed errors over seeds 0-3: 0.04 to 0.17.
    assert abs(sum(locs) / len(locs) - POST_MEAN) < 0.25


def test_pyro_svi_with_dreg_iwae_fits_a_conjugate_model_exactly():
    svi = pyro.infer.SVI(
        fit_model,
        fit_guide,
        pyro.optim.Adam({"lr": 0.05}),
        loss=IWAE(num_particles=8, dreg=True),
    )
    for _ in range(400):
        svi.step(X_FIT)
    # DReG's variance vanishes at the optimum (q = posterior): observed errors < 1e-3
    assert pyro.param("loc").item() == pytest.approx(POST_MEAN, abs=0.02)
    assert pyro.param("scale").item() == pytest.approx(POST_SD, abs=0.02)


def test_pplx_svi_with_elbo_fits_a_conjugate_model():
    svi = SVI(
        fit_model,
        fit_guide,
        loss=ELBO(num_particles=4),
        optimizer=torch.optim.Adam,
        optim_args={"lr": 0.05},
    )
    result = svi.run(X_FIT, num_steps=400, num_samples=200)
    params = result.state.constrained_params()
    # ELBO gradient noise at lr 0.05: observed final errors ~0.02
    assert params["loc"].item() == pytest.approx(POST_MEAN, abs=0.1)
    assert params["scale"].item() == pytest.approx(POST_SD, abs=0.1)
    assert result.get_samples()["mu"].shape == (200,)


def test_loss_and_grads_backpropagates_differentiable_loss():
    guide = bernoulli_guide(MVD())
    init_params(bernoulli_model, guide, X_B)
    leaves = [pyro.param(n).unconstrained() for n in ("p", "delta")]
    pyro.set_rng_seed(3)
    loss = IWAE(num_particles=3).differentiable_loss(bernoulli_model, guide, X_B)
    expected = torch.autograd.grad(loss, leaves)
    pyro.set_rng_seed(3)
    value = IWAE(num_particles=3).loss_and_grads(bernoulli_model, guide, X_B)
    assert value == pytest.approx(loss.item(), abs=1e-12)
    for leaf, g in zip(leaves, expected):
        torch.testing.assert_close(leaf.grad, g)


# ------------------------------------------------------------------ user objectives


# Module-level objectives would cache their plate nesting after the first test, so that their
# random stream runs one guide execution ahead of a fresh library objective: make fresh ones.


def make_my_elbo():
    @objective(num_particles=32)
    def my_elbo(model, guide, *args, **kwargs):
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        return expectation(p.log_prob - q.log_prob)

    return my_elbo


def make_my_iwae():
    @objective(num_particles=3)
    def my_iwae(model, guide, *args, **kwargs):
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        return logmeanexp((p.log_prob - q.log_prob).total())

    return my_iwae


def make_my_cubo():
    @objective(num_particles=3, maximize=False)
    def my_cubo(model, guide, *args, **kwargs):
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        return logmeanexp(2.0 * (p.log_prob - q.log_prob).total()) / 2.0

    return my_cubo


@pytest.mark.parametrize(
    "strategy", [Reinforce(None), Reinforce("loo"), MVD(), Enumerate()], ids=str
)
def test_user_elbo_matches_the_library_elbo(strategy):
    guide = bernoulli_guide(strategy)
    names = ["p", "delta"]
    pyro.set_rng_seed(5)
    mine = gradient_samples(make_my_elbo(), bernoulli_model, guide, names, 30, X_B)
    pyro.set_rng_seed(5)
    library = gradient_samples(ELBO(num_particles=32), bernoulli_model, guide, names, 30, X_B)
    torch.testing.assert_close(mine, library)  # the same program: the same estimates
    loss, grad = exact_loss_and_grad(bernoulli_loss("elbo", 1), INITS_B)
    assert_unbiased(mine[1], grad)
    assert_unbiased(mine[0], loss)


@pytest.mark.parametrize(
    "mine,library",
    [
        (make_my_iwae, lambda: IWAE(num_particles=3)),
        (make_my_cubo, lambda: CUBO(n=2, num_particles=3)),
    ],
    ids=["iwae", "cubo"],
)
def test_user_nonlinear_objectives_match_the_library(mine, library):
    guide = bernoulli_guide(MVD())
    pyro.set_rng_seed(5)
    ours = gradient_samples(mine(), bernoulli_model, guide, ["p", "delta"], 10, X_B)
    pyro.set_rng_seed(5)
    theirs = gradient_samples(library(), bernoulli_model, guide, ["p", "delta"], 10, X_B)
    torch.testing.assert_close(ours, theirs)


def test_user_kl_annealed_elbo_unbiased():
    """The objectives guide's KL-annealed ELBO: E[log p(x | z) - beta (log q(z) - log p(z))]."""
    beta = 0.5

    @objective(num_particles=32)
    def annealed(model, guide, *args, **kwargs):
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        return expectation(p.log_likelihood - beta * (q.log_prob - p.log_prior))

    def loss_fn(p, delta):
        z = t(0.0, 1.0)
        log_q = dist.Bernoulli(p).log_prob(z)
        log_lik = dist.Normal(-0.5 + delta * z, 1.0).log_prob(X_B)
        log_prior = dist.Bernoulli(t(PRIOR_B)).log_prob(z)
        return -(log_q.exp() * (log_lik - beta * (log_q - log_prior))).sum()

    loss, grad = exact_loss_and_grad(loss_fn, INITS_B)
    for strategy in (Reinforce(), MVD(), Enumerate()):
        pyro.clear_param_store()
        values, grads = gradient_samples(
            annealed, bernoulli_model, bernoulli_guide(strategy), ["p", "delta"], 30, X_B
        )
        assert_unbiased(grads, grad)
        assert_unbiased(values, loss)


def test_user_estimate_with_a_leave_one_out_signal_unbiased():
    """A user VIMCO: Estimate(value, signal) with a per-particle signal (last dim particles)."""

    @objective(num_particles=K_B)
    def my_vimco(model, guide, *args, **kwargs):
        q = simulate(guide, *args, **kwargs)
        p = density(model, q, *args, **kwargs)
        log_w = (p.log_prob - q.log_prob).total()
        value = logmeanexp(log_w)
        k = log_w.shape[-1]
        rest = (log_w.detach().sum(-1, keepdim=True) - log_w.detach()) / (k - 1)
        loo = torch.stack(
            [
                logmeanexp(
                    torch.cat(
                        [
                            log_w.detach()[..., :i],
                            rest[..., i : i + 1],
                            log_w.detach()[..., i + 1 :],
                        ],
                        -1,
                    )
                )
                for i in range(k)
            ],
            -1,
        )
        return Estimate(value, value.detach() - loo)

    values, grads = gradient_samples(
        my_vimco, bernoulli_model, bernoulli_guide(Reinforce(None)), ["p", "delta"], 200, X_B
    )
    loss, grad = exact_loss_and_grad(bernoulli_loss("iwae", K_B), INITS_B)
    assert_unbiased(grads, grad)
    assert_unbiased(values, loss)


# ------------------------------------------------------------------ errors


def test_per_particle_terms_without_expectation_raise():
    @objective(num_particles=2)
    def forgot_expectation(model, guide, *args):
        q = simulate(guide, *args)
        return density(model, q, *args).log_prob - q.log_prob

    guide = bernoulli_guide()
    with pytest.raises(ObjectiveError, match=r"per-particle Terms.*expectation\(\.\.\.\)"):
        forgot_expectation.differentiable_loss(bernoulli_model, guide, X_B)
    with pytest.raises(ObjectiveError, match=r"per-particle Terms"):
        forgot_expectation.loss(bernoulli_model, guide, X_B)


def test_unreduced_particles_raise():
    @objective(num_particles=3)
    def forgot_reduction(model, guide, *args):
        q = simulate(guide, *args)
        return (density(model, q, *args).log_prob - q.log_prob).total()

    with pytest.raises(ObjectiveError, match=r"shape \(3,\).*single number"):
        forgot_reduction.differentiable_loss(bernoulli_model, bernoulli_guide(), X_B)


def test_mixing_expectation_and_per_particle_terms_raises():
    @objective(num_particles=2)
    def mixed(model, guide, *args):
        q = simulate(guide, *args)
        p = density(model, q, *args)
        return expectation(p.log_prob) - q.log_prob

    with pytest.raises(ObjectiveError, match="cannot add an expectation"):
        mixed.differentiable_loss(bernoulli_model, bernoulli_guide(), X_B)


def test_wrong_return_type_and_particle_mismatch_raise():
    @objective
    def returns_float(model, guide, *args):
        simulate(guide, *args)
        return 1.0

    @objective(num_particles=2)
    def mismatch(model, guide, *args):
        q = simulate(guide, *args, num_particles=3)
        return expectation(density(model, q, *args).log_prob - q.log_prob)

    with pytest.raises(ObjectiveError, match="got float"):
        returns_float.differentiable_loss(bernoulli_model, bernoulli_guide(), X_B)
    with pytest.raises(ObjectiveError, match=r"num_particles=3.*num_particles=2"):
        mismatch.differentiable_loss(bernoulli_model, bernoulli_guide(), X_B)


def test_guide_site_missing_from_the_model_raises():
    def guide(x):
        bernoulli_guide()(x)
        pyro.sample("w", dist.Normal(t(0.0), 1.0))

    with pytest.raises(ObjectiveError, match=r"guide site 'w'.*is_auxiliary"):
        ELBO().differentiable_loss(bernoulli_model, guide, X_B)


def test_model_latent_missing_from_the_guide_raises():
    def model(x):
        bernoulli_model(x)
        pyro.sample("w", dist.Normal(t(0.0), 1.0))

    with pytest.raises(ObjectiveError, match=r"model site 'w'.*add it to the guide"):
        IWAE().differentiable_loss(model, bernoulli_guide(MVD()), X_B)


def test_primitives_outside_an_objective_raise():
    with pytest.raises(ObjectiveError, match="run inside an objective"):
        simulate(bernoulli_guide(), X_B)


def test_primitives_outside_an_objective_suggest_existing_functions():
    with pytest.raises(ObjectiveError) as info:
        simulate(bernoulli_guide(), X_B)
    for name in re.findall(r"pplx\.objectives\.(\w+)", str(info.value)):
        assert hasattr(po, name), name


def test_constructor_validation():
    with pytest.raises(ValueError, match="positive integer"):
        ELBO(num_particles=0)
    with pytest.raises(ValueError, match="positive integer"):
        IWAE(num_particles=2.5)
    with pytest.raises(ValueError, match="VIMCO needs num_particles >= 2"):
        VIMCO(num_particles=1)
    with pytest.raises(ValueError, match="RWS needs num_particles >= 2"):
        RWS(num_particles=1)
    with pytest.raises(ValueError, match="wake must be"):
        RWS(wake="sleep")
    with pytest.raises(ValueError, match="n >= 1"):
        CUBO(n=0.5)


def test_plate_nesting_guess_leaves_the_random_stream_alone():
    """The first call guesses max_plate_nesting from a blocked run of guide and model; that run
    must not draw from the caller's stream, or a fit resumed from a checkpoint (whose first
    step guesses again) would not continue the uninterrupted one."""
    guide = normal_guide()
    pyro.clear_param_store()
    init_params(normal_model, guide, X_N)
    losses, states = [], []
    for nesting in (None, 0):  # None: guessed on this call; 0: given, nothing to guess
        pyro.set_rng_seed(3)
        losses.append(ELBO(max_plate_nesting=nesting).loss(normal_model, guide, X_N))
        states.append(torch.get_rng_state())
    assert losses[0] == losses[1]
    assert torch.equal(states[0], states[1])


def test_bookkeeping_runs_leave_batch_norm_statistics_alone():
    """Guessing the plate nesting (and capturing a compiled program) runs the guide; with a
    batch-norm layer in training mode those runs must not count as training steps."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    x = torch.randn(8, 2)

    def model(x):
        with pyro.plate("n", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 3]).to_event(1))

    def guide(x):
        pyro.module("net", net)
        with pyro.plate("n", x.shape[0]):
            pyro.sample("z", dist.Normal(net(x), 1.0).to_event(1))

    pyro.clear_param_store()
    norm = net[1]
    ELBO().differentiable_loss(model, guide, x).backward()  # one step, one update
    assert int(norm.num_batches_tracked) == 1
    expected = 0.1 * net[0](x).detach().mean(0)  # momentum 0.1 from zeros
    assert torch.allclose(norm.running_mean, expected, atol=1e-6)
    compiled = ELBO().compile()
    for steps in (2, 3, 4):  # eager + capture on the first call, replays after
        compiled.differentiable_loss(model, guide, x).backward()
        assert int(norm.num_batches_tracked) == steps


def test_untouched_buffers_restores_replaced_and_updated_buffers():
    from pplx.rng import untouched_buffers

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))
            self.register_buffer("last", torch.zeros(2))

        def forward(self, x):
            self.count += 1  # in place
            self.last = x.detach().clone()  # replaced
            return x

    counter = Counter()
    count, last = counter.count, counter.last
    with untouched_buffers():
        counter(torch.ones(2))
        assert float(counter.count) == 1 and counter.last is not last
    assert counter.count is count and counter.last is last
    assert float(counter.count) == 0 and torch.equal(counter.last, torch.zeros(2))
    counter(torch.ones(2))  # outside the block: updates stay
    assert float(counter.count) == 1
