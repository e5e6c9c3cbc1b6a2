"""Tests of the ArviZ conversion: ``Result.to_arviz`` and ``to_inference_data``."""

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pplx
from pplx.inference import Result, to_inference_data

ARVIZ_0 = hasattr(az, "InferenceData")


def _groups(data):
    """Group names of an InferenceData (ArviZ 0.x) or a DataTree (ArviZ 1.x)."""
    if ARVIZ_0:
        return set(data.groups())
    return set(data.children)


def _group(data, name):
    return data[name] if ARVIZ_0 else data[name].to_dataset()


def _normal_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


def _full_result(dtype=torch.float32):
    torch.manual_seed(0)
    return Result(
        "eng",
        {"a": torch.randn(2, 5, 3, 4).to(dtype), "b": torch.randn(2, 5).to(dtype)},
        sample_stats={"lp": torch.randn(2, 5), "diverging": torch.rand(2, 5) > 0.5},
        log_likelihood={"obs": torch.randn(2, 5, 6)},
        posterior_predictive={"obs": torch.randn(2, 5, 6)},
        observed_data={"obs": torch.randn(6)},
        wall_time=2.5,
        info={"steps": 7, "lr": 0.1, "kind": "x", "flag": True, "not_scalar": [1, 2]},
    )


# --------------------------------------------------------------------------- groups and dims


def test_only_non_empty_groups_are_present():
    only_posterior = Result("eng", {"a": torch.randn(2, 5)}).to_arviz()
    assert _groups(only_posterior) == {"posterior"}

    with_stats = Result(
        "eng", {"a": torch.randn(2, 5)}, sample_stats={"lp": torch.randn(2, 5)}
    ).to_arviz()
    assert _groups(with_stats) == {"posterior", "sample_stats"}

    full = _full_result().to_arviz()
    assert _groups(full) == {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
    }

    direct = to_inference_data(
        {"a": torch.randn(1, 3)}, sample_stats={}, log_likelihood=None, observed_data={}
    )
    assert _groups(direct) == {"posterior"}


def test_default_dim_names_and_values():
    result = _full_result()
    data = result.to_arviz()
    posterior = _group(data, "posterior")
    assert posterior["a"].dims == ("chain", "draw", "a_dim_0", "a_dim_1")
    assert posterior["b"].dims == ("chain", "draw")
    np.testing.assert_array_equal(posterior["a"].values, result.samples["a"].numpy())
    np.testing.assert_array_equal(posterior["b"].values, result.samples["b"].numpy())

    stats = _group(data, "sample_stats")
    assert stats["lp"].dims == ("chain", "draw")
    np.testing.assert_array_equal(stats["diverging"].values, result.sample_stats["diverging"])
    assert stats["diverging"].dtype == np.bool_

    log_lik = _group(data, "log_likelihood")
    assert log_lik["obs"].dims == ("chain", "draw", "obs_dim_0")
    np.testing.assert_array_equal(log_lik["obs"].values, result.log_likelihood["obs"].numpy())
    predictive = _group(data, "posterior_predictive")
    assert predictive["obs"].dims == ("chain", "draw", "obs_dim_0")
    np.testing.assert_array_equal(
        predictive["obs"].values, result.posterior_predictive["obs"].numpy()
    )

    # Observed data carry no chain/draw dimensions.
    observed = _group(data, "observed_data")
    assert observed["obs"].dims == ("obs_dim_0",)
    assert "chain" not in observed.dims and "draw" not in observed.dims
    np.testing.assert_array_equal(observed["obs"].values, result.observed_data["obs"].numpy())


def test_custom_dims_and_coords():
    result = _full_result()
    data = result.to_arviz(
        dims={"a": ["row", "col"], "obs": ["unit"]},
        coords={"row": ["r0", "r1", "r2"], "unit": np.arange(10, 16), "unused": [1, 2]},
    )
    posterior = _group(data, "posterior")
    assert posterior["a"].dims == ("chain", "draw", "row", "col")
    assert list(posterior["row"].values) == ["r0", "r1", "r2"]
    assert "col" not in posterior.coords  # named, but no coordinate values given
    assert "unused" not in posterior.coords
    for group in ("log_likelihood", "posterior_predictive"):
        dataset = _group(data, group)
        assert dataset["obs"].dims == ("chain", "draw", "unit")
        assert list(dataset["unit"].values) == list(range(10, 16))
    observed = _group(data, "observed_data")
    assert observed["obs"].dims == ("unit",)
    assert list(observed["unit"].values) == list(range(10, 16))
    # Selecting by coordinate works.
    np.testing.assert_array_equal(
        posterior["a"].sel(row="r1").values, result.samples["a"][:, :, 1].numpy()
    )


def test_partial_dims_fall_back_to_default_names():
    data = Result("eng", {"a": torch.randn(1, 4, 2, 3)}).to_arviz(dims={"a": ["first"]})
    assert _group(data, "posterior")["a"].dims == ("chain", "draw", "first", "a_dim_1")


def test_attributes():
    data = _full_result().to_arviz()
    attrs = _group(data, "posterior").attrs
    assert attrs["engine"] == "eng"
    assert attrs["inference_library"] == "pplx"
    assert attrs["inference_library_version"] == pplx.__version__
    assert float(attrs["wall_time_s"]) == 2.5
    assert attrs["steps"] == "7" and attrs["kind"] == "x" and float(attrs["lr"]) == 0.1
    assert "not_scalar" not in attrs  # only scalar info is recorded
    assert "created_at" in attrs


def test_to_inference_data_refuses_missing_leading_dims():
    with pytest.raises(ValueError, match="'a'.*leading dimensions"):
        to_inference_data({"a": torch.randn(5)})


