"""Federated SGLD on non-IID shards: FSGLD (conducive gradients) vs DSGLD vs the exact posterior.

The experiment of El Mekkaoui et al. (UAI 2021): the mean of a 2-D Gaussian with known
covariance and a Gaussian prior, with the data split so that each shard (client) holds a
different cluster. Each round, every chain picks a shard and takes several local steps there.
Plain distributed SGLD drifts toward the visited shard's own posterior and spreads far wider
than the posterior; FSGLD's conducive gradients (Laplace approximations of every shard's
likelihood, computed once) remove the drift. Prints both against the closed-form posterior and
writes ``federated_sgld.png``.

Single process (the shards are simulated in turn)::

    python examples/federated_sgld.py [--quick] [--out DIR] [--shards 4]

One process per shard with torch.distributed (gloo), on one machine or several::

    torchrun --nproc-per-node 4 examples/federated_sgld.py [--quick] [--out DIR]

Given the same seed both give the same draws.
"""

import argparse
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

from pplx.inference.federated import DSGLD, FSGLD, init_distributed  # noqa: E402

SIGMA = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=torch.float64)  # known, per data point
PRIOR_SD = 3.0


def model(x):
    """Prior theta ~ N(0, 3^2 I); x_i ~ N(theta, SIGMA) for the rows of a shard or minibatch."""
    theta = pyro.sample("theta", dist.Normal(torch.zeros(2, dtype=x.dtype), PRIOR_SD).to_event(1))
    with pyro.plate("data", x.shape[0]):  # its size comes from the data: FSGLD passes minibatches
        pyro.sample("x", dist.MultivariateNormal(theta, SIGMA), obs=x)


def make_data(num_shards, seed):
    """Non-IID shards: shard s holds 50 + 25 s points around its own centre on a circle."""
    gen = torch.Generator().manual_seed(seed)
    shards = []
    for s in range(num_shards):
        angle = 2 * math.pi * (s + 0.5) / num_shards
        centre = 2.5 * torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
        points = centre + 0.6 * torch.randn(50 + 25 * s, 2, generator=gen, dtype=torch.float64)
        shards.append(points)
    return shards


def exact_posterior(shards):
    """Closed-form posterior (mean, covariance) of theta given every shard."""
    x = torch.cat(shards)
    sigma_inv = torch.linalg.inv(SIGMA)
    precision = torch.eye(2, dtype=torch.float64) / PRIOR_SD**2 + len(x) * sigma_inv
    cov = torch.linalg.inv(precision)
    return cov @ (sigma_inv @ x.sum(0)), cov


def ellipse(mean, cov, level=2.4477):  # 95 % region of a 2-D Gaussian
    angles = torch.linspace(0, 2 * math.pi, 200, dtype=torch.float64)
    circle = torch.stack([angles.cos(), angles.sin()], -1)
    return (mean + level * circle @ torch.linalg.cholesky(cov).T).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (seconds)")
    parser.add_argument("--out", default=".", help="folder for the plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=4, help="shards of the simulation")
    parser.add_argument("--local-steps", type=int, default=20, help="local steps per round")
    parser.add_argument("--batch-size", type=int, default=25, help="minibatch per local step")
    parser.add_argument("--chains", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the tensors are tiny: extra threads only add overhead

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # launched by torchrun
    rank, world = init_distributed() if distributed else (0, 1)
    try:
        num_shards = world if distributed else args.shards
        if num_shards < 2:
            raise SystemExit("federated_sgld: use at least 2 shards (--shards, or torchrun ranks)")
        # Synthetic data: every rank makes all of it and keeps its own shard. In a real
        # deployment each rank would load its own data, and nobody could compute the exact
        # posterior below.
        shards = make_data(num_shards, args.seed)
        mean, cov = exact_posterior(shards)
        chains = args.chains or (32 if args.quick else 64)
        warmup, samples = (300, 300) if args.quick else (1000, 3000)
        # step size: 10 % of the stiffest posterior variance (Welling-Teh convention), which
        # inflates the variance by about 2.5 % (eps * lambda_max / 4)
        step_size = 0.1 * float(torch.linalg.eigvalsh(cov).min())
        data = shards[rank] if distributed else shards
        results = {}
        for engine in (FSGLD, DSGLD):
            pyro.set_rng_seed(args.seed)
            sampler = engine(
                model,
                step_size=step_size,
                local_steps=args.local_steps,
                batch_size=args.batch_size,
                distributed=distributed,
                divergence_threshold=math.inf,  # DSGLD's log-density estimate swings widely
            )
            results[sampler.name] = sampler.run(
                data, num_samples=samples, warmup_steps=warmup, num_chains=chains
            )
        if rank != 0:
            return

        sd = cov.diagonal().sqrt()
        mode = f"{world} torchrun workers (gloo)" if distributed else "one process (simulation)"
        steps = f"{chains} chains, {args.local_steps} local steps per round"
        print(f"{num_shards} non-IID shards, {mode}, {steps}")
        print(f"exact posterior: mean {mean.numpy().round(3)}, sd {sd.numpy().round(4)}")
        print(f"{'engine':>6} {'mean error (sd)':>20} {'var / exact var':>18} {'seconds':>8}")
        for name, result in results.items():
            draws = result.get_samples()["theta"]
            error = ((draws.mean(0) - mean) / sd).numpy().round(2)
            ratio = (draws.var(0) / cov.diagonal()).numpy().round(2)
            print(f"{name:>6} {str(error):>20} {str(ratio):>18} {result.wall_time:8.1f}")

        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
        for s, shard in enumerate(shards):
            axes[0].scatter(shard[:, 0], shard[:, 1], s=6, label=f"shard {s}")
        axes[0].plot(*mean.numpy(), "k*", markersize=12, label="posterior mean")
        axes[0].set_title("data: one cluster per shard")
        axes[0].legend(fontsize=7, loc="center left")
        for ax, name in zip(axes[1:], ("fsgld", "dsgld")):
            draws = results[name].get_samples()["theta"]
            pick = torch.randperm(len(draws), generator=torch.Generator().manual_seed(0))[:3000]
            ax.scatter(draws[pick, 0], draws[pick, 1], s=2, alpha=0.3, label=f"{name} draws")
            ax.plot(*ellipse(mean, cov).T, "k", label="exact 95 %")
            ax.set_title(name.upper())
            ax.legend(fontsize=7)
        axes[1].set_xlim(mean[0] - 5 * sd[0], mean[0] + 5 * sd[0])
        axes[1].set_ylim(mean[1] - 5 * sd[1], mean[1] + 5 * sd[1])
        for ax in axes:
            ax.set_xlabel(r"$\theta_1$")
            ax.set_ylabel(r"$\theta_2$")
        fig.tight_layout()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "federated_sgld.png", dpi=110)
        print(f"wrote {out / 'federated_sgld.png'}")
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
