"""Tests of the bundled data sets and the demo model families."""

import dataclasses

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pplx import datasets
from pplx.models import eight_schools, logistic_regression
from pplx.traces import max_plate_nesting, trace_program, vectorized_trace

# --------------------------------------------------------------------------- data sets


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_breast_cancer(dtype):
    data = datasets.breast_cancer(dtype=dtype)
    assert data.x.shape == (569, 30) and data.y.shape == (569,)
    assert data.x.dtype == dtype and data.y.dtype == dtype
    assert set(data.y.unique().tolist()) == {0.0, 1.0}
    assert int(data.y.sum()) == 357  # benign tumours
    assert len(data.feature_names) == 30 and data.feature_names[0] == "mean radius"
    assert "breast cancer" in data.description
    # Standardised columns: mean 0 and (unbiased) standard deviation 1, up to rounding.
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    x = data.x.double()
    torch.testing.assert_close(x.mean(0), torch.zeros(30, dtype=torch.float64), atol=atol, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(30, dtype=torch.float64), atol=atol, rtol=0)


def test_breast_cancer_raw():
    raw = datasets.breast_cancer(standardize=False, dtype=torch.float64)
    assert raw.x.shape == (569, 30)
    assert (raw.x >= 0).all()  # the raw measurements are non-negative
    assert float(raw.x[:, 0].mean()) == pytest.approx(14.127, abs=1e-3)  # mean radius
    standardised = datasets.breast_cancer(dtype=torch.float64)
    torch.testing.assert_close(standardised.x, (raw.x - raw.x.mean(0)) / raw.x.std(0))
    assert torch.equal(standardised.y, raw.y)


