"""Tests of :class:`pplx.inference.Result`: construction, draws, summaries, diagnostics, I/O."""

import math

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from pplx.inference import Result


def _normal_model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)


# --------------------------------------------------------------------------- construction


def test_requires_at_least_one_site():
    with pytest.raises(ValueError, match="at least one latent site"):
        Result("eng", {})


@pytest.mark.parametrize("shape", [(), (5,)])
def test_draws_without_chain_and_draw_dims_are_refused(shape):
    with pytest.raises(ValueError, match=r"\(chains, draws, \.\.\.\)"):
        Result("eng", {"a": torch.zeros(shape)})


def test_site_with_other_leading_dims_is_refused_by_name():
    with pytest.raises(ValueError, match="'b'.*expected leading dimensions"):
        Result("eng", {"a": torch.zeros(2, 5), "b": torch.zeros(2, 4)})


@pytest.mark.parametrize("bad_shape", [(2,), (5, 2), (2, 4), (1, 5)])
def test_sample_stats_with_wrong_leading_dims_are_refused_by_name(bad_shape):
    with pytest.raises(ValueError, match=r"sample stat 'lp'.*\(2, 5\)"):
        Result("eng", {"a": torch.zeros(2, 5, 3)}, sample_stats={"lp": torch.zeros(bad_shape)})


def test_log_likelihood_and_predictive_with_wrong_leading_dims_are_refused_by_name():
    with pytest.raises(ValueError, match="log-likelihood of 'obs'"):
        Result("eng", {"a": torch.zeros(2, 5)}, log_likelihood={"obs": torch.zeros(10, 3)})
    with pytest.raises(ValueError, match="posterior predictive of 'obs'"):
        Result("eng", {"a": torch.zeros(2, 5)}, posterior_predictive={"obs": torch.zeros(5, 3)})


def test_from_draws_adds_one_chain():
    draws = {"a": torch.randn(7, 3), "b": torch.randn(7)}
    result = Result.from_draws(
        "svi", draws, sample_stats={"log_weight": torch.randn(7)}, info={"steps": 3}
    )
    assert result.engine == "svi"
    assert result.num_chains == 1 and result.num_draws == 7
    assert result.samples["a"].shape == (1, 7, 3)
    assert result.sample_stats["log_weight"].shape == (1, 7)
    assert torch.equal(result.samples["a"][0], draws["a"])
    assert result.info == {"steps": 3}


def test_from_draws_checks_sample_stats():
    with pytest.raises(ValueError, match="sample stat 'lp'"):
        Result.from_draws("svi", {"a": torch.randn(7)}, sample_stats={"lp": torch.randn(6)})


# --------------------------------------------------------------------------- draws


def test_num_chains_num_draws_and_get_samples():
    a = torch.randn(3, 4, 2, 5)
    b = torch.randn(3, 4)
    result = Result("eng", {"a": a, "b": b})
    assert (result.num_chains, result.num_draws) == (3, 4)

    grouped = result.get_samples(group_by_chain=True)
    assert grouped["a"].shape == (3, 4, 2, 5) and grouped["b"].shape == (3, 4)
    assert torch.equal(grouped["a"], a)

    flat = result.get_samples()
    assert flat["a"].shape == (12, 2, 5) and flat["b"].shape == (12,)
    # Chains are concatenated in order: chain 0's draws, then chain 1's, ...
    assert torch.equal(flat["a"], torch.cat([a[0], a[1], a[2]]))
    assert torch.equal(flat["b"], torch.cat([b[0], b[1], b[2]]))
    assert torch.equal(result.get_samples(group_by_chain=False)["b"], flat["b"])


# --------------------------------------------------------------------------- summary


