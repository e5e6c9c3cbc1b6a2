"""Fractional Ornstein-Uhlenbeck bridge: variational posterior bands against exact conditioning.

The prior is dX = -theta X dt + dB^H (theta = 1, T = 2) with B^H the Markov approximation of
fractional Brownian motion (K Ornstein-Uhlenbeck processes, Daems et al., ICLR 2024), X(0) ~
N(0, 0.1^2), and the endpoint is observed, y = X(T) + N(0, 0.1^2) with y = 1.5. For each Hurst
index the controlled-posterior guide of pplx.processes.FractionalSDE is fitted with the ELBO
(path KL = Girsanov term, plus the cost of the learned per-step increment scales) with Adam at
lr 0.05; because the drift is linear, the Euler-discretised prior is a linear
Gaussian model, and its exact posterior (pplx.processes.euler_linear_moments plus
gaussian_condition) is the reference. The plot shows posterior mean +- 2 sd of both; the table
the posterior standard deviation at mid-time and at T.

    python examples/fou_bridge.py [--quick] [--out DIR]
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pplx.objectives import ELBO  # noqa: E402
from pplx.processes import FractionalSDE, euler_linear_moments, gaussian_condition  # noqa: E402

THETA, HORIZON, OBS, NOISE, X0_SCALE = 1.0, 2.0, 1.5, 0.1, 0.1


def fit(hurst, num_steps, num_processes, gamma_max, iters, particles, lr):
    """Fit the guide for one Hurst index; return (times, fitted paths, exact mean, exact cov)."""
    pyro.clear_param_store()
    sde = FractionalSDE(
        lambda x, t: -THETA * x,
        1.0,
        horizon=HORIZON,
        num_steps=num_steps,
        hurst=hurst,
        learn_hurst=False,
        num_processes=num_processes,
        gamma_max=gamma_max,
        kind="II",
        x0_scale=X0_SCALE,
        obs_scale=NOISE,
        hidden_dim=32,
    )
    obs_t, obs_y = torch.tensor([HORIZON]), torch.tensor([OBS])
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.3 ** (1 / iters)})
    svi = pyro.infer.SVI(sde.model, sde.guide, optim, ELBO(particles, stl=True))
    for _ in range(iters):
        svi.step(obs_t, obs_y)
    paths = sde.sample(2000).x[..., 0].double()
    mean, cov = euler_linear_moments(
        THETA, 1.0, sde.weights(), sde.gammas, sde.dt, num_steps, 0.0, X0_SCALE, "II"
    )
    post_mean, post_cov = gaussian_condition(mean, cov, num_steps, OBS, NOISE)
    return sde.times.double(), paths, post_mean, post_cov


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a coarse grid and a short fit")
    parser.add_argument("--out", default=".", help="folder for the plot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    pyro.set_rng_seed(args.seed)
    if args.quick:
        hursts, steps, k, gmax, iters, particles, lr = [0.3, 0.5, 0.7], 10, 2, 2.0, 25, 16, 0.05
    else:
        hursts, steps, k, gmax, iters, particles, lr = (
            [0.1, 0.3, 0.5, 0.7, 0.9],
            100,
            5,
            20.0,
            600,
            64,
            0.05,
        )

    fig, axes = plt.subplots(1, len(hursts), figsize=(3.2 * len(hursts), 3.0), sharey=True)
    print(f"{'H':>4} {'sd(T/2) fit':>12} {'exact':>7} {'sd(T) fit':>10} {'exact':>7} {'s':>5}")
    for ax, hurst in zip(axes, hursts, strict=True):
        start = time.perf_counter()
        times, paths, mean, cov = fit(hurst, steps, k, gmax, iters, particles, lr)
        sd = cov.diagonal().clamp_min(0).sqrt()
        fit_mean, fit_sd = paths.mean(0), paths.std(0)
        mid = steps // 2
        print(
            f"{hurst:4.1f} {float(fit_sd[mid]):12.3f} {float(sd[mid]):7.3f} "
            f"{float(fit_sd[-1]):10.3f} {float(sd[-1]):7.3f} {time.perf_counter() - start:5.1f}"
        )
        t = times.numpy()
        ax.fill_between(t, mean - 2 * sd, mean + 2 * sd, color="C0", alpha=0.25, label="exact")
        ax.plot(t, mean, color="C0")
        lo, hi = fit_mean - 2 * fit_sd, fit_mean + 2 * fit_sd
        ax.plot(t, fit_mean, color="C1", label="variational")
        ax.plot(t, lo, color="C1", ls="--")
        ax.plot(t, hi, color="C1", ls="--")
        ax.plot(t, paths[:3].T.numpy(), color="0.5", lw=0.5)
        ax.scatter([HORIZON], [OBS], color="k", zorder=3)
        ax.set_title(f"H = {hurst}")
        ax.set_xlabel("t")
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "fou_bridge.png", dpi=110)
    print(f"wrote {out / 'fou_bridge.png'}")


if __name__ == "__main__":
    main()
