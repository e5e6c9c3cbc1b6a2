r"""KoVAE reproduction: discriminative and predictive scores on sine, stocks, energy vs a GRU-VAE.

Trains :class:`pplx.models.KoopmanVAE` (Naiman, Berman et al., ICLR 2024) with
``pyro.infer.SVI`` + :class:`pplx.objectives.ELBO` on the sine and stocks benchmarks (energy
with ``--datasets energy``), regular and irregular (30/50/70 % of the time rows of every
training sequence dropped with :func:`pplx.timeseries.drop_time_rows`; the model sees NaNs plus
the mask), and a baseline GRU-VAE: the same encoder and decoder with a standard-normal prior
per step and the Koopman terms switched off (``alpha = gamma = 0``). The scores compare samples
with the complete (regular) real sequences, as in GT-GAN and KoVAE:

* discriminative: |0.5 - accuracy| of a post-hoc GRU classifier (lower is better);
* predictive: train-on-synthetic, test-on-real next-step MAE (lower is better).

The paper's numbers for the regular benchmarks are printed next to ours (PAPERS.md, section 5,
approximate). The official code trains for 600 epochs (about 94k steps of batch 64 on 10,000
sine sequences); a CPU run here takes far fewer steps, so the comparison is only indicative
unless ``--steps`` is raised to that scale (preferably with ``--device cuda``).

The scores follow the official metric code: the whole data set against as many synthetic
sequences (``--num-eval`` to use fewer), 10 repeats of each score. The discriminative score
cannot go below a noise floor set by the held-out size (printed with each table; about 0.006
for sine's 4,000 held-out sequences, 0.02 for 400), so scores from different sample sizes are
not comparable. Loss weights default to the official scripts' per data set (sine: beta .007,
alpha .005; stocks: beta .009, alpha .03).

With ``--checkpoint-dir DIR`` every training run saves its state there every
``--checkpoint-every`` steps and when it ends; running the same command again resumes
unfinished runs and only scores finished ones, so an hour of training is never lost.

    python benchmarks/kovae_scores.py --quick                 # smoke run, minutes on a CPU
    python benchmarks/kovae_scores.py --steps 20000 --seeds 3 --device cuda
    python benchmarks/kovae_scores.py --datasets sine --rates 0 0.5 --models kovae
    python benchmarks/kovae_scores.py --datasets energy --data-dir ../shared/data/timeseries
    # the official budget, resumable:
    python benchmarks/kovae_scores.py --datasets sine --rates 0 --models kovae --steps 94200 \
        --checkpoint-dir runs/kovae
"""

