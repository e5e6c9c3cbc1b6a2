"""Bayesian logistic regression on the breast-cancer data with pplx's SVI engine.

Shows the spine every pplx engine shares: a plain Pyro model and autoguide, a fit with early
stopping and a checkpoint that a re-run resumes from, a Result with Pyro-style samples, ArviZ
output with log-likelihood and posterior predictive groups, and PSIS-LOO from ArviZ.

    python examples/svi_logistic.py            # full run
    python examples/svi_logistic.py --quick    # a few seconds
"""

import argparse
from pathlib import Path

import arviz as az
import pyro
import torch
from pyro.infer.autoguide import AutoMultivariateNormal

from pplx.datasets import breast_cancer
from pplx.inference import SVI, EarlyStopping
from pplx.models import logistic_regression


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    parser.add_argument("--out", default="svi-logistic-out", help="folder for outputs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pyro.set_rng_seed(args.seed)
    data = breast_cancer(dtype=torch.float64)
    svi = SVI(
        logistic_regression,
        AutoMultivariateNormal(logistic_regression, init_scale=0.1),
        loss=pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True),
        optim_args={"lr": 0.05},
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.999),
        early_stopping=EarlyStopping(patience=200, rtol=1e-4),
        checkpoint=out / "fit.ckpt",
        checkpoint_every=100,
    )
    # resume=True continues from fit.ckpt if an earlier run was interrupted.
    result = svi.run(
        data.x, data.y, num_steps=300 if args.quick else 5000, num_samples=500, resume=True
    )
    print(
        f"{result.info['num_steps']} steps in {result.wall_time:.1f} s, final loss "
        f"{result.info['final_loss']:.2f}, stopped early: {result.info['stopped_early']}"
    )
    print(
        f"importance-weighted ESS of {result.num_draws} guide draws: {result.importance_ess():.0f}"
    )
    print(result.summary().head(6).round(3))

    result.add_log_likelihood(logistic_regression, data.x, data.y)
    result.add_posterior_predictive(logistic_regression, data.x, data.y)
    predicted = result.posterior_predictive["obs"].double().mean((0, 1))
    accuracy = ((predicted > 0.5).double() == data.y).double().mean()
    print(f"posterior predictive accuracy on the training data: {accuracy:.3f}")

    idata = result.to_arviz(dims={"obs": ["patient"], "w": ["feature"]})
    print(az.loo(idata))
    idata.to_netcdf(str(out / "svi_logistic.nc"))
    print(f"wrote {out / 'svi_logistic.nc'}")


if __name__ == "__main__":
    main()
