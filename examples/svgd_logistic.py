"""Bayesian logistic regression on the breast-cancer data: SVGD vs SVNG vs NUTS.

Fits the model with Pyro NUTS (the reference), SVGD and the Stein variational natural gradient
(SVGD with an averaged-Fisher preconditioned kernel), then prints how far each particle
approximation's posterior means and standard deviations are from NUTS, in units of the NUTS
posterior sd, and the held-out accuracy of each posterior's predictive mean.

    python examples/svgd_logistic.py [--quick]
"""

import argparse

import pyro
import torch

from pplx.datasets import breast_cancer
from pplx.inference import NUTS, SVGD, SVNG
from pplx.models import logistic_regression


def accuracy(result, x, y):
    """Accuracy of the posterior predictive mean probability."""
    draws = result.get_samples()
    logits = draws["w"] @ x.T + draws["b"].unsqueeze(-1)
    return float(((torch.sigmoid(logits).mean(0) > 0.5).to(y) == y).double().mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = breast_cancer(dtype=torch.float64)
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(data.y), generator=generator)
    train, test = order[:450], order[450:]
    x, y = data.x[train], data.y[train]

    pyro.set_rng_seed(args.seed)
    samples = 200 if args.quick else 1000
    reference = NUTS(logistic_regression).run(x, y, num_samples=samples, warmup_steps=samples)
    ref = torch.cat([reference.get_samples()["w"], reference.get_samples()["b"][:, None]], -1)
    header = ("engine", "mean err (max z)", "sd ratio (mean)", "test acc", "time")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 17, 16, 9, 7))))
    for engine in (SVGD, SVNG):
        pyro.set_rng_seed(args.seed)
        sampler = engine(logistic_regression, num_particles=100, optim_args={"lr": 0.5})
        result = sampler.run(x, y, num_steps=200 if args.quick else 1000)
        draws = result.get_samples()
        got = torch.cat([draws["w"], draws["b"][:, None]], -1)
        z = ((got.mean(0) - ref.mean(0)) / ref.std(0)).abs().max()
        ratio = (got.std(0) / ref.std(0)).mean()
        acc = accuracy(result, data.x[test], data.y[test])
        print(f"{engine.__name__:>6} {z:17.3f} {ratio:16.3f} {acc:9.3f} {result.wall_time:6.1f}s")
    acc = accuracy(reference, data.x[test], data.y[test])
    print(f"{'NUTS':>6} {0:17.3f} {1:16.3f} {acc:9.3f} {reference.wall_time:6.1f}s")


if __name__ == "__main__":
    main()
