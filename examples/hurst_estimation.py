"""Hurst-index estimation: learn H from exact fBM paths under the Markov approximation.

For each true Hurst index, paths of standard fractional Brownian motion are drawn exactly by
Davies-Harte (pplx.processes.sample_fbm) on a uniform grid of [0, 1]. The model is a Pyro
program with one parameter, ``pyro.param("hurst", constraint=interval(0, 1))``, and the paths
observed under the exact covariance of the type-I Markov approximation
(pplx.processes.ma_fbm_covariance: K Ornstein-Uhlenbeck processes on a geometric speed grid,
weights differentiable in H). With an empty guide the ELBO (pplx.objectives.ELBO) is the
log-likelihood, so maximising it by L-BFGS (pplx.processes.fit_hurst) gives the maximum-likelihood
H. The table compares

* the wide grid (K = 10 speeds on [1e-4, 1e4]),
* the grid of Daems et al. (K = 5 on [0.05, 20]), too slow for lags of 0.01 at small H,
* the exact fBM likelihood (pplx.processes.fbm_covariance), the statistical reference.

    python examples/hurst_estimation.py [--quick] [--out DIR] [--paths 64] [--steps 100]
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pplx.processes import (  # noqa: E402
    fbm_covariance,
    fit_hurst,
    geometric_gammas,
    ma_fbm_covariance,
    sample_fbm,
)

F64 = torch.float64
HORIZON = 1.0
WIDE = dict(num_processes=10, gamma_max=1e4, gamma_min=1e-4)
PAPER = dict(num_processes=5, gamma_max=20.0)  # gamma_min = 1 / gamma_max = 0.05


def timed_fit(paths, covariance):
    """Maximum-likelihood H (pplx.processes.fit_hurst) and the seconds it took."""
    start = time.perf_counter()
    return fit_hurst(paths, covariance), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="H in {0.2, 0.5, 0.8} (< 30 s)")
    parser.add_argument("--paths", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for the plot")
    args = parser.parse_args()
    hursts = [0.2, 0.5, 0.8] if args.quick else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]

    times = torch.linspace(0.0, HORIZON, args.steps + 1, dtype=F64)[1:]  # B(0) = 0: dropped
    grids = {
        "wide K=10": geometric_gammas(**WIDE, dtype=F64),
        "paper K=5": geometric_gammas(**PAPER, dtype=F64),
    }
    print(
        f"{args.paths} exact fBM paths (Davies-Harte) on {args.steps} steps of [0, {HORIZON}]; "
        f"maximum likelihood by L-BFGS on the ELBO with an empty guide"
    )
    header = f"{'true H':>6}  {'exact lik.':>10}"
    for name in grids:
        header += f"  {name + ' H':>13} {'error':>7} {'s':>5}"
    print(header)
    rows = []
    gen = torch.Generator().manual_seed(args.seed)
    for hurst in hursts:
        paths = sample_fbm((HORIZON, args.steps), hurst, args.paths, generator=gen, dtype=F64)
        paths = paths[:, 1:]
        exact, _ = timed_fit(paths, lambda h: fbm_covariance(times, h, kind="I"))
        line = f"{hurst:6.2f}  {exact:10.4f}"
        row = {"true": hurst, "exact": exact, "paths": paths}
        for name, gammas in grids.items():

            def covariance(h, gammas=gammas):
                return ma_fbm_covariance(times, h, gammas, kind="I")

            estimate, seconds = timed_fit(paths, covariance)
            line += f"  {estimate:13.4f} {estimate - hurst:+7.4f} {seconds:5.2f}"
            row[name] = estimate
        print(line, flush=True)
        rows.append(row)

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        fig, (ax_paths, ax_est) = plt.subplots(1, 2, figsize=(11, 4))
        grid = torch.cat([times.new_zeros(1), times])
        for row in rows:
            path = torch.cat([grid.new_zeros(1), row["paths"][0]])
            ax_paths.plot(grid, path, lw=0.8, label=f"H = {row['true']:.1f}")
        ax_paths.set(xlabel="t", ylabel="B^H(t)", title="one exact path per H")
        ax_paths.legend(fontsize=7)
        true = [row["true"] for row in rows]
        ax_est.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax_est.plot(true, [row["exact"] for row in rows], "ko", mfc="none", label="exact lik.")
        for name, marker in zip(grids, "sx"):
            ax_est.plot(true, [row[name] for row in rows], marker, label=f"MA-fBM, {name}")
        ax_est.set(xlabel="true H", ylabel="estimated H", title="maximum likelihood H")
        ax_est.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out / "hurst_estimation.png", dpi=120)
        print(f"wrote {args.out / 'hurst_estimation.png'}")


if __name__ == "__main__":
    main()
