"""Time per SVGD step: pplx vs ``pyro.infer.SVGD`` vs the same update hand-written in PyTorch.

Bayesian logistic regression on synthetic data (N = 1,000, D = 20, w ~ N(0, I)), RBF kernel
with the median heuristic, Adagrad. pplx runs the Pyro model through its vectorized potential,
eagerly and JIT-compiled; Pyro runs the same model with its own SVGD (per-dimension
bandwidths, its ``pyro.optim`` Adagrad); the hand-written version computes the log density,
its gradient, the kernel and the update directly. All are timed in this one run.

    python benchmarks/svgd_logistic.py [--steps 50] [--particles 50 200 1000]
"""

import argparse
import math
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVGD as PyroSVGD
from pyro.infer import RBFSteinKernel
from timing import ms_per_call

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

    def step():
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            log_p = -0.5 * (zz * zz).sum(-1)
            log_p = log_p + torch.distributions.Bernoulli(logits=zz @ x.T).log_prob(y).sum(-1)
            (score,) = torch.autograd.grad(log_p.sum(), zz)
        with torch.no_grad():
            x2 = (z * z).sum(-1)
            d2 = (x2[:, None] - 2 * z @ z.T + x2[None, :]).clamp_min(0)
            off = d2[~torch.eye(n, dtype=torch.bool)]
            h = off.median() / math.log(n + 1)
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
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    x = torch.randn(N, D)
    y = torch.bernoulli(torch.sigmoid(x @ torch.randn(D)))
    lr = 0.1
    print(f"SVGD step, logistic regression N={N}, D={D}, float32, CPU, {args.steps} steps")
    header = f"{'particles':>9} {'hand ms':>9} {'pplx':>7} {'pplx jit':>9} {'pyro':>7}"
    print(header + "   (pplx, pplx jit, pyro: ratio to hand-written)")
    for num in args.particles:
        pyro.clear_param_store()
        particles = torch.randn(num, D) * 0.1
        hand = ms_per_call(hand_written(x, y, particles, lr), args.steps)
        eager = ms_per_call(pplx_svgd(x, y, particles, lr, jit=False), args.steps)
        jit = ms_per_call(pplx_svgd(x, y, particles, lr, jit=True), args.steps)
        ref = ms_per_call(pyro_svgd(x, y, particles, lr), args.steps)
        print(
            f"{num:>9} {hand:>9.3f} {eager / hand:>6.2f}x {jit / hand:>8.2f}x {ref / hand:>6.2f}x"
        )


if __name__ == "__main__":
    main()
