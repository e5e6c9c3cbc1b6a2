"""Tests of the NUTS wrapper (``pplx.inference.NUTS``) and ``result_from_mcmc``."""

import math

import pyro
import pyro.distributions as dist
import pyro.infer.mcmc.api as mcmc_api
import pytest
import torch
from pyro.infer import MCMC
from pyro.infer import NUTS as PyroNUTS

from pplx.inference import NUTS, ModelError, Result, result_from_mcmc


def conjugate_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


def _posterior(y):
    """Exact posterior N(m, v) of mu for ``conjugate_model``."""
    v = 1.0 / (1 + y.shape[0])
    return float(y.sum()) * v, math.sqrt(v)


@pytest.fixture
def data():
    pyro.set_rng_seed(0)
    return torch.randn(10, dtype=torch.float64) + 1.0


def test_nuts_conjugate_normal_posterior(data):
    pyro.set_rng_seed(1)
    nuts = NUTS(conjugate_model, jit_compile=False, progress_bar=False)
    result = nuts.run(data, num_samples=200, warmup_steps=200)
    assert isinstance(result, Result)
    assert result.engine == "nuts"
    assert (result.num_chains, result.num_draws) == (1, 200)
    assert result.samples["mu"].shape == (1, 200)

    mean, sd = _posterior(data)
    draws = result.get_samples()["mu"]
    ess = float(result.effective_sample_size()["mu"])
    assert ess > 20  # the Monte Carlo error bound below is only meaningful with some ESS
    # Monte Carlo standard errors from the result's own bulk ESS: sd / sqrt(ESS) for the mean,
    # about sd / sqrt(2 ESS) for the standard deviation; allow 4 of them.
    assert abs(float(draws.mean()) - mean) < 4 * sd / math.sqrt(ess)
    assert abs(float(draws.std()) - sd) < 4 * sd / math.sqrt(2 * ess)

    diverging = result.sample_stats["diverging"]
    assert diverging.shape == (1, 200) and diverging.dtype == torch.bool
    assert result.info["num_chains"] == 1
    assert result.info["num_samples"] == 200
    assert result.info["warmup_steps"] == 200
    assert result.info["divergences"] == int(diverging.sum())
    assert 0.0 < result.info["mean_accept_prob"] <= 1.0
    assert result.wall_time > 0


def test_nuts_two_chains_grouped(data, monkeypatch):
    # Pyro runs chains in worker processes when there are spare CPUs (and sequentially
    # otherwise). Spawned workers would re-import the test module and take several seconds
    # each, so the chains are made to run one after another here; the grouping logic under
    # test is the same either way.
    monkeypatch.setattr(mcmc_api.mp, "cpu_count", lambda: 1)
    pyro.set_rng_seed(2)
    nuts = NUTS(conjugate_model, num_chains=2, jit_compile=False, progress_bar=False)
    with pytest.warns(UserWarning, match="sequentially"):
        result = nuts.run(data, num_samples=60, warmup_steps=60)
    assert result.num_chains == 2 and result.num_draws == 60
    assert result.get_samples(group_by_chain=True)["mu"].shape == (2, 60)
    assert result.get_samples()["mu"].shape == (120,)
    assert result.sample_stats["diverging"].shape == (2, 60)
    assert result.info["num_chains"] == 2
    # The two chains are different chains, not one chain twice.
    assert not torch.equal(result.samples["mu"][0], result.samples["mu"][1])
    mean, sd = _posterior(data)
    # Loose sanity check (120 correlated draws): within 6 posterior sds / sqrt(20).
    assert abs(float(result.samples["mu"].mean()) - mean) < 6 * sd / math.sqrt(20)
    assert {"posterior", "sample_stats"} <= set(result.to_arviz().groups())


def test_result_from_real_mcmc_keeps_draws(data):
    pyro.set_rng_seed(3)
    mcmc = MCMC(
        PyroNUTS(conjugate_model, jit_compile=False),
        num_samples=25,
        warmup_steps=15,
        disable_progbar=True,
    )
    mcmc.run(data)
    result = result_from_mcmc(mcmc, engine="ref", wall_time=1.25)
    assert result.engine == "ref" and result.wall_time == 1.25
    assert torch.equal(result.samples["mu"], mcmc.get_samples(group_by_chain=True)["mu"])
    assert result.info["warmup_steps"] == 15 and result.info["num_samples"] == 25
    assert result.sample_stats["diverging"].dtype == torch.bool


class _FakeMCMC:
    """Stands in for a finished ``pyro.infer.MCMC`` with known divergences."""

    warmup_steps = 10

    def get_samples(self, group_by_chain=False):
        assert group_by_chain
        return {"a": torch.arange(10.0).reshape(2, 5), "b": torch.zeros(2, 5, 3)}

    def diagnostics(self):
        return {
            "a": {"n_eff": torch.tensor(3.0)},
            "divergences": {"chain 0": [1, 3], "chain 1": [4, 7]},  # 7 is out of range
            "acceptance rate": {"chain 0": 0.8, "chain 1": 0.6},
        }


def test_result_from_mcmc_marks_divergences():
    result = result_from_mcmc(_FakeMCMC())
    expected = torch.zeros(2, 5, dtype=torch.bool)
    expected[0, 1] = expected[0, 3] = expected[1, 4] = True
    assert torch.equal(result.sample_stats["diverging"], expected)
    assert result.info["divergences"] == 3
    assert result.info["mean_accept_prob"] == pytest.approx(0.7)
    assert result.info["warmup_steps"] == 10
    assert result.samples["b"].shape == (2, 5, 3)
    assert result.engine == "nuts"


# --------------------------------------------------------------------------- errors


def discrete_model(y):
    pyro.sample("mu", dist.Normal(0.0, 1.0))
    k = pyro.sample("k", dist.Bernoulli(0.3))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(k, 1.0), obs=y)


def test_discrete_latent_is_refused_by_name():
    with pytest.raises(ModelError, match=r"\['k'\] are discrete"):
        NUTS(discrete_model, jit_compile=False, progress_bar=False).run(
            torch.randn(3), num_samples=5
        )


def no_latent_model(y):
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(0.0, 1.0), obs=y)


def test_model_without_latents_is_refused():
    with pytest.raises(ModelError, match="no latent sample sites.*'obs'"):
        NUTS(no_latent_model, progress_bar=False).run(torch.randn(3), num_samples=5)


def failing_model(y):
    raise TypeError("boom")


def test_failing_model_is_explained():
    with pytest.raises(ModelError, match="failing_model.*TypeError: boom"):
        NUTS(failing_model, progress_bar=False).run(torch.randn(3), num_samples=5)


def test_broadcasting_observation_is_refused(data):
    with pytest.raises(ModelError, match="observed site 'obs'"):
        NUTS(conjugate_model, progress_bar=False).run(data.reshape(-1, 1), num_samples=5)


@pytest.mark.parametrize("num_samples", [0, -3])
def test_num_samples_must_be_positive(data, num_samples):
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        NUTS(conjugate_model, progress_bar=False).run(data, num_samples=num_samples)


def test_num_chains_must_be_positive():
    with pytest.raises(ValueError, match="num_chains must be >= 1"):
        NUTS(conjugate_model, num_chains=0)