def test_tensors_that_require_grad_and_bfloat16():
    a = torch.randn(1, 4, requires_grad=True)
    b = torch.randn(1, 4).to(torch.bfloat16)
    posterior = _group(to_inference_data({"a": a * 2, "b": b}), "posterior")
    np.testing.assert_allclose(posterior["a"].values, (a * 2).detach().numpy())
    assert posterior["b"].dtype == np.float32
    np.testing.assert_array_equal(posterior["b"].values, b.float().numpy())


# --------------------------------------------------------------------------- dtypes and netCDF


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_dtypes_are_kept(dtype):
    torch.manual_seed(1)
    values = torch.randn(2, 6, 3)
    values = values > 0 if dtype == torch.bool else values.to(dtype)
    data = Result("eng", {"a": values}).to_arviz()
    array = _group(data, "posterior")["a"]
    assert array.dtype == values.numpy().dtype
    np.testing.assert_array_equal(array.values, values.numpy())


@pytest.mark.skipif(not ARVIZ_0, reason="netCDF via InferenceData.to_netcdf (ArviZ 0.x)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_netcdf_round_trip(tmp_path, dtype):
    result = _full_result(dtype)
    result.samples["flag"] = torch.rand(2, 5) > 0.3
    data = result.to_arviz(dims={"a": ["row", "col"]}, coords={"row": ["x", "y", "z"]})
    path = tmp_path / "result.nc"
    data.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(data.groups())
    for group in data.groups():
        original, loaded = data[group], back[group]
        assert set(loaded.data_vars) == set(original.data_vars)
        for name in original.data_vars:
            assert loaded[name].dims == original[name].dims
            assert loaded[name].dtype == original[name].dtype, (group, name)
            np.testing.assert_array_equal(loaded[name].values, original[name].values)
    assert list(back.posterior["row"].values) == ["x", "y", "z"]
    assert back.posterior.attrs["engine"] == "eng"
    assert back.sample_stats["diverging"].dtype == np.bool_


# --------------------------------------------------------------------------- ArviZ functions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_arviz_ess_and_summary(dtype):
    torch.manual_seed(2)
    result = Result("eng", {"a": torch.randn(4, 250, 2).to(dtype), "b": torch.randn(4, 250)})
    data = result.to_arviz()
    ess = az.ess(data)
    # iid draws: bulk ESS ~ 1000 draws; ArviZ's rank-normalised estimate has a relative
    # spread of a few percent for 1000 iid draws, so +-25% is a loose (> 4 sd) band.
    for value in [*ess["a"].values, float(ess["b"])]:
        assert abs(value / 1000 - 1) < 0.25
    table = az.summary(data)
    assert list(table.index) == ["a[0]", "a[1]", "b"]
    flat = result.get_samples()["a"].double()
    np.testing.assert_allclose(table["mean"].to_numpy()[:2], flat.mean(0).numpy(), atol=1e-3)
    assert (table["r_hat"] < 1.02).all()


def test_arviz_loo_on_conjugate_normal_model():
    """PSIS-LOO from ``to_arviz()`` matches exact leave-one-out for a conjugate model."""
    pyro.set_rng_seed(3)
    n = 20
    y = torch.randn(n, dtype=torch.float64) + 0.5
    # Exact posterior N(m, v) for mu ~ N(0, 1), y_i ~ N(mu, 1); draws iid from it.
    v = 1 / (1 + n)
    m = y.sum() * v
    chains, draws = 4, 500
    mu = m + math.sqrt(v) * torch.randn(chains, draws, dtype=torch.float64)
    result = Result("exact", {"mu": mu}).add_log_likelihood(_normal_model, y)
    assert result.log_likelihood["obs"].dtype == torch.float64
    loo = az.loo(result.to_arviz())
    assert math.isfinite(loo.elpd_loo) and math.isfinite(loo.p_loo)
    assert (np.asarray(loo.pareto_k) < 0.7).all()

    # Exact LOO predictive: y_i | y_-i ~ N(m_-i, 1 + v_-i) with v_-i = 1/n, m_-i = sum_-i / n.
    m_loo = (y.sum() - y) / n
    exact = float(dist.Normal(m_loo, math.sqrt(1 + 1 / n)).log_prob(y).sum())
    # Monte Carlo error of the importance-sampling estimate log 1/mean_s(1/p(y_i|mu_s)): by the
    # delta method, sd(1/p_i)/(sqrt(S) mean(1/p_i)) per point; summing these over i bounds the
    # standard error of the total. Allow 4 of them (plus a little for Pareto smoothing).
    inv_lik = torch.exp(-result.log_likelihood["obs"].reshape(chains * draws, n))
    se = (inv_lik.std(0) / (math.sqrt(chains * draws) * inv_lik.mean(0))).sum()
    assert abs(loo.elpd_loo - exact) < 4 * float(se) + 0.02


def test_arviz_1_gets_a_datatree(monkeypatch, tmp_path):
    # ArviZ 1.x (Python 3.12+) works on xarray.DataTree; exercise that path here too.
    import xarray as xr

    from pplx.inference import arviz_io

    monkeypatch.setattr(arviz_io, "arviz_major_version", lambda: 1)
    tree = arviz_io.to_inference_data(
        {"mu": torch.zeros(2, 5)},
        log_likelihood={"obs": torch.zeros(2, 5, 3)},
        observed_data={"obs": torch.ones(3)},
    )
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) == {"posterior", "log_likelihood", "observed_data"}
    assert tree["posterior"]["mu"].dims == ("chain", "draw")
    tree.to_netcdf(tmp_path / "tree.nc")
    assert set(xr.open_datatree(tmp_path / "tree.nc").children) == set(tree.children)
