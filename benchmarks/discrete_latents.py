"""Seconds per epoch of discrete-latent training: pplx strategies vs Pyro's ELBOs, same model.

Two models (``--model``):

* ``digits`` (default): a discrete VAE on scikit-learn's binarised 8x8 digits: per image a
  class ``c ~ Categorical(1/10)`` and Bernoulli pixels ``x | c`` decoded by an MLP from
  ``one_hot(c)``; the guide ``q(c | x)`` is an amortised MLP. One epoch is the training set
  (1,497 images) in full minibatches of ``--batch``.
* ``objects``: "how many objects, and where" in the spirit of AIR
  (:class:`pplx.models.objects.ObjectCountVAE`): a count ``n`` of up to 3 blobs (the
  discrete site, with AIR-style presence probabilities in the guide) and their positions
  (reparameterised) on 12x12 images simulated from the model; one epoch is 2,000 images.

The *same* Pyro model and guide functions are trained by every row; only the loss and the
discrete site's tags differ. One epoch is a fixed number of minibatches, the same for every
row.

pplx rows (``with_estimators(guide, {"c" or "n": ...})``) and their Pyro equivalents:

* ELBO(1) + Reinforce (moving-average baseline)  vs  TraceGraph_ELBO (decaying-average baseline)
* ELBO(K) + Reinforce (leave-one-out baseline)   vs  TraceGraph_ELBO(num_particles=K), looped
  (Pyro's default) and ``vectorize_particles=True``
* ELBO(1) + Enumerate                            vs  TraceEnum_ELBO (config_enumerate guide)
* ELBO(1) + MVD                                  (Pyro has no measure-valued derivatives)
* IWAE(K, local_plate="data") + Reinforce, VIMCO(K, local_plate="data")
                                                 vs  RenyiELBO(alpha=0, num_particles=K),
  looped and vectorized (see the caveat printed below the table)
* IWAE(K, local_plate="data") + MVD              (no Pyro equivalent)

``hand`` rows are the same estimators written directly in PyTorch for this model (no Pyro,
fused Adam): the floor any library can reach, so ``Pyro s / hand s`` is the largest speed-up
over a Pyro row that is possible at this model size on this machine; the table prints it
next to each Pyro row, and each pplx row's time as a multiple of the hand-written one.

``--compiled`` adds every pplx row again with ``objective.compile()`` (the program recorded
once as ATen operations and replayed without Pyro's handlers; see ``Objective.compile``).
``--engine pplx`` trains the pplx rows with ``pplx.inference.SVI`` and one ``torch.optim.Adam``
(what a pplx user runs) instead of ``pyro.infer.SVI`` with ``pyro.optim.Adam``'s
per-parameter optimizers; the Pyro rows are unchanged.

After training each row reports, so that it is clear that every row learns: for ``digits``
the exact ELBO and the exact log p(x) per image on the training and held-out images (the
class is summed out, so these numbers carry no Monte Carlo noise); for ``objects`` the
fraction of held-out images whose most probable count under the guide is the true one, and
the held-out ELBO per image (count summed out, 32 position samples).

    python benchmarks/discrete_latents.py --threads 1 [--epochs 3] [--batch 100] \
        [--particles 5] [--device cpu] [--repeats 3] [--skip "+MVD"] [--compiled] \
        [--engine pyro|pplx] [--model digits|objects] [--quick]

Timings on a shared machine are noisy; use ``--threads 1`` and compare rows of one run.
"""

import argparse
import functools
import math
import time

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine

import pplx.estimators as est
import pplx.objectives as obj
from pplx.datasets import binarized_digits
from pplx.inference import SVI
from pplx.models import DiscreteVAE
from pplx.models.objects import ObjectCountVAE

NUM_CLASSES = 10


def decaying_baseline(site):
    if site["type"] == "sample" and not site["is_observed"]:
        return {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}
    return {}


def _digits_parts(vae, x, particles):
    """The guide's ``log q(c | x)`` ``(batch, 10)`` and ``c -> log p(x, c)`` (any batch shape)."""
    log_q = torch.log_softmax(vae.encoder(x), -1)

    def log_joint(c):
        logits = vae.decoder(F.one_hot(c, NUM_CLASSES).to(x.dtype))
        shape = torch.broadcast_shapes(logits.shape, x.shape)
        bce = F.binary_cross_entropy_with_logits(
            logits.expand(shape), x.expand(shape), reduction="none"
        )
        return -bce.sum(-1) - math.log(NUM_CLASSES)

    return log_q, log_joint


