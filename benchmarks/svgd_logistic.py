"""Time per SVGD step: pplx vs ``pyro.infer.SVGD`` vs the same update hand-written in PyTorch.

Bayesian logistic regression on synthetic data (N = 1,000, D = 20, w ~ N(0, I)), RBF kernel
with the median heuristic, Adagrad. pplx runs the Pyro model through its vectorized potential,
eagerly (``jit=False``) and as the default captured graph (``jit=None``); Pyro runs the same
model with its own SVGD (per-dimension bandwidths, its ``pyro.optim`` Adagrad); the
hand-written version computes the log density, its gradient, the kernel and the update
directly. All are timed in this one run, in
interleaved rounds (the fastest round of each).

    python benchmarks/svgd_logistic.py [--steps 50] [--rounds 10] [--particles 50 200 1000]
"""

import argparse
import math
import warnings

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVGD as PyroSVGD
from pyro.infer import RBFSteinKernel
from timing import interleaved_ms

from pplx.inference import SVGD, RBFKernel

N, D = 1000, 20


def model(x, y):
    w = pyro.sample("w", dist.Normal(x.new_zeros(D), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        logits = w @ x.T
        if w.dim() > 1:
            logits = logits.squeeze(-2)
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=y)


def hand_written(x, y, particles, lr):
    z = particles.clone().requires_grad_(True)
    opt = torch.optim.Adagrad([z], lr=lr)
    n = z.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1)  # pairs i < j, for the median

    def step():
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            logits = zz @ x.T
            log_p = -0.5 * (zz * zz).sum() - F.binary_cross_entropy_with_logits(
                logits, y.expand_as(logits), reduction="sum"
            )
            (score,) = torch.autograd.grad(log_p, zz)
        with torch.no_grad():
            x2 = (z * z).sum(-1)
            d2 = (x2[:, None] - 2 * z @ z.T + x2[None, :]).clamp_min(0)
            h = d2[rows, cols].median() / math.log(n + 1)
            k = torch.exp(-d2 / h)
            phi = (k @ score + (2 / h) * (z * k.sum(1, keepdim=True) - k @ z)) / n
        opt.zero_grad(set_to_none=True)
        z.grad = -phi
        opt.step()

    return step


def pplx_svgd(x, y, particles, lr, jit):
    svgd = SVGD(
        model,
        kernel=RBFKernel(),
        num_particles=particles.shape[0],
        optim_args={"lr": lr},
        init=particles,
        jit=jit,
        progress_bar=False,
    )
    state = svgd.init(x, y)
    return lambda: svgd.step(state, x, y)


def pyro_svgd(x, y, particles, lr):
    svgd = PyroSVGD(
        model,
        RBFSteinKernel(),
        pyro.optim.Adagrad({"lr": lr}),
        num_particles=particles.shape[0],
        max_plate_nesting=1,
    )
    svgd.step(x, y)  # creates the particles
    return lambda: svgd.step(x, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--particles", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    x = torch.randn(N, D)
    y = torch.bernoulli(torch.sigmoid(x @ torch.randn(D)))
    lr = 0.1
    print(
        f"SVGD step, logistic regression N={N}, D={D}, float32, CPU "
        f"({torch.get_num_threads()} threads), {args.steps} steps x {args.rounds} rounds"
    )
    header = f"{'particles':>9} {'hand ms':>9} {'eager':>7} {'pplx':>7} {'pyro':>7}"
    print(header + "   (ratios to hand-written; pplx: the default, captured graph)")
    for num in args.particles:
        pyro.clear_param_store()
        particles = torch.randn(num, D) * 0.1
        times = interleaved_ms(
            {
                "hand": hand_written(x, y, particles, lr),
                "eager": pplx_svgd(x, y, particles, lr, jit=False),
                "jit": pplx_svgd(x, y, particles, lr, jit=None),
                "pyro": pyro_svgd(x, y, particles, lr),
            },
            args.steps,
            rounds=args.rounds,
        )
        hand, eager, jit, ref = (times[k] for k in ("hand", "eager", "jit", "pyro"))
        print(
            f"{num:>9} {hand:>9.3f} {eager / hand:>6.2f}x {jit / hand:>6.2f}x {ref / hand:>6.2f}x"
        )


if __name__ == "__main__":
    main()
