import pyro
import pyro.distributions as dist
import pytest
import torch

from pplx.inference import Result, stein_discrepancy

D64 = torch.float64
Y = torch.tensor([0.3, -0.2, 1.1, 0.4, 0.9], dtype=D64)


def model(y):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=D64)))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, sigma), obs=y)


def subsampled(y):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0))
    with pyro.plate("data", y.shape[0], subsample_size=2) as idx:
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])


def test_exact_draws_beat_shifted_draws():
    # Exact posterior draws from NUTS vs the same draws shifted by one posterior sd in mu:
    # the discrepancy must rank them. (Its value itself has no closed form to compare with.)
    from pplx.inference import NUTS

    pyro.set_rng_seed(0)
    exact = NUTS(model, jit_compile=False, progress_bar=False).run(
        Y, num_samples=400, warmup_steps=300
    )
    draws = exact.get_samples()
    shifted = Result.from_draws("shifted", {**draws, "mu": draws["mu"] + draws["mu"].std()})
    good = stein_discrepancy(exact, model, Y)
    bad = stein_discrepancy(shifted, model, Y)
    assert good.dim() == 0 and torch.isfinite(good)
    assert float(bad) > 2 * float(good)


def test_thinning_to_max_draws():
    draws = {"mu": torch.randn(300, dtype=D64), "sigma": torch.rand(300, dtype=D64) + 0.5}
    result = Result.from_draws("x", draws)
    thin = stein_discrepancy(result, model, Y, max_draws=50)
    assert torch.isfinite(thin)


def test_errors():
    result = Result.from_draws("x", {"mu": torch.randn(10, dtype=D64)})
    with pytest.raises(ValueError, match=r"no draws of latent site\(s\) \['sigma'\]"):
        stein_discrepancy(result, model, Y)
    with pytest.raises(ValueError, match="subsamples its data"):
        stein_discrepancy(result, subsampled, Y)