def _gaussian_log_density(value, loc, scale):
    return -0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def _objects_parts(vae, x, particles):
    """The guide's ``log q(n | x)`` ``(batch, M + 1)`` and ``n -> log p(x, n, w) - log q(w | x)``.

    The positions ``w`` are drawn (reparameterised) once per particle, ``particles + (batch, M,
    2)``, and shared by all values of ``n``.
    """
    m = vae.max_objects
    log_q, loc, scale = vae.read_out(x)  # the guide's network and parametrisation
    where = loc + scale * torch.randn(particles + loc.shape, dtype=x.dtype, device=x.device)
    prior_scale = torch.full_like(loc, vae.where_scale)
    log_w = (
        _gaussian_log_density(where, vae.anchors, prior_scale)
        - _gaussian_log_density(where, loc, scale)
    ).sum((-2, -1)) - math.log(m + 1)
    noise = torch.full_like(x, vae.noise)

    def log_joint(n):
        log_lik = _gaussian_log_density(x, vae.render(n, where), noise).sum(-1)
        return log_lik + log_w

    return log_q, log_joint


def _parts(vae, x, particles=()):
    parts = _objects_parts if isinstance(vae, ObjectCountVAE) else _digits_parts
    return parts(vae, x, particles)


def _draws(log_q, k):
    """``k`` values per image from q (``(k, batch)``) and their log densities."""
    c = torch.multinomial(log_q.detach().exp(), k, replacement=True).T
    return c, log_q.T.gather(0, c)


def hand_reinforce(baseline, k):
    """ELBO(k) with REINFORCE: moving-average (``"avg"``) or leave-one-out (``"loo"``)."""

    def surrogate(vae, x, state):
        log_q, log_joint = _parts(vae, x, (k,))
        c, lq = _draws(log_q, k)
        f = log_joint(c) - lq  # (k, batch)
        fd = f.detach()
        if baseline == "loo":
            b = (fd.sum(0, keepdim=True) - fd) / (k - 1)
        else:
            b = state.get("b", fd.new_zeros(()))
            state["b"] = 0.9 * b + 0.1 * fd.mean() if "b" in state else fd.mean()
        return (f + (fd - b) * (lq - lq.detach())).mean(0).sum()

    return surrogate


def hand_enumerate(vae, x, state):
    """The ELBO summed exactly over the values of the discrete site of every image."""
    log_q, log_joint = _parts(vae, x)
    values = torch.arange(log_q.shape[-1], device=x.device)[:, None]  # broadcast over images
    joint = log_joint(values).T  # (batch, values)
    return (log_q.exp() * (joint - log_q)).sum()


def hand_vimco(k):
    """VIMCO(k) (Mnih & Rezende, 2016): IWAE per image, leave-one-out geometric-mean baseline."""

    def surrogate(vae, x, state):
        log_q, log_joint = _parts(vae, x, (k,))
        c, lq = _draws(log_q, k)
        w = log_joint(c) - lq  # (k, batch)
        bound = torch.logsumexp(w, 0) - math.log(k)
        wd = w.detach()
        others = (wd.sum(0, keepdim=True) - wd) / (k - 1)
        diagonal = torch.eye(k, dtype=torch.bool, device=x.device)[..., None]
        swapped = torch.where(diagonal, others[:, None], wd[None])  # w_j := mean of the others
        baseline = torch.logsumexp(swapped, 1) - math.log(k)
        return (bound + ((bound.detach() - baseline) * (lq - lq.detach())).sum(0)).sum()

    return surrogate


def hand_step(surrogate, vae, lr):
    """One Adam step (fused kernel) on ``-surrogate``, as a function of the minibatch."""
    opt = torch.optim.Adam(vae.parameters(), lr=lr, fused=True)
    state = {}

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = -surrogate(vae, x, state)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def methods(k, compiled=False, model="digits"):
    """(label, make loss, tag the guide, Pyro equivalent label) for every row.

    With ``compiled``, every pplx row also runs with ``objective.compile()`` (label suffix
    ``" compiled"``).
    """
    rows = _methods(k, SITE[model])
    if not compiled:
        return rows
    pplx_rows = [row for row in rows if row[0].startswith("pplx")]
    extra = [
        (f"{label} compiled", lambda make=make: make().compile(), tag, group)
        for label, make, tag, group in pplx_rows
    ]
    return pplx_rows + extra + [row for row in rows if not row[0].startswith("pplx")]