def test_summary_values_on_known_draws():
    torch.manual_seed(0)
    a = torch.randn(2, 50, 2, dtype=torch.float64) * torch.tensor([1.0, 3.0]) + 2.0
    b = torch.randn(2, 50, dtype=torch.float64)
    result = Result("eng", {"a": a, "b": b})
    table = result.summary()

    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["a[0]", "a[1]", "b"]
    assert list(table.columns) == ["mean", "std", "median", "5%", "95%", "n_eff", "r_hat"]

    flat_a = a.reshape(100, 2)
    for j in range(2):
        row = table.loc[f"a[{j}]"]
        column = flat_a[:, j]
        assert row["mean"] == pytest.approx(float(column.mean()), rel=1e-12)
        assert row["std"] == pytest.approx(float(column.std()), rel=1e-12)
        assert row["median"] == pytest.approx(float(column.median()), rel=1e-12)
        # Linear interpolation between order statistics, as numpy's default quantile.
        assert row["5%"] == pytest.approx(float(np.quantile(column.numpy(), 0.05)), rel=1e-9)
        assert row["95%"] == pytest.approx(float(np.quantile(column.numpy(), 0.95)), rel=1e-9)
        ess = effective_sample_size(a[..., j], chain_dim=0, sample_dim=1)
        rhat = split_gelman_rubin(a[..., j], chain_dim=0, sample_dim=1)
        assert row["n_eff"] == pytest.approx(float(ess), rel=1e-9)
        assert row["r_hat"] == pytest.approx(float(rhat), rel=1e-9)
    assert table.loc["b", "mean"] == pytest.approx(float(b.mean()), rel=1e-12)
    assert table.loc["b", "std"] == pytest.approx(float(b.reshape(-1).std()), rel=1e-12)


def test_summary_labels_for_matrix_sites_and_other_prob():
    a = torch.arange(2 * 5 * 2 * 3, dtype=torch.float32).reshape(2, 5, 2, 3)
    table = Result("eng", {"a": a}).summary(prob=0.5)
    assert list(table.index) == ["a[0,0]", "a[0,1]", "a[0,2]", "a[1,0]", "a[1,1]", "a[1,2]"]
    assert "25%" in table.columns and "75%" in table.columns
    flat = a.reshape(10, 6).double()
    assert np.allclose(table["mean"].to_numpy(), flat.mean(0).numpy())


def test_summary_with_few_draws_has_nan_diagnostics():
    table = Result("eng", {"a": torch.randn(2, 3)}).summary()
    assert math.isnan(table.loc["a", "n_eff"]) and math.isnan(table.loc["a", "r_hat"])
    single = Result("eng", {"a": torch.randn(1, 1)}).summary()
    assert single.loc["a", "std"] == 0.0


def test_summary_of_bool_draws():
    flags = torch.zeros(1, 10, dtype=torch.bool)
    flags[0, :3] = True
    table = Result("eng", {"flag": flags}).summary()
    assert table.loc["flag", "mean"] == pytest.approx(0.3)


def test_print_summary_reports_divergences(capsys):
    diverging = torch.zeros(2, 6, dtype=torch.bool)
    diverging[0, 1] = diverging[1, 4] = diverging[1, 5] = True
    result = Result("eng", {"a": torch.randn(2, 6)}, sample_stats={"diverging": diverging})
    result.print_summary()
    out = capsys.readouterr().out
    assert "mean" in out and "r_hat" in out
    assert "Number of divergences: 3" in out

    Result("eng", {"a": torch.randn(2, 6)}).print_summary()
    assert "divergences" not in capsys.readouterr().out


# --------------------------------------------------------------------------- diagnostics


def test_effective_sample_size_of_iid_draws():
    torch.manual_seed(1)
    chains, draws = 4, 1000
    result = Result("eng", {"a": torch.randn(chains, draws, 3), "b": torch.randn(chains, draws)})
    ess = result.effective_sample_size()
    assert ess["a"].shape == (3,) and ess["b"].shape == ()
    # For iid draws the autocorrelation estimates rho_k are ~N(0, 1/S) with S = 4000, and
    # Geyer's initial monotone sequence keeps K of them (K <= ~4 here) with weight 2, so the
    # estimated ESS / S = 1 / (1 + 2 sum rho_k) has a relative standard deviation of about
    # 2 sqrt(K / S) ~ 0.06. A tolerance of 0.25 is about 4 such standard deviations.
    total = chains * draws
    for value in [*ess["a"], ess["b"]]:
        assert abs(float(value) / total - 1) < 0.25