import argparse
import math
import os
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from pplx.inference.checkpoint import (
    check_writable,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pplx.models import KoopmanVAE
from pplx.objectives import ELBO
from pplx.timeseries import (
    discriminative_score,
    drop_time_rows,
    load_energy,
    load_stocks,
    minmax_scale,
    predictive_score,
    sine_data,
    sliding_windows,
)
from pplx.timeseries.cde import CDEEncoder
from pplx.timeseries.data import DATA_DIR_ENV

SEQ_LEN, BATCH, LR = 24, 64, 7e-4
#: (discriminative, predictive) reported for KoVAE on the regular benchmarks (PAPERS.md s. 5;
#: it gives no energy numbers).
PAPER = {"sine": (0.005, 0.093), "stocks": (0.009, 0.037)}
#: Name the training checkpoints are written under (pplx.inference.checkpoint).
ENGINE = "kovae_scores"
#: (beta, alpha): KL and predictive-loss weights of the official scripts (sine_regular.sh,
#: stock_regular.sh; energy has no script: run_regular.py's defaults).
WEIGHTS = {"sine": (0.007, 0.005), "stocks": (0.009, 0.03), "energy": (0.007, 0.005)}
#: Steps of the official code's default (600 epochs of batch 64 over the training windows).
PAPER_STEPS = {
    "sine": 600 * math.ceil(10_000 / BATCH),
    "stocks": 600 * math.ceil(3662 / BATCH),
    "energy": 600 * math.ceil(19_712 / BATCH),
}
#: Where ``--datasets energy`` looks when neither ``--data-dir`` nor $PPLX_TIMESERIES_DATA is
#: given: the project's shared benchmark data (energy_data.csv is not bundled with pplx).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "timeseries"

#: What this script measured on CPU (one thread), discriminative / predictive; the Koopman
#: guide (docs/guides/koopman.rst, "Sample quality") tells the story behind each number.
MEASURED = """\
measured here (CPU, one thread; training seed 0 unless noted; details in the Koopman guide):
  short runs, sine weights for both data sets, scored on 1000 real vs 1000 synthetic
  sequences (floor 0.020), 5 repeats:
    sine, 1500 steps:  KoVAE 0.073 ± 0.022 / 0.130 (--pred-loss sum: 0.490 ± 0.004 / 0.114)
    sine, 6000 steps:  KoVAE 0.050 ± 0.013 / 0.093    GRU-VAE 0.097 ± 0.058 / 0.093
    stocks, 6000:      KoVAE 0.042 ± 0.045 / 0.036    GRU-VAE 0.158 ± 0.019 / 0.039
  official budget (94200 / 34800 steps), official weights and scoring (whole data set,
  10 repeats; floor 0.006 / 0.010); predictive 0.094 (sine), 0.037-0.038 (stocks) throughout:
                                                sine                  stocks
    default network                             0.025 ± 0.005         0.061 ± 0.015
      training seed 1                           0.025 ± 0.011         0.054 ± 0.031
      --fit-prior 5000                          0.016 ± 0.009         0.045 ± 0.024
      --prior-lr-scale 5                        0.026 ± 0.009
      --kl analytic                             0.017 ± 0.006         0.051 ± 0.019
        training seed 1                         0.026 ± 0.015
      --fit-prior 20000 --fresh-prior 1 / 8     0.023 / 0.025
      --prior-components 8                      0.014 ± 0.006         0.018 ± 0.023
        training seed 1                         0.015 ± 0.010         0.013 ± 0.013
        --fit-prior 5000                        0.013 ± 0.008         0.015 ± 0.007
    official network (--num-layers 3            0.019 ± 0.008         0.017 ± 0.011
      --bidirectional-decoder)
      training seed 1                                                 0.018 ± 0.025
      --fit-prior 5000                          0.010 ± 0.007         0.009 ± 0.006
        training seed 1                                               0.032 ± 0.036
      --encoder-batch-norm                                            0.024 ± 0.017
        --prior-kl free                                               0.025 ± 0.013
          --kl analytic (the official recipe    0.004 ± 0.002         0.019 ± 0.009
          in full)
            training seed 1                     0.010 ± 0.005
              --fit-prior 5000                  0.007 ± 0.006
            --fit-prior 5000                    0.012 ± 0.008
            --scale-transform exp               0.005 ± 0.003
      --prior-components 8                      0.014 ± 0.005         0.021 ± 0.022
        --fit-prior 5000                        0.009 ± 0.008
    GRU-VAE, official network                   0.008 ± 0.006         0.038 ± 0.021
  irregular, 15000 steps, default network, 5 repeats, at 30 / 50 / 70% missing:
    sine    KoVAE 0.078 / 0.076 / 0.095, --encoder cde 0.064 / 0.045 / 0.060 (adding
            --prior-components 8: 0.057 at 50%), GRU-VAE 0.101 / 0.126 / 0.120;
            predictive 0.094-0.101
    stocks  KoVAE 0.085 / 0.079 / 0.117, --encoder cde 0.156 / 0.158 (70% not run),
            GRU-VAE 0.105 / 0.099 / 0.109; predictive 0.037-0.039
  irregular, official budget, default network, 5 repeats, 30 / 50 / 70% missing (training
  seed 0 unless noted; predictive 0.094 on sine, 0.037-0.038 on stocks):
    sine    --encoder cde --prior-components 8   0.024 ± 0.011 / 0.016 ± 0.009 / 0.015 ± 0.010
              training seed 1                    0.020 ± 0.016 / not run       / not run
            --encoder cde (Gaussian prior)       0.019 ± 0.006 / 0.022 ± 0.012 / 0.025 ± 0.014
            GRU-VAE (GRU encoder)                0.030 ± 0.031 / 0.038 ± 0.046 / 0.029 ± 0.031
    stocks  --prior-components 8                 0.012 ± 0.010 / 0.015 ± 0.010 / 0.022 ± 0.010
              training seed 1                    not run       / 0.009 ± 0.006 / 0.005 ± 0.005
            KoVAE (Gaussian prior)               0.048 ± 0.027 / 0.047 ± 0.027 / 0.076 ± 0.059
            GRU-VAE                              0.058 ± 0.036 / 0.064 ± 0.033 / 0.095 ± 0.032
  energy (--datasets energy), regular, default network, whole data set, 5 repeats (floor
  0.004); predictive 0.251 throughout, the constant every regressor scores there (see the
  note below the table), so also --predictive-target all (real data's own: 0.047):
                                  KoVAE                          GRU-VAE
    20000 steps                   0.333 ± 0.030 / all 0.051      0.434 ± 0.005 / all 0.052
    184800 (the official budget)  0.237 ± 0.009 / all 0.049      0.298 ± 0.021 / all 0.052"""


class GRUVAE(KoopmanVAE):
    """Baseline: KoopmanVAE's encoder and decoder, prior N(0, I) per step, no Koopman terms."""

    def __init__(self, x_dim, z_dim=16, hidden=20, *, beta=0.007, **kwargs):
        super().__init__(x_dim, z_dim, hidden, beta=beta, alpha=0.0, gamma=0.0, **kwargs)
        del self.prior_rnn, self.prior_out  # unused: the prior has no parameters

    def conditional_prior(self, z):
        """N(0, I) at every step, whatever the path's past."""
        return dist.Normal(torch.zeros_like(z), torch.ones_like(z)).to_event(1)

    def _rollout(self, n, length, like=None):
        """Standard-normal latents ``(n, length, z_dim)`` and their per-step priors."""
        p = self.decoder_out.weight
        z = torch.randn(n, length, self.z_dim, dtype=p.dtype, device=p.device)
        return z, self.conditional_prior(z)


def load(name, generator, data_dir=None):
    """Sequences ``(n, 24, d)`` in [0, 1], shuffled (TimeGAN's preprocessing).

    ``data_dir``: the folder holding ``energy_data.csv`` (energy only; default
    $PPLX_TIMESERIES_DATA, then :data:`SHARED_DATA`).
    """
    if name == "sine":
        return sine_data(10_000, seq_len=SEQ_LEN, dim=5, generator=generator)
    if name == "stocks":
        raw = load_stocks()
    else:
        if data_dir is None and not os.environ.get(DATA_DIR_ENV):
            data_dir = SHARED_DATA
        raw = load_energy(data_dir)
    scaled, _ = minmax_scale(raw)
    return sliding_windows(scaled, SEQ_LEN, shuffle=True, generator=generator)


def train(
    model_name,
    data,
    mask,
    steps,
    seed,
    device,
    beta,
    alpha,
    pred_loss="relative",
    encoder="gru",
    checkpoint=None,
    checkpoint_every=5000,
    architecture=None,
    prior_lr_scale=1.0,
    analytic_kl=False,
):
    """Train one model: ``(net, last loss per sequence, seconds of training)``.

    With ``checkpoint`` (a path) the state is saved every ``checkpoint_every`` steps and at the
    end, and training resumes from the file if it exists. ``architecture``: keyword arguments
    of the network (``num_layers``, ``bidirectional_decoder``, ``encoder_batch_norm``,
    ``prior_kl``, ``prior_components``, ``scale_transform``). ``prior_lr_scale``: the prior
    network's learning rate relative to the rest (two time scales: the prior tracks the moving
    aggregate posterior faster). ``analytic_kl``: train with ``ELBO(analytic_kl=True)``.
    """
    architecture = architecture or {}
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    d = data.shape[-1]
    if model_name == "kovae":
        net = KoopmanVAE(d, 16, 20, beta=beta, alpha=alpha, pred_loss=pred_loss, **architecture)
    else:
        net = GRUVAE(d, 16, 20, beta=beta, **architecture)
    net = net.to(device)
    if encoder == "cde" and mask is not None:  # the paper's irregular encoder
        net.encoder = CDEEncoder.for_model(net)
    # Pyro passes each parameter's name ("kovae.prior_rnn.weight_hh_l0", ...) to a callable
    optim = pyro.optim.Adam(
        lambda name: {"lr": LR * (prior_lr_scale if ".prior_" in name else 1.0)}
    )
    svi = pyro.infer.SVI(net.model, net.guide, optim, ELBO(analytic_kl=analytic_kl))
    gen = torch.Generator().manual_seed(seed)
    done, loss, seconds = 0, float("nan"), 0.0
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, ENGINE, map_location=device)
        net.load_state_dict(state["model"])
        optim.set_state(state["optim"])
        gen.set_state(state["generator"])
        set_rng_state(state["rng"])
        done, loss, seconds = state["step"], state["loss"], state["seconds"]
        if done < steps:
            print(f"  resuming {checkpoint.name} at step {done} of {steps}", flush=True)
    elif checkpoint is not None:
        check_writable(checkpoint)

    def save(step):
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                ENGINE,
                {
                    "step": step,
                    "loss": loss,
                    "seconds": seconds + time.perf_counter() - t0,
                    "model": net.state_dict(),
                    "optim": optim.get_state(),
                    "generator": gen.get_state(),
                    "rng": rng_state(),
                },
            )

    t0 = time.perf_counter()
    for step in range(done, steps):
        idx = torch.randint(len(data), (BATCH,), generator=gen).to(device)
        loss = svi.step(data[idx], None if mask is None else mask[idx]) / BATCH
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save(step + 1)
    seconds += time.perf_counter() - t0
    net.eval()
    return net, loss, seconds