def test_dataset_to():
    data = datasets.breast_cancer()
    wide = data.to(dtype=torch.float64)
    assert wide.x.dtype == torch.float64 and wide.y.dtype == torch.float64
    torch.testing.assert_close(wide.x.float(), data.x)
    assert wide.description == data.description and wide.feature_names == data.feature_names
    same = data.to("cpu")
    assert same.x.dtype == torch.float32 and same.x.device.type == "cpu"
    assert torch.equal(same.x, data.x)
    assert data.x.dtype == torch.float32  # the original is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.x = torch.zeros(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eight_schools_data(dtype):
    data = datasets.eight_schools(dtype=dtype)
    assert data.y.tolist() == [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
    assert data.x.tolist() == [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
    assert data.x.dtype == dtype and data.y.dtype == dtype
    assert data.feature_names == tuple(f"school_{i}" for i in range(8))


# --------------------------------------------------------------------------- model checks


def test_logistic_regression_refuses_bad_shapes():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\), got \(10,\)"):
        logistic_regression(torch.randn(10))
    with pytest.raises(ValueError, match=r"\(N,\) = \(10,\).*got \(10, 1\)"):
        logistic_regression(x, torch.zeros(10, 1))
    with pytest.raises(ValueError, match=r"got \(9,\)"):
        logistic_regression(x, torch.zeros(9))


def test_eight_schools_refuses_bad_shapes():
    data = datasets.eight_schools()
    with pytest.raises(ValueError, match=r"sigma must have shape \(J,\), got \(8, 1\)"):
        eight_schools(data.x.reshape(8, 1), data.y)
    with pytest.raises(ValueError, match=r"shape of sigma \(8,\), got \(7,\)"):
        eight_schools(data.x, data.y[:7])
    with pytest.raises(ValueError, match=r"got \(8, 1\)"):
        eight_schools(data.x, data.y.reshape(8, 1))


def test_models_simulate_without_data():
    pyro.set_rng_seed(0)
    x = torch.randn(12, 3)
    labels = logistic_regression(x)
    assert labels.shape == (12,) and set(labels.unique().tolist()) <= {0.0, 1.0}
    effects = eight_schools(datasets.eight_schools().x)
    assert effects.shape == (8,)


def test_model_traces():
    data = datasets.eight_schools()
    trace = trace_program(eight_schools, data.x, data.y)
    assert trace.nodes["obs"]["is_observed"] and torch.equal(trace.nodes["obs"]["value"], data.y)
    assert trace.nodes["theta_raw"]["value"].shape == (8,)
    assert max_plate_nesting(trace) == 1
    x = torch.randn(7, 4)
    trace = trace_program(logistic_regression, x, torch.ones(7), prior_scale=0.1)
    assert trace.nodes["w"]["value"].shape == (4,) and trace.nodes["w"]["fn"].event_dim == 1
    torch.testing.assert_close(trace.nodes["w"]["fn"].base_dist.scale, torch.full((4,), 0.1))
    assert max_plate_nesting(trace) == 1


# --------------------------------------------------------------------------- broadcasting


def test_logistic_regression_broadcasts_over_particles():
    pyro.set_rng_seed(1)
    data = datasets.breast_cancer(dtype=torch.float64)
    x, y = data.x[:30, :4], data.y[:30]
    trace = vectorized_trace(logistic_regression, 5, 1, (x, y))
    trace.compute_log_prob()
    w = trace.nodes["w"]["value"]
    b = trace.nodes["b"]["value"]
    assert w.shape == (5, 1, 4) and b.shape == (5, 1)
    log_lik = trace.nodes["obs"]["log_prob"]
    assert log_lik.shape == (5, 30)
    for s in range(5):
        logits = x @ w[s, 0] + b[s, 0]
        torch.testing.assert_close(log_lik[s], dist.Bernoulli(logits=logits).log_prob(y))


def test_eight_schools_broadcasts_over_particles():
    pyro.set_rng_seed(2)
    data = datasets.eight_schools(dtype=torch.float64)
    trace = vectorized_trace(eight_schools, 6, 1, (data.x, data.y))
    trace.compute_log_prob()
    mu, tau = trace.nodes["mu"]["value"], trace.nodes["tau"]["value"]
    theta_raw = trace.nodes["theta_raw"]["value"]
    assert mu.shape == (6, 1) and tau.shape == (6, 1) and theta_raw.shape == (6, 8)
    assert trace.nodes["obs"]["log_prob"].shape == (6, 8)
    expected = dist.Normal(mu + tau * theta_raw, data.x).log_prob(data.y)
    torch.testing.assert_close(trace.nodes["obs"]["log_prob"], expected)
    # Simulating inside the particle plate gives one data set per particle.
    simulated = vectorized_trace(eight_schools, 6, 1, (data.x,)).nodes["obs"]["value"]
    assert simulated.shape == (6, 8)


# --------------------------------------------------------------------------- subsampling


def test_logistic_regression_subsample():
    pyro.set_rng_seed(3)
    data = datasets.breast_cancer(dtype=torch.float64)
    x, y = data.x[:50, :3], data.y[:50]
    trace = poutine.trace(logistic_regression).get_trace(x, y, subsample_size=10)
    idx = trace.nodes["data"]["value"]
    assert idx.shape == (10,) and idx.unique().numel() == 10 and int(idx.max()) < 50
    obs = trace.nodes["obs"]
    assert obs["value"].shape == (10,) and torch.equal(obs["value"], y[idx])
    assert obs["scale"] == pytest.approx(5.0)  # N / B: an unbiased likelihood estimate
    assert trace.nodes["_RETURN"]["value"].shape == (10,)
    w, b = trace.nodes["w"]["value"], trace.nodes["b"]["value"]
    trace.compute_log_prob()
    expected = 5.0 * dist.Bernoulli(logits=x[idx] @ w + b).log_prob(y[idx]).sum()
    torch.testing.assert_close(obs["log_prob_sum"], expected)


def test_logistic_regression_subsample_broadcasts_over_particles():
    pyro.set_rng_seed(4)
    data = datasets.breast_cancer(dtype=torch.float64)
    x, y = data.x[:50, :3], data.y[:50]
    trace = vectorized_trace(logistic_regression, 4, 1, (x, y), {"subsample_size": 8})
    trace.compute_log_prob()
    assert trace.nodes["obs"]["log_prob"].shape == (4, 8)
    assert trace.nodes["obs"]["value"].shape == (8,)


def test_logistic_regression_num_data_rescales_a_given_minibatch():
    x, y = torch.randn(10, 3), torch.ones(10)
    trace = poutine.trace(logistic_regression).get_trace(x, y, num_data=100)
    assert trace.nodes["obs"]["scale"] == 10.0
    assert trace.nodes["obs"]["value"].shape == (10,)
    with pytest.raises(ValueError, match="either subsample_size .* or num_data"):
        logistic_regression(x, y, subsample_size=5, num_data=100)