def test_effective_sample_size_of_a_sticky_chain_is_small():
    # A chain that repeats each iid value 10 times is worth about a tenth of its length.
    torch.manual_seed(2)
    base = torch.randn(2, 200)
    sticky = base.repeat_interleave(10, dim=1)
    ess = float(Result("eng", {"a": sticky}).effective_sample_size()["a"])
    assert ess < 0.2 * sticky.numel()


def test_importance_ess():
    assert Result("eng", {"a": torch.randn(1, 5)}).importance_ess() is None
    equal = Result(
        "eng", {"a": torch.randn(2, 50)}, sample_stats={"log_weight": torch.zeros(2, 50)}
    )
    assert equal.importance_ess() == pytest.approx(100.0)
    shifted = Result(
        "eng", {"a": torch.randn(2, 50)}, sample_stats={"log_weight": torch.full((2, 50), -700.0)}
    )
    assert shifted.importance_ess() == pytest.approx(100.0)  # invariant to a constant shift
    log_w = torch.full((2, 50), -1000.0)
    log_w[1, 7] = 0.0
    dominated = Result("eng", {"a": torch.randn(2, 50)}, sample_stats={"log_weight": log_w})
    assert dominated.importance_ess() == pytest.approx(1.0)
    # Two equal weights and the rest negligible: Kish ESS 2.
    log_w[0, 3] = 0.0
    assert Result(
        "e", {"a": torch.randn(2, 50)}, sample_stats={"log_weight": log_w}
    ).importance_ess() == (pytest.approx(2.0))


# --------------------------------------------------------------------------- I/O


def test_save_load_round_trip(tmp_path):
    result = Result(
        "eng",
        {"a": torch.randn(2, 5, 3), "b": torch.randn(2, 5, dtype=torch.float64)},
        sample_stats={"diverging": torch.rand(2, 5) > 0.5, "lp": torch.randn(2, 5)},
        log_likelihood={"obs": torch.randn(2, 5, 4)},
        posterior_predictive={"obs": torch.randn(2, 5, 4)},
        observed_data={"obs": torch.randn(4)},
        trace={"loss": torch.randn(10)},
        wall_time=1.5,
        info={"steps": 10, "name": "x"},
        state={"not": "saved"},
    )
    path = tmp_path / "result.pt"
    result.save(path)
    loaded = Result.load(str(path))
    assert loaded.engine == "eng"
    assert loaded.wall_time == 1.5
    assert loaded.info == {"steps": 10, "name": "x"}
    assert loaded.state is None  # the engine state is not saved
    for group in ("samples", "sample_stats", "log_likelihood", "posterior_predictive"):
        original, back = getattr(result, group), getattr(loaded, group)
        assert original.keys() == back.keys()
        for key in original:
            assert back[key].dtype == original[key].dtype
            assert torch.equal(back[key], original[key])
    assert torch.equal(loaded.observed_data["obs"], result.observed_data["obs"])
    assert torch.equal(loaded.trace["loss"], result.trace["loss"])


# --------------------------------------------------------------------------- model-based groups


def _multi_chain_normal_result():
    pyro.set_rng_seed(3)
    y = torch.randn(6, dtype=torch.float64)
    result = Result("eng", {"mu": torch.randn(3, 4, dtype=torch.float64)})
    return result, y