def _methods(k, site):
    pplx_tag = lambda strategy: lambda g: est.with_estimators(g, {site: strategy()})  # noqa: E731
    graph = lambda g: poutine.infer_config(g, decaying_baseline)  # noqa: E731
    enum = lambda g: pyro.infer.config_enumerate(g, "parallel")  # noqa: E731
    same = lambda g: g  # noqa: E731
    reinforce = lambda: est.Reinforce("auto")  # noqa: E731
    return [
        # pplx
        ("pplx ELBO(1)+Reinforce(avg)", lambda: obj.ELBO(1), pplx_tag(reinforce), "graph1"),
        (f"pplx ELBO({k})+Reinforce(loo)", lambda: obj.ELBO(k), pplx_tag(reinforce), "graphK"),
        ("pplx ELBO(1)+Enumerate", lambda: obj.ELBO(1), pplx_tag(est.Enumerate), "enum"),
        ("pplx ELBO(1)+MVD", lambda: obj.ELBO(1), pplx_tag(est.MVD), None),
        (
            f"pplx IWAE({k},local)+Reinforce",
            lambda: obj.IWAE(k, local_plate="data"),
            pplx_tag(reinforce),
            "renyi",
        ),
        (f"pplx VIMCO({k},local)", lambda: obj.VIMCO(k, local_plate="data"), same, "renyi"),
        (
            f"pplx IWAE({k},local)+MVD",
            lambda: obj.IWAE(k, local_plate="data"),
            pplx_tag(est.MVD),
            None,
        ),
        # hand-written PyTorch (the floor)
        ("hand ELBO(1)+Reinforce(avg)", hand_reinforce("avg", 1), None, "graph1"),
        (f"hand ELBO({k})+Reinforce(loo)", hand_reinforce("loo", k), None, "graphK"),
        ("hand ELBO(1)+Enumerate", hand_enumerate, None, "enum"),
        (f"hand VIMCO({k},local)", hand_vimco(k), None, "renyi"),
        # Pyro
        ("pyro TraceGraph_ELBO(1)", lambda: pyro.infer.TraceGraph_ELBO(), graph, "graph1"),
        (
            f"pyro TraceGraph_ELBO({k}) looped",
            lambda: pyro.infer.TraceGraph_ELBO(num_particles=k, max_plate_nesting=1),
            graph,
            "graphK",
        ),
        (
            f"pyro TraceGraph_ELBO({k}) vectorized",
            lambda: pyro.infer.TraceGraph_ELBO(
                num_particles=k, vectorize_particles=True, max_plate_nesting=1
            ),
            graph,
            "graphK",
        ),
        (
            "pyro TraceEnum_ELBO",
            lambda: pyro.infer.TraceEnum_ELBO(max_plate_nesting=1),
            enum,
            "enum",
        ),
        (
            f"pyro RenyiELBO(0,{k}) looped",
            lambda: pyro.infer.RenyiELBO(alpha=0.0, num_particles=k, max_plate_nesting=1),
            same,
            "renyi",
        ),
        (
            f"pyro RenyiELBO(0,{k}) vectorized",
            lambda: pyro.infer.RenyiELBO(
                alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1
            ),
            same,
            "renyi",
        ),
    ]


#: The discrete site of each model.
SITE = {"digits": "c", "objects": "n"}


def load(args):
    """``(train, test, extra)`` images of ``--model``; ``extra`` holds the true counts."""
    if args.model == "objects":
        x, counts = ObjectCountVAE().simulate(2300, torch.Generator().manual_seed(0))
        x, counts = x.to(args.device), counts.to(args.device)
        return x[:2000], x[2000:], {"train": counts[:2000], "test": counts[2000:]}
    data = binarized_digits(8).to(args.device)
    return data[:-300], data[-300:], {}


