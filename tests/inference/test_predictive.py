"""Tests of ``pplx.inference.predictive``: evaluating Pyro models and guides on draws."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.ops.indexing import Vindex

from pplx import datasets
from pplx.inference import predictive
from pplx.models import eight_schools, logistic_regression

# --------------------------------------------------------------------------- helpers


def _draw(draws, i):
    return {k: v[i] for k, v in draws.items()}


def _reference_traces(model, draws, *args):
    """One conditioned trace per draw, the slow way."""
    num = next(iter(draws.values())).shape[0]
    traces = []
    for i in range(num):
        trace = poutine.trace(poutine.condition(model, _draw(draws, i))).get_trace(*args)
        trace.compute_log_prob()
        traces.append(trace)
    return traces


def _reference_log_joint(model, draws, *args):
    return torch.stack([t.log_prob_sum() for t in _reference_traces(model, draws, *args)])


@pytest.fixture
def logistic_data():
    data = datasets.breast_cancer(dtype=torch.float64)
    return data.x[:40, :5], data.y[:40]


@pytest.fixture
def logistic_draws():
    pyro.set_rng_seed(0)
    return {
        "w": torch.randn(6, 5, dtype=torch.float64),
        "b": torch.randn(6, dtype=torch.float64),
    }


@pytest.fixture
def schools():
    data = datasets.eight_schools(dtype=torch.float64)
    return data.x, data.y


def _schools_draws(num, seed=0):
    pyro.set_rng_seed(seed)
    return {
        "mu": 5 * torch.randn(num, dtype=torch.float64),
        "tau": torch.rand(num, dtype=torch.float64) * 10 + 0.1,
        "theta_raw": torch.randn(num, 8, dtype=torch.float64),
    }


def normal_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 10.0))
    with pyro.plate("data", y.shape[0]):
        return pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


# --------------------------------------------------------------------------- log_joint


def test_log_joint_logistic_matches_loop(logistic_data, logistic_draws):
    x, y = logistic_data
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the vectorized path is taken
        log_joint = predictive.log_joint(logistic_regression, logistic_draws, x, y)
    expected = _reference_log_joint(logistic_regression, logistic_draws, x, y)
    assert log_joint.shape == (6,)
    assert log_joint.dtype == torch.float64
    torch.testing.assert_close(log_joint, expected, rtol=1e-10, atol=1e-10)


def test_log_joint_eight_schools_matches_loop(schools):
    sigma, y = schools
    draws = _schools_draws(7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        log_joint = predictive.log_joint(eight_schools, draws, sigma, y)
    expected = _reference_log_joint(eight_schools, draws, sigma, y)
    assert log_joint.shape == (7,)
    torch.testing.assert_close(log_joint, expected, rtol=1e-10, atol=1e-10)


def test_log_joint_single_draw(schools):
    sigma, y = schools
    draws = _schools_draws(1)
    log_joint = predictive.log_joint(eight_schools, draws, sigma, y)
    assert log_joint.shape == (1,)
    torch.testing.assert_close(log_joint, _reference_log_joint(eight_schools, draws, sigma, y))


def nested_plates_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("rows", y.shape[0], dim=-2):
        row = pyro.sample("row", dist.Normal(mu, 1.0))
        with pyro.plate("cols", y.shape[1], dim=-1):
            pyro.sample("obs", dist.Normal(row, 0.5), obs=y)


def event_model(y):
    z = pyro.sample(
        "z", dist.MultivariateNormal(torch.zeros(2, dtype=y.dtype), torch.eye(2, dtype=y.dtype))
    )
    pyro.sample("obs", dist.Normal(z, 1.0).to_event(1), obs=y)


def test_log_joint_nested_plates_and_event_dims():
    pyro.set_rng_seed(1)
    y = torch.randn(3, 4, dtype=torch.float64)
    draws = {"mu": torch.randn(5, dtype=torch.float64), "row": torch.randn(5, 3, 1).double()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = predictive.log_joint(nested_plates_model, draws, y)
        log_lik = predictive.pointwise_log_likelihood(nested_plates_model, draws, y)
    torch.testing.assert_close(got, _reference_log_joint(nested_plates_model, draws, y))
    assert log_lik["obs"].shape == (5, 3, 4)
    expected = dist.Normal(draws["row"], 0.5).log_prob(y)
    torch.testing.assert_close(log_lik["obs"], expected)

    y2 = torch.tensor([0.3, -1.2], dtype=torch.float64)
    draws2 = {"z": torch.randn(4, 2, dtype=torch.float64)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got2 = predictive.log_joint(event_model, draws2, y2)
        log_lik2 = predictive.pointwise_log_likelihood(event_model, draws2, y2)
    torch.testing.assert_close(got2, _reference_log_joint(event_model, draws2, y2))
    assert log_lik2["obs"].shape == (4,)  # the event dimension is summed
    torch.testing.assert_close(log_lik2["obs"], dist.Normal(draws2["z"], 1.0).log_prob(y2).sum(-1))


def test_draws_naming_unknown_site_raise(schools):
    sigma, y = schools
    draws = _schools_draws(3)
    draws["theta"] = torch.randn(3, 8)
    with pytest.raises(ValueError, match=r"\['theta'\].*does not sample"):
        predictive.log_joint(eight_schools, draws, sigma, y)
    with pytest.raises(ValueError, match="theta"):
        predictive.pointwise_log_likelihood(eight_schools, draws, sigma, y)
    with pytest.raises(ValueError, match="theta"):
        predictive.posterior_predictive(eight_schools, draws, sigma, y)


def test_draws_with_different_sizes_raise(schools):
    sigma, y = schools
    draws = _schools_draws(3)
    draws["mu"] = draws["mu"][:2]
    with pytest.raises(ValueError, match="leading"):
        predictive.log_joint(eight_schools, draws, sigma, y)


# --------------------------------------------------------------------------- log-likelihood


def test_pointwise_log_likelihood_logistic(logistic_data, logistic_draws):
    x, y = logistic_data
    log_lik = predictive.pointwise_log_likelihood(logistic_regression, logistic_draws, x, y)
    assert set(log_lik) == {"obs"}
    assert log_lik["obs"].shape == (6, 40)
    traces = _reference_traces(logistic_regression, logistic_draws, x, y)
    expected = torch.stack([t.nodes["obs"]["log_prob"] for t in traces])
    torch.testing.assert_close(log_lik["obs"], expected)
    # It sums to the likelihood part of the log joint.
    prior = dist.Normal(0.0, 1.0).log_prob(logistic_draws["w"]).sum(-1) + dist.Normal(
        0.0, 5.0
    ).log_prob(logistic_draws["b"])
    log_joint = predictive.log_joint(logistic_regression, logistic_draws, x, y)
    torch.testing.assert_close(log_lik["obs"].sum(-1), log_joint - prior)


def test_pointwise_log_likelihood_eight_schools(schools):
    sigma, y = schools
    draws = _schools_draws(5)
    log_lik = predictive.pointwise_log_likelihood(eight_schools, draws, sigma, y)
    assert log_lik["obs"].shape == (5, 8)
    theta = draws["mu"].unsqueeze(-1) + draws["tau"].unsqueeze(-1) * draws["theta_raw"]
    torch.testing.assert_close(log_lik["obs"], dist.Normal(theta, sigma).log_prob(y))
    traces = _reference_traces(eight_schools, draws, sigma, y)
    likelihood = torch.stack([t.nodes["obs"]["log_prob_sum"] for t in traces])
    torch.testing.assert_close(log_lik["obs"].sum(-1), likelihood)


# --------------------------------------------------------------------------- predictive


def test_observed_data(logistic_data, schools):
    x, y = logistic_data
    observed = predictive.observed_data(logistic_regression, x, y)
    assert set(observed) == {"obs"} and torch.equal(observed["obs"], y)
    sigma, effects = schools
    assert torch.equal(predictive.observed_data(eight_schools, sigma, effects)["obs"], effects)
    assert predictive.observed_data(logistic_regression, x, None) == {}


def test_posterior_predictive_with_constant_draws_matches_likelihood():
    pyro.set_rng_seed(2)
    num, n, c = 2000, 5, 2.0
    y = torch.full((n,), 100.0)  # far from c: replicates must not copy the data
    draws = {"mu": torch.full((num,), c)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        replicated = predictive.posterior_predictive(normal_model, draws, y)["obs"]
    assert replicated.shape == (num, n)
    # 10,000 iid N(c, 1) values: the sample mean has standard error 1/sqrt(10,000) = 0.01 and
    # the sample sd about 1/sqrt(2 * 10,000) ~ 0.007; allow 4 standard errors.
    assert abs(float(replicated.mean()) - c) < 4 * 0.01
    assert abs(float(replicated.std()) - 1.0) < 4 * 0.0071
    # Independent across draws too, not one replicate broadcast over draws: per-column sd over
    # 2000 draws has standard error 1/sqrt(4000) ~ 0.016.
    assert torch.all((replicated.std(0) - 1).abs() < 4 * 0.016)


def test_posterior_predictive_follows_each_draw(schools):
    sigma, y = schools
    num = 500
    draws = _schools_draws(num, seed=4)
    pyro.set_rng_seed(5)
    replicated = predictive.posterior_predictive(eight_schools, draws, sigma, y)
    assert set(replicated) == {"obs"} and replicated["obs"].shape == (num, 8)
    theta = draws["mu"].unsqueeze(-1) + draws["tau"].unsqueeze(-1) * draws["theta_raw"]
    z = (replicated["obs"] - theta) / sigma
    # If every replicate is drawn given its own draw, z is 4000 iid N(0, 1) values: mean within
    # 4 / sqrt(4000) = 0.063, sd within 4 / sqrt(2 * 4000) = 0.045 of 1. Misaligned draws would
    # make the sd of z many times larger (tau up to 10, sigma ~ 9-18, mu sd 5).
    assert abs(float(z.mean())) < 0.063
    assert abs(float(z.std()) - 1) < 0.045


def test_posterior_predictive_logistic(logistic_data, logistic_draws):
    x, y = logistic_data
    pyro.set_rng_seed(6)
    num = 400
    draws = {
        "w": torch.randn(num, 5, dtype=torch.float64),
        "b": torch.randn(num, dtype=torch.float64),
    }
    replicated = predictive.posterior_predictive(logistic_regression, draws, x, y)["obs"]
    assert replicated.shape == (num, 40)
    assert set(replicated.unique().tolist()) <= {0.0, 1.0}
    probs = torch.sigmoid(x @ draws["w"].T + draws["b"]).T
    # The mean of S*N independent Bernoulli(p) residuals has sd sqrt(mean p(1-p) / (S*N)).
    se = math.sqrt(float((probs * (1 - probs)).mean()) / probs.numel())
    assert abs(float((replicated - probs).mean())) < 4 * se


# --------------------------------------------------------------------------- guides


def schools_guide(sigma, y=None):
    dtype = sigma.dtype
    loc = pyro.param("test_guide_loc", torch.tensor(1.0, dtype=dtype))
    pyro.sample("mu", dist.Normal(loc, 0.5))
    pyro.sample("tau", dist.LogNormal(torch.tensor(0.0, dtype=dtype), 0.3))
    with pyro.plate("schools", sigma.shape[0]):
        pyro.sample("theta_raw", dist.Normal(0.1 * torch.arange(8, dtype=dtype), 0.7))


def _schools_guide_log_q(draws):
    return (
        dist.Normal(1.0, 0.5).log_prob(draws["mu"])
        + dist.LogNormal(0.0, 0.3).log_prob(draws["tau"])
        + dist.Normal(0.1 * torch.arange(8.0).double(), 0.7).log_prob(draws["theta_raw"]).sum(-1)
    )


def test_guide_draws_shapes_and_log_q(schools):
    sigma, y = schools
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    num = 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        draws, log_q = predictive.guide_draws(schools_guide, num, sigma, y)
    assert set(draws) == {"mu", "tau", "theta_raw"}
    assert draws["mu"].shape == (num,) and draws["tau"].shape == (num,)
    assert draws["theta_raw"].shape == (num, 8)
    assert log_q.shape == (num,)
    torch.testing.assert_close(log_q, _schools_guide_log_q(draws))
    # Check against a loop over the guide conditioned on each draw (first 20 draws).
    head = {k: v[:20] for k, v in draws.items()}
    expected = _reference_log_joint(schools_guide, head, sigma, y)
    torch.testing.assert_close(log_q[:20], expected.detach())
    # The draws come from the guide: mean of mu within 4 standard errors (0.5 / sqrt(1000)).
    assert abs(float(draws["mu"].mean()) - 1.0) < 4 * 0.5 / math.sqrt(num)
    # Different draws are different.
    assert draws["theta_raw"].std(0).min() > 0.5


def aux_guide():
    z = pyro.sample("z", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
    pyro.sample("mu", dist.Delta(1.0 + 0.5 * z))


def test_guide_draws_auxiliary_sites_left_out_but_counted():
    pyro.set_rng_seed(8)
    draws, log_q = predictive.guide_draws(aux_guide, 50)
    assert set(draws) == {"mu"} and draws["mu"].shape == (50,)
    z = (draws["mu"] - 1.0) / 0.5
    torch.testing.assert_close(log_q, dist.Normal(0.0, 1.0).log_prob(z), rtol=1e-5, atol=1e-5)


def test_guide_draws_autonormal(schools):
    sigma, y = schools
    pyro.clear_param_store()
    pyro.set_rng_seed(9)
    guide = AutoNormal(eight_schools)
    guide(sigma, y)  # create the parameters
    draws, log_q = predictive.guide_draws(guide, 30, sigma, y)
    assert {k: tuple(v.shape) for k, v in draws.items()} == {
        "mu": (30,),
        "tau": (30,),
        "theta_raw": (30, 8),
    }
    assert (draws["tau"] > 0).all()
    # log q of the constrained draws: condition the guide's unconstrained (auxiliary) sites.
    expected = []
    for i in range(30):
        unconstrained = {
            "mu_unconstrained": draws["mu"][i],
            "tau_unconstrained": draws["tau"][i].log(),
            "theta_raw_unconstrained": draws["theta_raw"][i],
        }
        trace = poutine.trace(poutine.condition(guide, unconstrained)).get_trace(sigma, y)
        expected.append(trace.log_prob_sum().detach())
    torch.testing.assert_close(log_q, torch.stack(expected))


# --------------------------------------------------------------------------- fallback


def item_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 3.0))
    shift = mu.item()  # cannot be vectorized over draws
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(shift, 1.0), obs=y)


def branching_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 3.0))
    scale = 1.0 if mu > 0 else 2.0  # Python control flow on a sample value
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, scale), obs=y)


@pytest.mark.parametrize("model", [item_model, branching_model])
def test_non_vectorizable_model_falls_back_to_loop(model):
    pyro.set_rng_seed(10)
    y = torch.randn(4, dtype=torch.float64)
    draws = {"mu": torch.tensor([-1.5, -0.2, 0.3, 2.0, 0.9], dtype=torch.float64)}
    with pytest.warns(RuntimeWarning, match="could not be vectorized"):
        log_joint = predictive.log_joint(model, draws, y)
    torch.testing.assert_close(log_joint, _reference_log_joint(model, draws, y))

    with pytest.warns(RuntimeWarning, match="falling back"):
        log_lik = predictive.pointwise_log_likelihood(model, draws, y)
    traces = _reference_traces(model, draws, y)
    expected = torch.stack([t.nodes["obs"]["log_prob"] for t in traces])
    assert log_lik["obs"].shape == (5, 4)
    torch.testing.assert_close(log_lik["obs"], expected)

    with pytest.warns(RuntimeWarning):
        replicated = predictive.posterior_predictive(model, draws, y)
    assert replicated["obs"].shape == (5, 4)
    # Each draw's replicates are centred on its mu with scale <= 2: all residuals well within
    # 6 * 2 (20 values).
    assert ((replicated["obs"] - draws["mu"].unsqueeze(-1)).abs() < 12).all()
    assert not torch.equal(replicated["obs"][0], replicated["obs"][1])


def item_guide():
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = 0.5 if mu.item() > 0 else 2.0
    pyro.sample("sigma", dist.LogNormal(0.0, scale))


def test_non_vectorizable_guide_falls_back_to_loop():
    pyro.set_rng_seed(11)
    with pytest.warns(RuntimeWarning, match="drawing from the guide"):
        draws, log_q = predictive.guide_draws(item_guide, 20)
    assert draws["mu"].shape == (20,) and draws["sigma"].shape == (20,)
    assert log_q.shape == (20,)
    scale = torch.where(draws["mu"] > 0, 0.5, 2.0)
    expected = dist.Normal(0.0, 1.0).log_prob(draws["mu"]) + dist.LogNormal(0.0, scale).log_prob(
        draws["sigma"]
    )
    torch.testing.assert_close(log_q, expected)
    assert len(set(draws["mu"].tolist())) == 20


# --------------------------------------------------------------------------- known bugs


def deterministic_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    pyro.deterministic("twice_mu", 2 * mu)
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


def test_deterministic_sites_are_not_observed_data():
    y = torch.randn(5)
    draws = {"mu": torch.randn(3)}
    assert set(predictive.observed_data(deterministic_model, y)) == {"obs"}
    assert set(predictive.pointwise_log_likelihood(deterministic_model, draws, y)) == {"obs"}


def test_posterior_predictive_with_deterministic_site():
    pyro.set_rng_seed(12)
    y = torch.randn(5)
    draws = {"mu": torch.randn(3)}
    replicated = predictive.posterior_predictive(deterministic_model, draws, y)
    assert replicated["obs"].shape == (3, 5)


def param_model(y):
    scale = pyro.param("test_scale", torch.tensor(1.5), constraint=dist.constraints.positive)
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, scale), obs=y)


def test_log_joint_fallback_is_detached():
    y = torch.randn(4)
    draws = {"mu": torch.randn(3)}

    def looped(y):
        scale = pyro.param("test_scale", torch.tensor(1.5), constraint=dist.constraints.positive)
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        shift = mu.item()  # forces the loop
        with pyro.plate("data", y.shape[0]):
            pyro.sample("obs", dist.Normal(shift, scale), obs=y)

    with pytest.warns(RuntimeWarning):
        assert not predictive.log_joint(looped, draws, y).requires_grad


def test_log_joint_vectorized_is_detached_like_the_fallback():
    y = torch.randn(4)
    draws = {"mu": torch.randn(3)}
    log_joint = predictive.log_joint(param_model, draws, y)
    expected = torch.stack(
        [t.log_prob_sum() for t in _reference_traces(param_model, draws, y)]
    ).detach()
    torch.testing.assert_close(log_joint.detach(), expected)
    assert not predictive.pointwise_log_likelihood(param_model, draws, y)["obs"].requires_grad
    assert not log_joint.requires_grad


def test_guide_draws_auto_multivariate_normal(schools):
    from pyro.infer.autoguide import AutoMultivariateNormal

    sigma, y = schools
    pyro.clear_param_store()
    pyro.set_rng_seed(13)
    guide = AutoMultivariateNormal(eight_schools)
    guide(sigma, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        draws, log_q = predictive.guide_draws(guide, 40, sigma, y)
    assert draws["theta_raw"].shape == (40, 8) and log_q.shape == (40,)
    # log q of the constrained draws: the Gaussian density of the unconstrained vector (mu,
    # log tau, theta_raw, in the model's site order) minus log |d tau / d log tau| = log tau.
    unconstrained = torch.cat(
        [draws["mu"][:, None], draws["tau"].log()[:, None], draws["theta_raw"]], -1
    )
    expected = guide.get_posterior().log_prob(unconstrained) - draws["tau"].log()
    torch.testing.assert_close(log_q, expected.detach())


def mixture_model(y):
    locs = pyro.sample("locs", dist.Normal(torch.zeros(2), 5.0).to_event(1))
    with pyro.plate("data", y.shape[0]):
        z = pyro.sample("z", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=y)


def test_enumerated_sites_without_draws_are_refused():
    # Evaluating the model would sample the discrete site instead of summing it out.
    y = torch.tensor([-3.0, 3.0, 0.5])
    draws = {"locs": torch.tensor([[-3.0, 3.0], [-1.0, 2.0]])}
    for fn in (predictive.pointwise_log_likelihood, predictive.log_joint):
        with pytest.raises(ValueError, match=r"\['z'\] are marked for enumeration"):
            fn(mixture_model, draws, y)
