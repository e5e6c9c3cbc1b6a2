"""Per-step overhead of the pplx SVI engine vs Pyro's SVI vs the same update in plain PyTorch.

The computation: one reparameterised ELBO gradient step (one particle) of a mean-field Gaussian
guide for Bayesian logistic regression on the breast-cancer data (569 x 30), with Adam (the
hand-written step uses the fused kernel, as pplx SVI does by default). Pyro
and pplx run the same Pyro model and guide with Trace_ELBO; the hand-written version computes
the same ELBO with torch.distributions. All three are timed in this one run; the table prints
milliseconds per step and the ratio to hand-written.

    python benchmarks/svi_overhead.py [--steps 500] [--device cpu] [--dtype float32]
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal
from timing import ms_per_call

from pplx.datasets import breast_cancer
from pplx.inference import SVI
from pplx.models import logistic_regression


def hand_guide(x, y=None):
    num_features = x.shape[1]
    loc = pyro.param("loc", x.new_zeros(num_features + 1))
    scale = pyro.param(
        "scale", x.new_full((num_features + 1,), 0.1), constraint=dist.constraints.positive
    )
    pyro.sample("w", dist.Normal(loc[:-1], scale[:-1]).to_event(1))
    pyro.sample("b", dist.Normal(loc[-1], scale[-1]))


def handwritten(x, y, lr):
    d = x.shape[1] + 1
    loc = torch.zeros(d, dtype=x.dtype, device=x.device, requires_grad=True)
    raw_scale = torch.full((d,), 0.1, dtype=x.dtype, device=x.device).log().requires_grad_()
    opt = torch.optim.Adam([loc, raw_scale], lr=lr, fused=True)
    prior_scale = torch.ones(d, dtype=x.dtype, device=x.device)
    prior_scale[-1] = 5.0

    def step():
        opt.zero_grad(set_to_none=True)
        scale = raw_scale.exp()
        z = loc + scale * torch.randn_like(loc)
        w, b = z[:-1], z[-1]
        log_p = torch.distributions.Normal(0.0, prior_scale).log_prob(z).sum()
        log_p = log_p + torch.distributions.Bernoulli(logits=x @ w + b).log_prob(y).sum()
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum()
        loss = log_q - log_p
        loss.backward()
        opt.step()
        return loss

    return step


def pyro_svi(x, y, lr, guide):
    svi = pyro.infer.SVI(
        logistic_regression, guide, pyro.optim.Adam({"lr": lr}), pyro.infer.Trace_ELBO()
    )
    return lambda: svi.step(x, y)


def pplx_svi(x, y, lr, guide):
    svi = SVI(logistic_regression, guide, optim_args={"lr": lr}, progress_bar=False)
    state = svi.init(x, y)
    scope = svi.params_scope(state)
    scope.__enter__()  # the run loop enters the scope once; so does this benchmark
    return lambda: svi._step(state, (x, y), {})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    data = breast_cancer(dtype=dtype).to(args.device)
    x, y = data.x, data.y
    lr = 0.01

    rows = []
    pyro.set_rng_seed(0)
    rows.append(("hand-written PyTorch", ms_per_call(handwritten(x, y, lr), args.steps)))
    for label, make_guide in (("hand guide", lambda: hand_guide), ("AutoNormal", None)):
        for engine, build in (("Pyro SVI", pyro_svi), ("pplx SVI", pplx_svi)):
            pyro.clear_param_store()
            pyro.set_rng_seed(0)
            guide = make_guide() if make_guide else AutoNormal(logistic_regression)
            rows.append((f"{engine}, {label}", ms_per_call(build(x, y, lr, guide), args.steps)))
    base = rows[0][1]
    print(
        f"SVI step, logistic regression 569 x 30, {args.dtype}, {args.device}, {args.steps} steps"
    )
    print(f"{'implementation':<28} {'ms/step':>8} {'vs hand-written':>16}")
    for name, ms in rows:
        print(f"{name:<28} {ms:8.3f} {ms / base:15.2f}x")


if __name__ == "__main__":
    main()
