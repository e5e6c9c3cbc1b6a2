"""Shared pieces of the unbiasedness tests of ``pplx.estimators`` and ``pplx.objectives``.

Small models whose objectives and gradients are known exactly, and the helpers that compare N
independent gradient estimates with an exact gradient: 4 Monte Carlo standard errors,
SE = std / sqrt(N), in the unconstrained parameters (``pyro.param(name).unconstrained()``).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from torch.distributions import transform_to

from pplx.estimators import Learned

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def t(*values):
    """A float64 tensor (a scalar for one value)."""
    return torch.tensor(values[0] if len(values) == 1 else values, dtype=F64)


def fresh(value):
    """A copy of a module-level initial value for ``pyro.param``.

    Pyro makes the tensor it is given the parameter's leaf (and sets ``requires_grad`` on it):
    a shared tensor would carry that state from one test into the next.
    """
    return value.detach().clone()


def init_params(model, guide, *args):
    """Create the guide's and the model's parameters (one blocked run of each)."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args)
        poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)


def gradient_samples(objective_, model, guide, names, num, *args):
    """``num`` independent (loss value, loss gradient) estimates.

    The gradient is with respect to the unconstrained parameters ``names``, flattened and
    concatenated; a parameter the loss does not reach gets a zero gradient.
    """
    init_params(model, guide, *args)
    leaves = [pyro.param(name).unconstrained() for name in names]
    values, grads = [], []
    for _ in range(num):
        loss = objective_.differentiable_loss(model, guide, *args)
        grad = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(leaf)).reshape(-1)
                    for g, leaf in zip(grad, leaves)
                ]
            )
        )
        values.append(loss.detach())
    return torch.stack(values), torch.stack(grads)


def exact_loss_and_grad(loss_fn, inits):
    """``loss_fn(**constrained)`` and its gradient in the unconstrained parameters.

    Args:
        loss_fn: The exact loss as a function of the constrained parameter values.
        inits: Name to ``(constrained value, constraint)``, in the order of the gradient.
    """
    leaves = {
        name: transform_to(c).inv(v.to(F64)).detach().requires_grad_()
        for name, (v, c) in inits.items()
    }
    values = {name: transform_to(inits[name][1])(leaf) for name, leaf in leaves.items()}
    loss = loss_fn(**values)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    flat = torch.cat(
        [
            (g if g is not None else torch.zeros_like(leaf)).reshape(-1)
            for g, leaf in zip(grads, leaves.values())
        ]
    )
    return loss.detach(), flat


def assert_unbiased(samples, exact, atol=1e-9, num_se=4.0):
    """|mean - exact| < num_se * SE + atol for every coordinate."""
    samples = samples.reshape(samples.shape[0], -1)
    exact = torch.as_tensor(exact, dtype=F64).reshape(-1)
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    ok = (mean - exact).abs() <= num_se * se + atol
    assert bool(ok.all()), f"mean {mean.tolist()} vs exact {exact.tolist()} (SE {se.tolist()})"


def gauss_hermite(num_nodes, dims):
    """Nodes ``(P, dims)`` and weights ``(P,)`` integrating against a standard normal."""
    x, w = np.polynomial.hermite_e.hermegauss(num_nodes)
    x, w = torch.tensor(x, dtype=F64), torch.tensor(w / w.sum(), dtype=F64)
    nodes = torch.stack([g.reshape(-1) for g in torch.meshgrid(*[x] * dims, indexing="ij")], -1)
    weights = torch.stack(
        [g.reshape(-1) for g in torch.meshgrid(*[w] * dims, indexing="ij")], -1
    ).prod(-1)
    return nodes, weights


def logmeanexp(x):
    """log of the mean of exp over the last dimension (the particles)."""
    return torch.logsumexp(x, -1) - math.log(x.shape[-1])


# ------------------------------------------------------------------ Bernoulli latent, Gaussian
# z ~ Bernoulli(0.4), x ~ N(-0.5 + delta z, 1) with a model parameter delta; guide q(z) =
# Bernoulli(p). Every objective is a finite sum over z in {0, 1} (per particle).

X_B = t(1.2)
PRIOR_B = 0.4
INITS_B = {"p": (t(0.3), constraints.unit_interval), "delta": (t(0.7), constraints.real)}


def bernoulli_model(x):
    delta = pyro.param("delta", fresh(INITS_B["delta"][0]))
    z = pyro.sample("z", dist.Bernoulli(t(PRIOR_B)))
    pyro.sample("x", dist.Normal(-0.5 + delta * z, 1.0), obs=x)


def bernoulli_guide(strategy=None):
    infer = {} if strategy is None else {"estimator": strategy}

    def guide(x):
        p = pyro.param("p", fresh(INITS_B["p"][0]), constraint=constraints.unit_interval)
        pyro.sample("z", dist.Bernoulli(p), infer=infer)

    return guide


def linear_baseline():
    return Learned(torch.nn.Linear(1, 1).double(), inputs=lambda x: (x.reshape(1),))


# ------------------------------------------------------------------ Normal latent
# z ~ N(0, 1), x ~ N(w z, 1); guide q(z) = N(m, s).

X_N = t(1.5)
INITS_N = {
    "m": (t(0.3), constraints.real),
    "s": (t(0.8), constraints.positive),
    "w": (t(0.8), constraints.real),
}


def normal_model(x):
    w = pyro.param("w", fresh(INITS_N["w"][0]))
    z = pyro.sample("z", dist.Normal(t(0.0), 1.0))
    pyro.sample("x", dist.Normal(w * z, 1.0), obs=x)


def normal_guide(strategy=None):
    infer = {} if strategy is None else {"estimator": strategy}

    def guide(x):
        m = pyro.param("m", fresh(INITS_N["m"][0]))
        s = pyro.param("s", fresh(INITS_N["s"][0]), constraint=constraints.positive)
        pyro.sample("z", dist.Normal(m, s), infer=infer)

    return guide


# ------------------------------------------------------------------ Categorical latent
# z ~ Categorical(PRIOR_C), x ~ N(MU_C[z], 1); guide q(z) = Categorical(probs).

X_C = t(1.3)
MU_C = t(-1.0, 0.5, 2.0)
PRIOR_C = t(0.2, 0.5, 0.3)
INITS_C = {"probs": (t(0.5, 0.2, 0.3), constraints.simplex)}


def categorical_model(x):
    z = pyro.sample("z", dist.Categorical(PRIOR_C))
    pyro.sample("x", dist.Normal(MU_C[z], 1.0), obs=x)


def categorical_guide(strategy):
    def guide(x):
        probs = pyro.param("probs", fresh(INITS_C["probs"][0]), constraint=constraints.simplex)
        pyro.sample("z", dist.Categorical(probs), infer={"estimator": strategy})

    return guide
