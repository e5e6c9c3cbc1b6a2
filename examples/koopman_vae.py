"""Koopman VAE on time series: train, sample, compare real and synthetic, show the eigenvalues.

Trains :class:`pplx.models.KoopmanVAE` (Naiman, Berman et al., ICLR 2024) with
``pyro.infer.SVI`` and :class:`pplx.objectives.ELBO` on the sine benchmark (or on the Google
stocks windows with ``--data stocks``), prints the loss and its terms, generates as many series
as there are evaluation sequences, and prints the discriminative score (|0.5 - accuracy| of a
post-hoc GRU classifier, lower is better) and the predictive score (train-on-synthetic,
test-on-real next-step MAE, lower is better).

With ``--missing RATE`` the model trains on irregular data, as in the paper's 30 / 50 / 70%
benchmarks: every training sequence loses that fraction of its time rows at random
(:func:`pplx.timeseries.drop_time_rows`; NaN in the dropped rows, passed with the mask), the
loss counts observed entries only, and ``--encoder cde`` replaces the GRU encoder by the
paper's neural CDE over a cubic spline of the observed points
(:class:`pplx.timeseries.CDEEncoder`). Scores compare the generated series with the
complete real ones. Writes to ``--out``:

* ``series.png``: a grid of real (top; with ``--missing``, dots mark the rows the model saw)
  and synthetic (bottom) series, and one synthetic series rolled out to 4x the training length
  (linear Koopman dynamics beyond it);
* ``projection.png``: PCA of real and synthetic series (feature means per step, as in TimeGAN's
  visualisation), the components fitted on the real data;
* ``eigenvalues.png``: the eigenvalues of the Koopman matrix with the unit circle.

    python examples/koopman_vae.py                   # sine, 3000 steps, full scores
    python examples/koopman_vae.py --data stocks --steps 5000
    python examples/koopman_vae.py --steps 20000 --fit-prior 5000   # refit the prior after
    python examples/koopman_vae.py --steps 20000 --prior-components 8   # a mixture prior
    python examples/koopman_vae.py --steps 94200 --official   # the paper's recipe and budget
    python examples/koopman_vae.py --missing 0.5 --encoder cde      # irregular: half the rows
    python examples/koopman_vae.py --quick           # < 40 s on a CPU, one seed per score
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pplx.models import KoopmanVAE  # noqa: E402
from pplx.models.koopman import plot_eigenvalues  # noqa: E402
from pplx.objectives import ELBO  # noqa: E402
from pplx.timeseries import (  # noqa: E402
    CDEEncoder,
    discriminative_score,
    drop_time_rows,
    load_stocks,
    minmax_scale,
    predictive_score,
    sine_data,
    sliding_windows,
)

SEQ_LEN = 24


def load(name, num_sine, generator):
    """Sequences ``(n, 24, d)`` in [0, 1], shuffled."""
    if name == "sine":
        return sine_data(num_sine, seq_len=SEQ_LEN, dim=5, generator=generator)
    scaled, _ = minmax_scale(load_stocks())  # TimeGAN: scale the series, then cut windows
    return sliding_windows(scaled, SEQ_LEN, shuffle=True, generator=generator)


def pca_2d(real, fake):
    """Project ``(n, T)`` real and synthetic curves on the first two PCs of the real ones."""
    mean = real.mean(0)
    _, _, v = torch.linalg.svd(real - mean, full_matrices=False)
    return (real - mean) @ v[:2].T, (fake - mean) @ v[:2].T


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["sine", "stocks"], default="sine")
    parser.add_argument("--steps", type=int, default=3000, help="SVI steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=7e-4)
    parser.add_argument("--z-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=20)
    parser.add_argument("--beta", type=float, default=0.007, help="KL weight")
    parser.add_argument("--alpha", type=float, default=0.005, help="predictive-loss weight")
    parser.add_argument("--gamma", type=float, default=0.0, help="spectral-penalty weight")
    parser.add_argument("--num-eval", type=int, default=1000, help="sequences per score")
    parser.add_argument("--score-seeds", type=int, default=5, help="repeats per score")
    parser.add_argument(
        "--fit-prior",
        type=int,
        default=0,
        metavar="STEPS",
        help="after training, refit the prior network alone for STEPS steps "
        "(KoopmanVAE.fit_prior; --quick runs 20)",
    )
    parser.add_argument(
        "--missing",
        type=float,
        default=0.0,
        metavar="RATE",
        help="drop this fraction of every training sequence's time rows (irregular data; "
        "the paper's benchmarks use 0.3, 0.5, 0.7)",
    )
    parser.add_argument(
        "--encoder",
        choices=["gru", "cde"],
        default="gru",
        help="encoder of irregular data: a GRU over zero-filled values plus the mask, or "
        "the paper's neural CDE over a cubic spline of the observed points (slower)",
    )
    parser.add_argument(
        "--prior-components",
        type=int,
        default=1,
        metavar="K",
        help="Gaussians mixed in each step of the prior network (KoopmanVAE's "
        "prior_components; 1: the paper's prior). 8 scored best at the official budget on "
        "regular sine and stocks with the default network, at 1.6x the time per step",
    )
    parser.add_argument(
        "--official",
        action="store_true",
        help="the official code's recipe: 3-layer GRUs, bidirectional decoder, encoder batch "
        "norm, KL against the free prior rollout, closed-form KL (about 2x the time per step; "
        "0.004-0.010 on sine at the paper's 94,200 steps)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="koopman-vae-out", help="folder for the plots")
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    args = parser.parse_args(argv)
    if not 0.0 <= args.missing < 1.0:
        parser.error(f"--missing must be in [0, 1), got {args.missing}")
    if args.encoder == "cde" and not args.missing:
        parser.error("--encoder cde is the irregular-data encoder: use it with --missing RATE")
    disc_steps, pred_steps = 2000, 5000
    if args.quick:
        args.steps, args.num_eval, args.score_seeds = 120, 400, 1
        args.fit_prior = args.fit_prior or 20
        disc_steps, pred_steps = 300, 300
    if args.device == "cpu":
        torch.set_num_threads(1)  # small GRUs: threads only add overhead
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()

    data = load(args.data, 10_000 if not args.quick else 2000, gen).to(args.device)
    n, T, d = data.shape
    print(f"data={args.data}: {n} sequences of {T} steps x {d} features, device={args.device}")
    if args.missing:  # irregular: NaN in the dropped rows, and the mask of the observed ones
        train_x, mask = drop_time_rows(data, args.missing, generator=gen)
        print(f"irregular: {args.missing:.0%} of every sequence's rows dropped at random")
    else:
        train_x, mask = data, None
    kovae = KoopmanVAE(
        d,
        args.z_dim,
        args.hidden,
        beta=args.beta,
        alpha=args.alpha,
        gamma=args.gamma,
        prior_components=args.prior_components,
        **(
            {
                "num_layers": 3,
                "bidirectional_decoder": True,
                "encoder_batch_norm": True,
                "prior_kl": "free",
            }
            if args.official
            else {}
        ),
    ).to(args.device)
    if args.encoder == "cde":
        kovae.encoder = CDEEncoder.for_model(kovae)
    objective = ELBO(analytic_kl=args.official)  # the official code's KL is in closed form
    svi = pyro.infer.SVI(kovae.model, kovae.guide, pyro.optim.Adam({"lr": args.lr}), objective)
    every = max(1, args.steps // 10)
    running = 0.0
    for step in range(1, args.steps + 1):
        idx = torch.randint(n, (args.batch,), generator=gen).to(args.device)
        running += svi.step(train_x[idx], None if mask is None else mask[idx]) / args.batch
        if step % every == 0 or step == args.steps:
            count = every if step % every == 0 else step % every
            print(f"step {step:5d}  loss/sequence {running / count:9.3f}")
            running = 0.0
    if args.fit_prior:  # second stage: the prior network catches up with the posterior
        fitted = kovae.fit_prior(
            train_x, mask, num_steps=args.fit_prior, generator=gen, analytic_kl=args.official
        )
        print(f"prior refit: {args.fit_prior} steps, loss/sequence {fitted[-100:].mean():9.3f}")
    kovae.eval()
    with torch.no_grad():
        some = slice(0, min(n, 512))
        terms = kovae.loss_terms(train_x[some], None if mask is None else mask[some])
    print("loss terms / sequence: " + "  ".join(f"{k} {v.item():.4g}" for k, v in terms.items()))
    train_time = time.perf_counter() - start

    chosen = torch.randperm(n, generator=gen)[: args.num_eval].to(args.device)
    real = data[chosen]  # complete series, also where training saw irregular ones
    fake = kovae.sample(len(real))
    seeds = tuple(range(args.score_seeds))
    disc = discriminative_score(real, fake, seeds=seeds, num_steps=disc_steps)
    pred = predictive_score(real, fake, seeds=seeds, num_steps=pred_steps)
    print(
        f"discriminative score {disc} (lower is better; {len(seeds)} seed(s), "
        f"{disc_steps} classifier steps; indistinguishable samples score about {disc.floor:.3f} "
        f"with {len(real)} + {len(real)} sequences)"
    )
    print(
        f"predictive score     {pred} (lower is better; {len(seeds)} seed(s), "
        f"{pred_steps} regressor steps)"
    )
    eig = kovae.eigenvalues().cpu()
    print(
        f"Koopman eigenvalues: largest modulus {eig.abs().max():.4f}, "
        f"{int((eig.abs() > 1).sum())} of {len(eig)} outside the unit circle"
    )

    # ---------------------------------------------------------------- plots
    real_c, fake_c = real.cpu(), fake.cpu()
    long = kovae.sample(1, length=4 * T)[0].cpu()
    cols = 4
    fig, axes = plt.subplots(3, cols, figsize=(3 * cols, 7.5), sharey=True)
    for j in range(cols):
        lines = axes[0, j].plot(real_c[j], lw=1 if mask is not None else 1.5)
        if mask is not None:  # the rows the model saw of this sequence
            seen = mask[chosen[j]].cpu()
            t_seen = torch.arange(T)[seen]
            for line, feature in zip(lines, real_c[j, seen].T):
                axes[0, j].plot(t_seen, feature, "o", ms=3, color=line.get_color())
        axes[1, j].plot(fake_c[j])
    axes[0, 0].set_ylabel("real")
    axes[1, 0].set_ylabel("synthetic")
    gs = axes[2, 0].get_gridspec()
    for ax in axes[2]:
        ax.remove()
    ax_long = fig.add_subplot(gs[2, :])
    ax_long.plot(long)
    ax_long.axvline(T - 0.5, color="k", ls="--", lw=1)
    ax_long.set_ylabel("synthetic, 4T")
    ax_long.set_xlabel("t (dashed: end of the training length; then z_{t+1} = z_t A)")
    partial = f", trained on {1 - args.missing:.0%} of the rows (dots)" if mask is not None else ""
    fig.suptitle(f"KoVAE on {args.data}: real vs synthetic series (all {d} features){partial}")
    fig.tight_layout()
    fig.savefig(out / "series.png", dpi=100)
    plt.close(fig)

    p_real, p_fake = pca_2d(real_c.mean(-1), fake_c.mean(-1))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(p_real[:, 0], p_real[:, 1], s=6, alpha=0.4, label="real")
    ax.scatter(p_fake[:, 0], p_fake[:, 1], s=6, alpha=0.4, label="synthetic")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"PCA of real and synthetic {args.data} series")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "projection.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    plot_eigenvalues(eig, ax=ax, label="eigenvalues of A")
    ax.set_title("Koopman eigenvalues")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "eigenvalues.png", dpi=100)
    plt.close(fig)
    total = time.perf_counter() - start
    print(f"training {train_time:.1f} s, total {total:.1f} s; plots in {out}/")


if __name__ == "__main__":
    main()
