"""Time per SGLD step on a Pyro model vs hand-written PyTorch vs ``posteriors``; ESS/s vs NUTS.

Part 1: Bayesian linear regression, N = 10,000, D = 50, minibatches of 100, noise sd 1,
w ~ N(0, I). pplx runs the Pyro model (``pyro.plate(..., subsample_size=100)`` draws the
minibatch and scales the likelihood by N/B); the hand-written update draws the minibatch the
same way and differentiates the same log density with autograd; ``posteriors.sgmcmc.sgld``
(optional: ``pip install posteriors``) gets the same log posterior as a plain function.
Times are per step for one chain, and for 16 chains (pplx and hand-written only: chains are a
batch dimension), once with one minibatch shared by all chains and once with a minibatch per
chain (pplx's default: the chains stay independent; pplx evaluates the model under
``torch.func.vmap`` over chains, the hand-written step gathers ``(chains, B, D)`` rows).
Part 2: bulk ESS per second of SGLD and SGHMC against Pyro NUTS on the
breast-cancer logistic regression. Everything is measured in this one run.

    python benchmarks/sgld_linear.py [--steps 300] [--skip-ess]
"""

import argparse
import warnings

import pyro
import pyro.distributions as dist
import torch
from timing import ms_per_call

from pplx.inference import NUTS, SGHMC, SGLD
from pplx.inference.workflow import logistic_problem

N, D, B = 10_000, 50, 100


def model(x, y):
    w = pyro.sample("w", dist.Normal(x.new_zeros(D), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=B) as idx:
        mean = w @ x[idx].T
        if w.dim() > 1:
            mean = mean.squeeze(-2)
        pyro.sample("obs", dist.Normal(mean, 1.0), obs=y[idx])


def hand_written(x, y, chains, step_size, per_chain=False):
    w = torch.zeros(chains, D)

    def step():
        nonlocal w
        if per_chain:  # (chains, B) indices, drawn with replacement: the cheapest fair draw
            idx = torch.randint(N, (chains, B))
        else:
            idx = torch.randperm(N)[:B]
        with torch.enable_grad():
            ww = w.detach().requires_grad_(True)
            log_p = torch.distributions.Normal(0.0, 1.0).log_prob(ww).sum(-1)
            if per_chain:
                mean = (x[idx] @ ww.unsqueeze(-1)).squeeze(-1)  # (chains, B)
            else:
                mean = ww @ x[idx].T
            lik = torch.distributions.Normal(mean, 1.0).log_prob(y[idx]).sum(-1)
            (grad,) = torch.autograd.grad((log_p + (N / B) * lik).sum(), ww)
        w = w + 0.5 * step_size * grad + step_size**0.5 * torch.randn_like(w)

    return step


def pplx_sgld(x, y, chains, step_size, jit=False, minibatches=None):
    sampler = SGLD(
        model,
        step_size,
        init=torch.zeros(chains, D),
        jit=jit,
        minibatches=minibatches,
        progress_bar=False,
    )
    state = sampler.init(x, y, num_chains=chains)
    return lambda: sampler.step(state, x, y)


def posteriors_sgld(x, y, step_size):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import posteriors
    except ImportError:
        return None

    def log_posterior(w, batch):
        xb, yb = batch
        log_p = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum()
        lik = torch.distributions.Normal(xb @ w, 1.0).log_prob(yb).sum()
        value = log_p + (N / B) * lik
        return value, value

    # posteriors' convention: theta += lr * grad + N(0, 2 lr), i.e. lr = step_size / 2 here
    transform = posteriors.sgmcmc.sgld.build(log_posterior, lr=step_size / 2)
    state = transform.init(torch.zeros(D))

    def step():
        nonlocal state
        idx = torch.randperm(N)[:B]
        state, _ = transform.update(state, (x[idx], y[idx]))

    return step


def ess_per_second():
    problem = logistic_problem(torch.device("cpu"), torch.float64)
    rows = []
    pyro.set_rng_seed(0)
    nuts = NUTS(problem.model, progress_bar=False).run(
        *problem.args, num_samples=500, warmup_steps=500
    )
    rows.append(("NUTS (Pyro)", nuts))
    for label, sampler in (
        ("SGLD, B=64", SGLD(problem.model, 2e-3, progress_bar=False)),
        ("SGHMC, B=64", SGHMC(problem.model, 2e-4, friction=0.1, progress_bar=False)),
    ):
        pyro.set_rng_seed(0)
        result = sampler.run(
            *problem.args, num_samples=1000, warmup_steps=1000, num_chains=4, subsample_size=64
        )
        rows.append((label, result))
    print("\nBulk ESS per second, breast-cancer logistic regression (31 parameters, float64)")
    print(f"{'engine':<14} {'min ESS':>8} {'median ESS':>11} {'seconds':>8} {'min ESS/s':>10}")
    for label, result in rows:
        ess = torch.cat([v.reshape(-1) for v in result.effective_sample_size().values()])
        print(
            f"{label:<14} {ess.min():8.1f} {ess.median():11.1f} {result.wall_time:8.1f} "
            f"{ess.min() / result.wall_time:10.2f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-ess", action="store_true", help="only the timing table")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(N, D)
    y = x @ torch.randn(D) + torch.randn(N)
    step_size = 1e-5
    print(f"SGLD step, linear regression N={N}, D={D}, B={B}, float32, CPU, {args.steps} steps")
    print(
        f"{'chains':>6} {'minibatches':>11} {'hand ms':>8} {'pplx':>7} {'pplx jit':>9} "
        f"{'posteriors':>11}  (ratio to hand-written)"
    )
    for chains, mode in ((1, "-"), (16, "shared"), (16, "per_chain")):
        per_chain = mode == "per_chain"
        hand = ms_per_call(hand_written(x, y, chains, step_size, per_chain), args.steps)
        minibatches = None if mode == "-" else mode
        ours = ms_per_call(pplx_sgld(x, y, chains, step_size, False, minibatches), args.steps)
        ours_jit = ms_per_call(pplx_sgld(x, y, chains, step_size, True, minibatches), args.steps)
        other = posteriors_sgld(x, y, step_size) if chains == 1 else None
        other_cell = "n/a" if other is None else f"{ms_per_call(other, args.steps) / hand:.2f}x"
        print(
            f"{chains:>6} {mode:>11} {hand:8.3f} {ours / hand:6.2f}x {ours_jit / hand:8.2f}x "
            f"{other_cell:>11}"
        )
    if not args.skip_ess:
        ess_per_second()


if __name__ == "__main__":
    main()