def evaluate(vae, train, test, extra, args):
    """Per-row quality numbers (see the module docstring)."""
    if args.model == "objects":
        guide = est.with_estimators(vae.guide, {"n": est.Enumerate()})
        with torch.no_grad():
            loss = obj.ELBO(32).loss(vae.model, guide, test)
        return {
            "train count acc": vae.count_accuracy(train, extra["train"]),
            "test count acc": vae.count_accuracy(test, extra["test"]),
            "test ELBO": -loss / len(test),
        }
    elbo, log_px = vae.exact(train)
    test_elbo, test_log_px = vae.exact(test)
    return {
        "train ELBO": elbo,
        "train log p(x)": log_px,
        "test ELBO": test_elbo,
        "test log p(x)": test_log_px,
    }


def run(label, make_loss, tag, train, test, extra, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    if args.model == "objects":
        vae = ObjectCountVAE().to(args.device)
    else:
        vae = DiscreteVAE(x_dim=train.shape[1]).to(args.device)
    # full minibatches only (Pyro's decaying-average baseline is a per-element parameter)
    batches = [
        train[i : i + args.batch] for i in range(0, len(train) - args.batch + 1, args.batch)
    ]
    if label.startswith("hand"):
        step = hand_step(make_loss, vae, args.lr)
    elif args.engine == "pplx" and label.startswith("pplx"):
        engine = SVI(vae.model, tag(vae.guide), loss=make_loss(), optim_args={"lr": args.lr})
        state = engine.init(batches[0])
        step = functools.partial(engine.step, state)
    else:
        svi = pyro.infer.SVI(
            vae.model, tag(vae.guide), pyro.optim.Adam({"lr": args.lr}), loss=make_loss()
        )
        step = svi.step
    for x in batches[: args.warmup]:  # untimed warm-up steps (param creation, caches)
        step(x)
    epoch_seconds = []
    for _ in range(args.epochs):
        order = torch.randperm(len(batches)).tolist()
        start = time.perf_counter()
        for i in order:
            step(batches[i])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - start)
    return {
        "method": label,
        "s/epoch": min(epoch_seconds),
        "s/epoch(mean)": sum(epoch_seconds) / len(epoch_seconds),
        "ms/step": 1e3 * min(epoch_seconds) / len(batches),
        **evaluate(vae, train, test, extra, args),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per row")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--particles", type=int, default=5, help="K of the multi-particle rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="run only rows whose label contains this")
    parser.add_argument("--skip", default="", help="skip rows whose label contains this")
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds over all rows; the fastest is reported"
    )
    parser.add_argument(
        "--compiled", action="store_true", help="add compiled rows (objective.compile())"
    )
    parser.add_argument(
        "--engine",
        choices=["pyro", "pplx"],
        default="pyro",
        help="training loop of the pplx rows: pyro.infer.SVI + pyro.optim.Adam (the Pyro "
        "rows' own), or pplx.inference.SVI + torch.optim.Adam",
    )
    parser.add_argument("--model", choices=["digits", "objects"], default="digits")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 200 images (< 60 s)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train, test, extra = load(args)
    if args.quick:  # a smoke test: IWAE+MVD costs grow with batch**2 (see below)
        args.epochs, args.warmup, train = 1, 1, train[:200]
        extra = {k: v[:200] if k == "train" else v for k, v in extra.items()}
        args.batch = min(args.batch, 50)
    what = (
        "ObjectCountVAE (count of up to 3 blobs + positions, 12x12 images, MLP 64 hidden)"
        if args.model == "objects"
        else f"DiscreteVAE (Categorical({NUM_CLASSES}) class, 64 Bernoulli pixels, MLP 64 hidden)"
    )
    print(
        f"{what}; "
        f"{len(train)} training images, batch {args.batch} -> "
        f"{len(train) // args.batch} steps/epoch; K={args.particles}; "
        f"device={args.device}; torch threads={torch.get_num_threads()}; "
        f"epochs={args.epochs} x rounds={args.repeats} (fastest epoch reported); "
        f"pplx rows trained by {args.engine}'s SVI; "
        f"pyro {pyro.__version__}, torch {torch.__version__}"
    )
    best = {}  # label -> row with the fastest epoch over the repeats
    for repeat in range(args.repeats):  # rounds over all rows, so load changes hit every row
        for label, make_loss, tag, _ in methods(args.particles, args.compiled, args.model):
            if (args.only and args.only not in label) or (args.skip and args.skip in label):
                continue
            row = run(label, make_loss, tag, train, test, extra, args)
            if label not in best or row["s/epoch"] < best[label]["s/epoch"]:
                best[label] = row
            print(
                f"  round {repeat + 1}: {label:34s} {row['s/epoch']:8.3f} s/epoch  "
                f"test ELBO {row['test ELBO']:8.2f}",
                flush=True,
            )
    rows = list(best.values())
    report(rows, methods(args.particles, args.compiled, args.model), args)


