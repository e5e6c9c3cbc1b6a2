"""One discrete-latent model, five gradient strategies for its class variable.

A discrete VAE on scikit-learn's binarised 8x8 digits: per image a class
``c ~ Categorical(1/10)`` and Bernoulli pixels decoded by an MLP from ``one_hot(c)``; the guide
``q(c | x)`` is an amortised MLP. The model and guide are plain Pyro; each strategy is set on
the guide's site ``"c"`` with :func:`pplx.estimators.with_estimators`, without editing it, and
trained with ``pyro.infer.SVI``:

* ``reinforce``: ELBO(K), score function without a baseline;
* ``reinforce+loo``: ELBO(K), score function with the leave-one-out baseline;
* ``enumerate``: ELBO(K), the exact sum over the 10 classes;
* ``mvd``: ELBO(K), measure-valued derivative (10 coupled re-executions, all draws at once);
* ``vimco``: VIMCO(K, local_plate="data"), IWAE with the leave-one-out signal per image.

At the end it prints the gradient variance of every strategy at the same (trained)
parameters, from :func:`pplx.objectives.compare_estimators`, and the held-out ELBO and
log p(x) of each trained model (exact: the class is summed out).

    python examples/discrete_latents.py [--steps 1500] [--particles 4] [--out DIR]
    python examples/discrete_latents.py --quick
"""

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import pyro
import torch

import pplx.estimators as est
import pplx.objectives as obj
from pplx.datasets import binarized_digits
from pplx.models import DiscreteVAE


def strategies(k):
    """Name -> (objective, strategy of the site "c" or None for the guide's default)."""
    return {
        "reinforce": (obj.ELBO(k), est.Reinforce(None)),
        "reinforce+loo": (obj.ELBO(k), est.Reinforce("loo")),
        "enumerate": (obj.ELBO(k), est.Enumerate()),
        "mvd": (obj.ELBO(k), est.MVD()),
        "vimco": (obj.VIMCO(k, local_plate="data"), None),
    }


def tagged(guide, strategy):
    return guide if strategy is None else est.with_estimators(guide, {"c": strategy})


def train(objective, strategy, data, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    vae = DiscreteVAE(x_dim=data.shape[1])
    svi = pyro.infer.SVI(
        vae.model, tagged(vae.guide, strategy), pyro.optim.Adam({"lr": args.lr}), objective
    )
    start = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.randint(0, len(data), (args.batch,))
        svi.step(data[idx])
    return vae, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--variance-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the CSV tables and a plot")
    parser.add_argument("--quick", action="store_true", help="a few steps (< 40 s)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.variance_samples = 60, 20
    torch.set_num_threads(1)
    data = binarized_digits(8)
    train_x, test_x = data[:-300], data[-300:]
    k = args.particles
    print(f"DiscreteVAE on {len(train_x)} digits, batch {args.batch}, K={k}, {args.steps} steps")

    results, trained = [], {}
    for name, (objective, strategy) in strategies(k).items():
        vae, seconds = train(objective, strategy, train_x, args)
        trained[name] = vae
        elbo, log_px = vae.exact(test_x)
        results.append(
            {
                "strategy": name,
                "held-out ELBO": elbo,
                "held-out log p(x)": log_px,
                "train s": seconds,
            }
        )
        print(f"  {name:14s} held-out ELBO {elbo:8.3f}  log p(x) {log_px:8.3f}  ({seconds:.1f} s)")

    # gradient variance of every strategy at the same parameters: the enumerate-trained ones
    pyro.clear_param_store()
    vae = trained["enumerate"]
    batch = test_x[: args.batch]
    candidates = {
        name: (objective, tagged(vae.guide, strategy))
        for name, (objective, strategy) in strategies(k).items()
    }
    table = obj.compare_estimators(candidates, vae.model, batch, num_samples=args.variance_samples)
    table = table.reset_index()
    table["net"] = table["parameter"].str.split("$").str[0]  # "encoder$$$0.weight" -> encoder
    grouped = table.groupby(["estimator", "net"], sort=False)
    summary = grouped.agg(variance=("variance", "sum"), snr=("snr", "mean")).unstack("net")
    summary.columns = [f"{stat}[{net}]" for stat, net in summary.columns]
    summary["s/estimate"] = table.groupby("estimator", sort=False)["seconds"].first()
    results = pd.DataFrame(results).set_index("strategy")
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        print(
            f"\ngradient of the loss at the enumerate-trained parameters, {args.variance_samples}"
            f" estimates on {len(batch)} held-out images (variance: trace of the covariance "
            "summed over the net's parameters; snr: mean of per-element SNRs)"
        )
        print(summary.to_string())
        print("\nheld-out (exact) ELBO and log p(x), nats per image")
        print(results.to_string())

    var = summary["variance[encoder]"]
    print(
        "\nenumerate's gradient is exact (its variance is float round-off); without a baseline "
        f"REINFORCE's encoder gradient has {var['reinforce'] / var['reinforce+loo']:.3g}x the "
        "variance of REINFORCE with the leave-one-out baseline"
    )
    if not all(math.isfinite(v) for v in results["held-out ELBO"]):
        raise SystemExit("non-finite held-out ELBO")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "discrete_latents_variance.csv", index=False)
        results.to_csv(out / "discrete_latents_heldout.csv")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(summary.index, summary["variance[encoder]"])
        ax.set_yscale("log")
        ax.set_ylabel("encoder gradient variance")
        ax.set_title(f"gradient variance at trained parameters (K={k})")
        fig.tight_layout()
        fig.savefig(out / "discrete_latents.png", dpi=110)
        print(f"wrote {out}/discrete_latents_variance.csv, discrete_latents_heldout.csv, .png")


if __name__ == "__main__":
    main()
