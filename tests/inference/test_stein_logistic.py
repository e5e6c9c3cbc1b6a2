"""SVGD and SVNG on the breast-cancer logistic regression, against Pyro NUTS."""

import pyro
import pytest
import torch

from pplx.inference import NUTS, SVGD, SVNG
from pplx.inference.workflow import logistic_problem


@pytest.fixture(scope="module")
def reference():
    problem = logistic_problem(torch.device("cpu"), torch.float64)
    pyro.set_rng_seed(0)
    nuts = NUTS(problem.model, progress_bar=False).run(
        *problem.args, num_samples=600, warmup_steps=400
    )
    return problem, nuts


def _flat(result):
    draws = result.get_samples()
    return torch.cat([draws["w"], draws["b"][:, None]], -1)


@pytest.mark.parametrize("engine", [SVGD, SVNG])
def test_posterior_means_match_nuts(reference, engine):
    problem, nuts = reference
    pyro.set_rng_seed(0)
    result = engine(problem.model, num_particles=100, optim_args={"lr": 0.5}).run(
        *problem.args, num_steps=1000
    )
    ref, got = _flat(nuts), _flat(result)
    ref_sd = ref.std(0)
    z = (got.mean(0) - ref.mean(0)).abs() / ref_sd
    # NUTS's own Monte Carlo error is sd / sqrt(ESS) ~ 0.07 sd (ESS ~ 200). SVGD with 100
    # particles in 31 dimensions is biased, not noisy: measured max |z| 0.37 (SVGD) and 0.32
    # (SVNG), RMS 0.15. The bound below is the accuracy claimed in docs/guides/stein.rst.
    assert float(z.max()) < 0.5, z
    assert float(z.square().mean().sqrt()) < 0.25
    # Known variance collapse of SVGD in this dimension: sds are too small but not degenerate.
    ratio = (got.std(0) / ref_sd).mean()
    assert 0.3 < float(ratio) < 1.05
