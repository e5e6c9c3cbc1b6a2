"""A small Bayesian neural network on the breast-cancer data: SGLD, pSGLD, SGHMC, structured.

A one-hidden-layer tanh network (30 -> 16 -> 1, 513 weights, N(0, 1) priors) classifies the
Wisconsin breast-cancer tumours (scikit-learn's bundled copy, standardised; 400 for training,
169 held out). Every sampler runs 4 chains on minibatches of 64 from the same starting point (a
short MAP fit plus jitter) and the table reports, on the held-out data: accuracy of the
posterior predictive mean, mean log predictive density, and the bulk effective sample size of
the predictive probabilities (mean over test points; weights themselves are not identifiable,
so their ESS says little; the chains share minibatches, which makes cross-chain ESS optimistic).
Structured SGLD (Alexos, Boyd & Mandt 2022) groups the weights by layer, so each layer is
updated against draws of the other layer from its recent past (S-SGLD-d: its dropout variant).

    python examples/sgld_bnn.py [--quick] [--out DIR]
"""

import argparse
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.stats import effective_sample_size

from pplx.datasets import breast_cancer
from pplx.inference import PSGLD, SGHMC, SGLD, Potential
from pplx.inference.structured import StructuredSGLD

HIDDEN = 16


def bnn(x, y=None, subsample_size=None):
    """Bernoulli likelihood with logits w2 . tanh(W1^T x + b1) + b2, standard normal priors."""
    num_features = x.shape[1]
    zeros = x.new_zeros
    w1 = pyro.sample("w1", dist.Normal(zeros(num_features, HIDDEN), 1.0).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(zeros(HIDDEN), 1.0).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(zeros(HIDDEN), 1.0).to_event(1))
    b2 = pyro.sample("b2", dist.Normal(zeros(()), 1.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as idx:
        # inside the chain batch w1 is (C, 1, D, H) and b1, w2 are (C, 1, H): the 1 is the
        # data plate's place, so these products broadcast to (C, B, H)
        hidden = torch.tanh((x[idx].unsqueeze(-1) * w1).sum(-2) + b1)
        logits = (hidden * w2).sum(-1) + b2
        return pyro.sample("obs", dist.Bernoulli(logits=logits), obs=None if y is None else y[idx])


def predictive_logits(samples, x):
    """Logits ``(C, S, N)`` of every draw on inputs ``x``."""
    hidden = torch.tanh(
        torch.einsum("nd,csdh->csnh", x, samples["w1"]) + samples["b1"][:, :, None]
    )
    return torch.einsum("csnh,csh->csn", hidden, samples["w2"]) + samples["b2"][..., None]


def evaluate(result, x, y):
    """Held-out accuracy, mean log predictive density and predictive ESS of a result."""
    logits = predictive_logits(result.get_samples(group_by_chain=True), x)
    log_lik = dist.Bernoulli(logits=logits).log_prob(y)  # (C, S, N)
    draws = log_lik.shape[0] * log_lik.shape[1]
    log_pred = torch.logsumexp(log_lik.reshape(draws, -1), 0) - math.log(draws)
    prob = torch.sigmoid(logits)
    accuracy = ((prob.mean((0, 1)) > 0.5).to(y) == y).double().mean()
    ess = effective_sample_size(prob, chain_dim=0, sample_dim=1)
    return float(accuracy), float(log_pred.mean()), float(ess.mean()), log_lik


def map_start(x, y, chains, steps, seed):
    """A short full-batch MAP fit in unconstrained space, then small jitter per chain."""
    potential = Potential(bnn, (x, y))
    generator = torch.Generator().manual_seed(seed)
    z = (0.1 * torch.randn(1, potential.dim, generator=generator, dtype=x.dtype)).requires_grad_()
    optimizer = torch.optim.Adam([z], lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        (-potential.log_density(z).sum()).backward()
        optimizer.step()
    jitter = 0.01 * torch.randn(chains, potential.dim, generator=generator, dtype=x.dtype)
    return (z.detach() + jitter).contiguous()


def samplers(init):
    """Name -> sampler, all started at ``init``.

    SGLD and structured SGLD share a step size; SGHMC's is matched to it (with friction a,
    SGHMC moves like SGLD with step 2 eta / a); pSGLD's step is in preconditioned units. All
    are well inside the stable range (none diverges at 4x).
    """
    common = {"init": init, "jit": True}
    layers = {"hidden": ["w1", "b1"], "output": ["w2", "b2"]}
    buffer = {"buffer_size": 200, "buffer_thinning": 5}
    return {
        "SGLD": SGLD(bnn, step_size=1e-2, **common),
        "pSGLD": PSGLD(bnn, step_size=5e-2, **common),
        "SGHMC": SGHMC(bnn, step_size=5e-4, friction=0.1, **common),
        "S-SGLD": StructuredSGLD(bnn, groups=layers, step_size=1e-2, **buffer, **common),
        "S-SGLD-d": StructuredSGLD(
            bnn,
            groups=layers,
            step_size=1e-2,
            dropout=0.5,
            num_buffer_samples=2,
            **buffer,
            **common,
        ),
    }


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (sizes, curve) in curves.items():
        ax.plot(sizes, curve, label=name)
    ax.set_xlabel("draws per chain")
    ax.set_ylabel("held-out mean log predictive density")
    ax.set_title("Bayesian neural network, breast cancer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def running_log_pred(log_lik):
    """Mean log predictive density of the first s draws of every chain: ``(s values, curve)``."""
    chains, draws, _ = log_lik.shape
    sizes = list(range(1, draws + 1, max(1, draws // 100)))
    curve = []
    for s in sizes:
        flat = log_lik[:, :s].reshape(chains * s, -1)
        curve.append(float((torch.logsumexp(flat, 0) - math.log(chains * s)).mean()))
    return torch.tensor(sizes), torch.tensor(curve)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for a plot (optional)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    data = breast_cancer(dtype=torch.float64)
    order = torch.randperm(len(data.y), generator=torch.Generator().manual_seed(args.seed))
    train, test = order[:400], order[400:]
    x, y = data.x[train], data.y[train]
    chains = 4
    warmup, draws = (300, 300) if args.quick else (2000, 2000)
    init = map_start(x, y, chains, 150 if args.quick else 500, args.seed)

    header = ("sampler", "step", "test acc", "test lpd", "pred ESS", "time")
    widths = (9, 8, 9, 9, 9, 7)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    curves = {}
    for name, sampler in samplers(init).items():
        pyro.set_rng_seed(args.seed)
        result = sampler.run(x, y, 64, num_samples=draws, warmup_steps=warmup, num_chains=chains)
        accuracy, lpd, ess, log_lik = evaluate(result, data.x[test], data.y[test])
        step = float(result.sample_stats["step_size"][0, 0])
        print(
            f"{name:>9} {step:8.0e} {accuracy:9.3f} {lpd:9.3f} {ess:9.1f} {result.wall_time:6.1f}s"
        )
        curves[name] = running_log_pred(log_lik)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot(curves, out / "sgld_bnn.png")
        print(f"plot written to {out / 'sgld_bnn.png'}")


if __name__ == "__main__":
    main()