def with_fresh_prior(net, components):
    """``net`` with its prior network replaced by a freshly initialised one of ``components``.

    Encoder (a neural CDE included), decoder, batch-norm statistics and training length are
    kept; the new prior network is drawn from torch's global random stream.
    """
    fresh = KoopmanVAE(
        net.x_dim,
        net.z_dim,
        net.hidden,
        num_layers=net.decoder.num_layers,
        bidirectional=net.encoder_out.in_features == 2 * net.hidden,
        bidirectional_decoder=net.decoder.bidirectional,
        encoder_batch_norm=net.encoder_norm is not None,
        beta=net.beta,
        alpha=net.alpha,
        gamma=net.gamma,
        num_unit_eigs=net.num_unit_eigs,
        ridge=net.ridge,
        obs_scale=net.obs_scale,
        pred_loss=net.pred_loss,
        prior_kl=net.prior_kl,
        prior_hidden=net.prior_hidden,
        prior_components=components,
        scale_transform=net.scale_transform,
    ).to(device=net.decoder_out.weight.device, dtype=net.decoder_out.weight.dtype)
    fresh.encoder = net.encoder
    kept = {k: v for k, v in net.state_dict().items() if not k.startswith("prior_")}
    result = fresh.load_state_dict(kept, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert all(k.startswith("prior_") for k in result.missing_keys), result.missing_keys
    return fresh.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=["sine", "stocks", "energy"],
        default=None,
        help="default: sine stocks (the paper's KoVAE numbers are known for these)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding energy_data.csv (default: $PPLX_TIMESERIES_DATA, then "
        "../shared/data/timeseries next to the repository)",
    )
    parser.add_argument("--rates", nargs="+", type=float, default=None, help="missing rates")
    parser.add_argument("--models", nargs="+", choices=["kovae", "gruvae"], default=None)
    parser.add_argument("--steps", type=int, default=None, help="SVI steps per training")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds per config")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first training seed (seeds first..first+seeds-1; to add seeds in another run)",
    )
    parser.add_argument(
        "--num-eval",
        type=int,
        default=None,
        help="real (and as many synthetic) sequences per score; default: the whole data set, "
        "as in the official metric code",
    )
    parser.add_argument(
        "--score-repeats", type=int, default=None, help="repeats of each score (default 10)"
    )
    parser.add_argument(
        "--beta", type=float, default=None, help="KL weight (default: the official per data set)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="predictive-loss weight (default: the official per data set)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="save each training run here; rerunning resumes unfinished runs and reuses "
        "finished ones",
    )
    parser.add_argument("--checkpoint-every", type=int, default=5000, help="steps between saves")
    parser.add_argument(
        "--pred-loss",
        choices=["relative", "sum"],
        default="relative",
        help='KoopmanVAE pred_loss ("sum": the pre-fix scaling, for comparison)',
    )
    parser.add_argument(
        "--encoder",
        choices=["gru", "cde"],
        default="gru",
        help="encoder for irregular data: a GRU over zero-filled values plus the mask, or the "
        "paper's neural CDE over a cubic spline of the observed points (slower)",
    )
    parser.add_argument(
        "--num-layers", type=int, default=1, help="GRU layers of encoder and decoder (official: 3)"
    )
    parser.add_argument(
        "--bidirectional-decoder",
        action="store_true",
        help="bidirectional decoder GRU (the official code's)",
    )
    parser.add_argument(
        "--encoder-batch-norm",
        action="store_true",
        help="batch-normalise the encoder outputs (the official code's default)",
    )
    parser.add_argument(
        "--prior-kl",
        choices=["conditional", "free"],
        default="conditional",
        help='KoopmanVAE prior_kl ("free": the KL against the free prior rollout, as the '
        "official code)",
    )
    parser.add_argument(
        "--kl",
        choices=["mc", "analytic"],
        default="mc",
        help='KL term of the ELBO: "mc" (log q(z) - log p(z) at the sampled z) or "analytic" '
        "(closed-form per-step KLs at the sampled history, as the official code computes it; "
        "ELBO(analytic_kl=True); mixture priors stay Monte Carlo)",
    )
    parser.add_argument(
        "--fit-prior",
        type=int,
        default=0,
        metavar="STEPS",
        help="after training, refit KoVAE's prior network alone for STEPS steps "
        "(KoopmanVAE.fit_prior; not in the paper); rows read 'kovae+fp'",
    )
    parser.add_argument(
        "--fit-prior-lr",
        type=float,
        default=3e-4,
        metavar="LR",
        help="learning rate of the refit (default 3e-4)",
    )
    parser.add_argument(
        "--fresh-prior",
        type=int,
        default=0,
        metavar="K",
        help="with --fit-prior: refit a freshly initialised prior network with K mixture "
        "components per step (1: a fresh Gaussian prior) instead of the trained one; rows "
        "read 'kovae+newK'",
    )
    parser.add_argument(
        "--prior-components",
        type=int,
        default=1,
        metavar="K",
        help="mixture components per step of KoVAE's prior network during training "
        "(KoopmanVAE prior_components; 1: the paper's Gaussian)",
    )
    parser.add_argument(
        "--scale-transform",
        choices=["softplus", "exp"],
        default="softplus",
        help="how the encoder's and prior's heads give Gaussian scales (KoopmanVAE "
        'scale_transform; "exp": exp(u / 2) of a log-variance u, as the official code)',
    )
    parser.add_argument(
        "--prior-lr-scale",
        type=float,
        default=1.0,
        metavar="K",
        help="train KoVAE's prior network at K times the learning rate of the rest "
        "(two time scales; not in the paper)",
    )
    parser.add_argument(
        "--predictive-target",
        choices=["last", "all"],
        default=None,
        help='predictive score: "last" (TimeGAN\'s protocol, the default: the last feature from '
        'the others) or "all" (every feature of the next step from the past; on energy the '
        'last feature is white noise and "last" ranks nothing)',
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets")
    args = parser.parse_args(argv)
    if not args.prior_lr_scale > 0:
        parser.error(f"--prior-lr-scale must be positive, got {args.prior_lr_scale}")
    if not args.fit_prior_lr > 0:
        parser.error(f"--fit-prior-lr must be positive, got {args.fit_prior_lr}")
    if args.prior_components < 1 or args.fresh_prior < 0:
        parser.error("--prior-components must be >= 1 and --fresh-prior >= 0")
    if args.fresh_prior and not args.fit_prior:
        parser.error("--fresh-prior K needs --fit-prior STEPS (the fresh prior's training)")
    quick = args.quick
    datasets = args.datasets or ["sine", "stocks"]
    try:  # every data set before any training: a missing file fails now, not after an hour
        loaded = {n: load(n, torch.Generator().manual_seed(0), args.data_dir) for n in datasets}
    except FileNotFoundError as err:
        parser.error(f"--datasets: {err}")
    rates = args.rates if args.rates is not None else ([0.0, 0.5] if quick else [0, 0.3, 0.5, 0.7])
    models = args.models or ["kovae", "gruvae"]
    steps = args.steps or (40 if quick else 3000)
    seeds = args.seeds or 1
    num_eval = args.num_eval or (300 if quick else None)  # None: the whole data set
    score_seeds = tuple(range(args.score_repeats or (1 if quick else 10)))
    disc_steps, pred_steps = (400, 200) if quick else (2000, 5000)
    if args.device == "cpu":
        torch.set_num_threads(1)  # small GRUs: threads only add overhead

    print(f"KoVAE reproduction (Naiman, Berman et al., ICLR 2024): {' / '.join(datasets)} scores")
    print(
        f"budget: {steps} SVI steps of batch {BATCH} per training, {seeds} training seed(s); "
        "official code: 600 epochs = "
        + ", ".join(f"{PAPER_STEPS[n]} steps ({n})" for n in datasets)
        + "."
    )
    print(
        f"scores: {num_eval or 'all'} real vs as many synthetic sequences, "
        f"{len(score_seeds)} repeat(s), {disc_steps} classifier / {pred_steps} regressor steps "
        "(official metric code: the whole data set, 10 repeats, 2000 / 5000 steps)."
    )
    print(
        "CPU budget limits this comparison: with so few steps the models are undertrained and "
        "the numbers are NOT a reproduction of the paper's."
        if steps < 10_000
        else "Training budget within an order of magnitude of the paper's."
    )
    print(MEASURED)
    print(
        f"device={args.device}, pred_loss={args.pred_loss}, GRU layers={args.num_layers}, "
        f"bidirectional decoder={args.bidirectional_decoder}, "
        f"encoder batch norm={args.encoder_batch_norm}, prior_kl={args.prior_kl}, "
        f"prior refit steps={args.fit_prior} (lr {args.fit_prior_lr:g}"
        f"{f', fresh prior with {args.fresh_prior} component(s)' if args.fresh_prior else ''}), "
        f"prior lr scale={args.prior_lr_scale:g}, prior components={args.prior_components}, "
        f"predictive target={args.predictive_target or 'last'}, KL={args.kl}, "
        f"scale transform={args.scale_transform}"
    )
    header = (
        f"{'data':7s} {'missing':>7s} {'model':11s}{'loss/seq':>9s} {'disc':>15s} "
        f"{'floor':>6s} {'pred':>15s} {'paper disc':>10s} {'paper pred':>10s} {'train':>7s} "
        f"{'time':>7s}"
    )
    print(header)
    print("-" * len(header))
    free_kl = args.prior_kl == "free"
    prior_tag = f"-priorlr{args.prior_lr_scale:g}" if args.prior_lr_scale != 1 else ""
    if args.prior_components > 1:
        prior_tag += f"-mix{args.prior_components}"
    analytic_kl = args.kl == "analytic"
    kl_tag = "-akl" if analytic_kl else ""
    kl_tag += "-exps" if args.scale_transform == "exp" else ""
    start = time.perf_counter()
    for name in datasets:
        full = loaded.pop(name).to(args.device)
        real = full[:num_eval]
        beta, alpha = WEIGHTS[name]
        beta = beta if args.beta is None else args.beta
        alpha = alpha if args.alpha is None else args.alpha
        print(f"{name}: beta={beta}, alpha={alpha}, {len(real)} real sequences scored")
        for rate in rates:
            if rate > 0:
                data, mask = drop_time_rows(full, rate, torch.Generator().manual_seed(1))
            else:
                data, mask = full, None
            for model_name in models:
                t0 = time.perf_counter()
                disc, pred, losses, train_s = [], [], [], 0.0
                refit = bool(args.fit_prior) and model_name == "kovae"  # GRU-VAE: fixed prior
                for seed in range(args.first_seed, args.first_seed + seeds):
                    checkpoint = None
                    if args.checkpoint_dir is not None:
                        enc = args.encoder if rate > 0 else "gru"
                        checkpoint = args.checkpoint_dir / (
                            f"{name}-missing{rate:g}-{model_name}-{enc}-beta{beta:g}-"
                            f"alpha{alpha:g}-{args.pred_loss}-layers{args.num_layers}"
                            f"{'-bidec' if args.bidirectional_decoder else ''}"
                            f"{'-bn' if args.encoder_batch_norm else ''}"
                            f"{'-freekl' if free_kl and model_name == 'kovae' else ''}"
                            f"{prior_tag if model_name == 'kovae' else ''}{kl_tag}"
                            f"-steps{steps}-"
                            f"seed{seed}.pt"
                        )
                    net, loss, seconds = train(
                        model_name,
                        data,
                        mask,
                        steps,
                        seed,
                        args.device,
                        beta,
                        alpha,
                        args.pred_loss,
                        args.encoder,
                        checkpoint,
                        args.checkpoint_every,
                        {
                            "num_layers": args.num_layers,
                            "bidirectional_decoder": args.bidirectional_decoder,
                            "encoder_batch_norm": args.encoder_batch_norm,
                            "scale_transform": args.scale_transform,
                            **(
                                {
                                    "prior_kl": args.prior_kl,
                                    "prior_components": args.prior_components,
                                }
                                if model_name == "kovae"
                                else {}
                            ),
                        },
                        args.prior_lr_scale,
                        analytic_kl,
                    )
                    if refit:
                        t_fit = time.perf_counter()
                        pyro.set_rng_seed(seed)
                        gen = torch.Generator().manual_seed(seed)
                        if args.fresh_prior:
                            net = with_fresh_prior(net, args.fresh_prior)
                        net.fit_prior(
                            data,
                            mask,
                            num_steps=args.fit_prior,
                            lr=args.fit_prior_lr,
                            generator=gen,
                            analytic_kl=analytic_kl,
                        )
                        seconds += time.perf_counter() - t_fit
                    train_s += seconds
                    fake = net.sample(len(real), SEQ_LEN)
                    losses.append(loss)
                    disc.append(
                        discriminative_score(real, fake, seeds=score_seeds, num_steps=disc_steps)
                    )
                    pred.append(
                        predictive_score(
                            real,
                            fake,
                            target=args.predictive_target,
                            seeds=score_seeds,
                            num_steps=pred_steps,
                        )
                    )
                d_vals = torch.tensor([v for s in disc for v in s.values])
                p_vals = torch.tensor([v for s in pred for v in s.values])
                std = lambda v: v.std().item() if len(v) > 1 else 0.0  # noqa: E731
                paper_d, paper_p = (
                    PAPER.get(name, (0, 0)) if rate == 0 and model_name == "kovae" else (0, 0)
                )
                label = model_name + (
                    f"+new{args.fresh_prior}"
                    if refit and args.fresh_prior
                    else "+fp"
                    if refit
                    else ""
                )
                print(
                    f"{name:7s} {rate:7.0%} {label:11s}{sum(losses) / len(losses):9.3f} "
                    f"{d_vals.mean():.3f} ± {std(d_vals):.3f} {disc[0].floor:6.3f}   "
                    f"{p_vals.mean():.3f} ± {std(p_vals):.3f}   "
                    f"{(f'{paper_d:.3f}' if paper_d else 'n/a'):>10s} "
                    f"{(f'{paper_p:.3f}' if paper_p else 'n/a'):>10s} "
                    f"{train_s:6.0f}s {time.perf_counter() - t0:6.0f}s",
                    flush=True,
                )
                if seeds > 1:
                    for seed, (d_s, p_s) in enumerate(zip(disc, pred), args.first_seed):
                        print(f"{'':24s} training seed {seed}: disc {d_s}, pred {p_s}")
    print(f"total {time.perf_counter() - start:.1f} s")
    print(
        "paper columns: KoVAE on the regular benchmarks only (PAPERS.md s. 5, approximate); "
        "irregular and baseline rows have no paper value here. Lower is better for both scores."
    )
    print(
        "caution: a discriminative score near 0 can also mean the post-hoc classifier failed "
        "to learn in its step budget (it then predicts one class: accuracy 0.5); read it "
        "together with the predictive score and with more classifier steps."
    )
    encoder = (
        "the paper's neural CDE over a cubic spline"
        if args.encoder == "cde"
        else "a GRU over zero-filled values plus the mask (--encoder cde: the paper's neural CDE)"
    )
    print(f"irregular encoder: {encoder}.")
    if "energy" in datasets:
        print(
            "energy: the predictive score's target, the last column rv2, is white noise (the "
            "data set's random control variable; rv1 is the same column): every regressor "
            "scores its mean absolute deviation, about 0.251; --predictive-target all gives a "
            "predictive score that ranks models there."
        )
    print(
        "floor: the discriminative score two indistinguishable samples get on average at this "
        "held-out size (Score.floor, pplx.timeseries.discriminative_noise_floor); train: "
        "seconds of training (summed over resumed sessions; with --fit-prior, the refit "
        "included); time: this row's wall time."
    )


if __name__ == "__main__":
    main()