def report(rows, specs, args):
    import pandas as pd

    group_of = {label: group for label, _, _, group in specs}
    hand = {group_of[r["method"]]: r for r in rows if r["method"].startswith("hand")}
    pairs = {}  # pplx label -> [(ratio, pyro label)]
    for r in rows:
        label, group = r["method"], group_of[r["method"]]
        if not label.startswith("pplx") or group is None:
            continue
        pairs[label] = [
            (p["s/epoch"] / r["s/epoch"], p["method"])
            for p in rows
            if p["method"].startswith("pyro") and group_of[p["method"]] == group
        ]
    table = pd.DataFrame(rows).set_index("method")
    speed_up, vs_hand = [], []
    for r in rows:
        label, floor = r["method"], hand.get(group_of[r["method"]])
        if label in pairs:
            speed_up.append(", ".join(f"{x:.2f}x vs {name[5:]}" for x, name in pairs[label]))
        elif label.startswith("pplx"):
            speed_up.append("no Pyro equivalent")
        elif label.startswith("pyro") and floor is not None:
            speed_up.append(f"at most {r['s/epoch'] / floor['s/epoch']:.2f}x (Pyro / hand)")
        else:
            speed_up.append("")
        keep = floor is not None and not label.startswith("hand")
        vs_hand.append(f"{r['s/epoch'] / floor['s/epoch']:.2f}" if keep else "")
    table["time / hand"] = vs_hand
    table["speed-up (Pyro s / pplx s)"] = speed_up
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print()
        print(table.round(3).to_string())
    ratios = sorted((x, label, name) for label, found in pairs.items() for x, name in found)
    if ratios:
        (worst, w_pplx, w_pyro), (best, b_pplx, b_pyro) = ratios[0], ratios[-1]
        print(
            f"\nspeed-up pplx vs Pyro: from {worst:.2f}x ({w_pplx} vs {w_pyro}) to {best:.2f}x "
            f"({b_pplx} vs {b_pyro})."
        )
        below = [r for r in ratios if r[0] < 5.0]
        if below:
            print(
                f"TARGET NOT MET: {len(below)} of {len(ratios)} pplx-vs-Pyro ratios are below "
                "the issue's 5x target (the measured ratios are printed above)."
            )
            ceilings = sorted(
                {
                    (
                        next(p for p in rows if p["method"] == name)["s/epoch"]
                        / hand[group_of[name]]["s/epoch"],
                        name,
                    )
                    for _, _, name in below
                    if group_of[name] in hand
                }
            )
            for ceiling, name in ceilings:
                if ceiling < 5.0:
                    print(
                        f"  {name}: even hand-written PyTorch is only {ceiling:.2f}x faster, "
                        "so 5x is out of reach for this row at this model size."
                    )
        else:
            print("every pplx-vs-Pyro ratio meets the issue's 5x target.")
    k = args.particles
    values = NUM_CLASSES if args.model == "digits" else ObjectCountVAE().max_objects + 1
    print(
        "Notes:\n"
        "* Pyro's RenyiELBO gives the non-reparameterisable discrete site no score-function "
        "term at alpha=0 (its guide parameters get exactly zero gradient: that site is never "
        "trained) and "
        "weights the whole minibatch jointly; pplx IWAE/VIMCO(local_plate='data') weight "
        "each image and give the guide an unbiased gradient. The closest Pyro row, not the "
        "same estimator.\n"
        "* Pyro's TraceGraph_ELBO has no leave-one-out baseline: its K-particle rows use the "
        "decaying-average baseline.\n"
        f"* IWAE(local)+MVD forces the K = {k} particles of every image one at a time and all "
        f"images at once ({k} x {values} branches of the program per step, in one batched "
        "re-execution); ELBO+MVD forces all draws at once.\n"
    )


if __name__ == "__main__":
    main()