def test_add_log_likelihood_shapes_and_lp():
    result, y = _multi_chain_normal_result()
    out = result.add_log_likelihood(_normal_model, y)
    assert out is result
    assert result.log_likelihood["obs"].shape == (3, 4, 6)
    assert result.sample_stats["lp"].shape == (3, 4)
    assert torch.equal(result.observed_data["obs"], y)
    mu = result.samples["mu"]
    expected_ll = dist.Normal(mu.unsqueeze(-1), 1.0).log_prob(y)
    assert torch.allclose(result.log_likelihood["obs"], expected_ll, atol=1e-12)
    expected_lp = dist.Normal(0.0, 1.0).log_prob(mu) + expected_ll.sum(-1)
    assert torch.allclose(result.sample_stats["lp"], expected_lp, atol=1e-12)


def test_add_log_likelihood_keeps_engine_lp():
    result, y = _multi_chain_normal_result()
    engine_lp = torch.full((3, 4), 7.0)
    result.sample_stats["lp"] = engine_lp
    result.add_log_likelihood(_normal_model, y)
    assert torch.equal(result.sample_stats["lp"], engine_lp)


def test_add_posterior_predictive_shapes():
    result, y = _multi_chain_normal_result()
    out = result.add_posterior_predictive(_normal_model, y)
    assert out is result
    assert result.posterior_predictive["obs"].shape == (3, 4, 6)
    assert torch.equal(result.observed_data["obs"], y)
    # Each chain/draw's replicates are centred on that draw's mu (and not on another draw's):
    # the residuals are N(0, 1), so none should be beyond ~5 (72 values).
    residual = result.posterior_predictive["obs"] - result.samples["mu"].unsqueeze(-1)
    assert residual.abs().max() < 5


def test_model_groups_convert_to_arviz():
    result, y = _multi_chain_normal_result()
    result.add_log_likelihood(_normal_model, y).add_posterior_predictive(_normal_model, y)
    idata = result.to_arviz()
    for group in ("posterior", "log_likelihood", "posterior_predictive", "observed_data"):
        assert group in idata.groups()
    assert idata.log_likelihood["obs"].shape == (3, 4, 6)


# --------------------------------------------------------------------------- from_guide


def _posterior_guide(y, loc_shift=0.0):
    def guide(y):
        v = 1 / (1 + y.shape[0])
        pyro.sample("mu", dist.Normal(y.sum() * v + loc_shift, math.sqrt(v)))

    return guide


def test_from_guide_with_exact_posterior_guide():
    pyro.set_rng_seed(4)
    y = torch.randn(8, dtype=torch.float64)
    result = Result.from_guide("svi", _normal_model, _posterior_guide(y), y, num_samples=300)
    assert (result.num_chains, result.num_draws) == (1, 300)
    assert result.samples["mu"].shape == (1, 300)
    assert result.sample_stats["lp"].shape == (1, 300)
    assert result.sample_stats["log_weight"].shape == (1, 300)
    mu = result.samples["mu"][0]
    expected_lp = dist.Normal(0.0, 1.0).log_prob(mu) + dist.Normal(mu[:, None], 1.0).log_prob(
        y
    ).sum(-1)
    torch.testing.assert_close(result.sample_stats["lp"][0].detach(), expected_lp)
    # log p(y, mu) - log q(mu) = log p(y) for the exact posterior: constant weights.
    log_w = result.sample_stats["log_weight"].detach()
    assert float(log_w.max() - log_w.min()) < 1e-9
    assert result.importance_ess() == pytest.approx(300.0)


def test_from_guide_with_shifted_guide_has_lower_importance_ess():
    pyro.set_rng_seed(5)
    y = torch.randn(8, dtype=torch.float64)
    guide = _posterior_guide(y, loc_shift=0.5)  # 1.5 posterior sds off
    result = Result.from_guide("svi", _normal_model, guide, y, num_samples=300)
    # For a Gaussian proposal shifted by d posterior sds, the Kish ESS / S tends to exp(-d^2),
    # about 0.1 here; the estimate from 300 heavy-tailed weights is noisy, so only < 0.5.
    assert 1.0 <= result.importance_ess() < 0.5 * 300
