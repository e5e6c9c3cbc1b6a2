"""Objectives and strategies on every available device: values and gradients follow the inputs."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pplx.estimators as est
import pplx.objectives as po

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def model(x):
    z = pyro.sample("z", dist.Bernoulli(x.new_tensor(0.3)))
    loc = pyro.sample("loc", dist.Normal(x.new_tensor(0.0), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(2 * z + loc, 1.0), obs=x)


def guide(x):
    p = pyro.param("p", x.new_tensor(0.6), constraint=dist.constraints.unit_interval)
    m = pyro.param("m", x.new_tensor(0.1))
    pyro.sample("z", dist.Bernoulli(p))
    pyro.sample("loc", dist.Normal(m, 0.5))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "objective, strategy",
    [
        (po.ELBO(4), est.Reinforce("loo")),
        (po.ELBO(1), est.Enumerate()),
        (po.ELBO(4), est.MVD()),
        (po.IWAE(4), est.MVD()),
        (po.VIMCO(4), est.Reinforce()),
        (po.IWAE(4, dreg=True), est.Reinforce()),
        (po.RWS(4), est.Reinforce()),
    ],
    ids=["elbo-loo", "elbo-enum", "elbo-mvd", "iwae-mvd", "vimco", "dreg", "rws"],
)
def test_objective_runs_on_device(device, objective, strategy):
    x = torch.tensor([1.0, 1.5, 0.2], device=device)
    tagged = est.with_estimators(guide, {"z": strategy})
    loss = objective.differentiable_loss(model, tagged, x)
    assert loss.device.type == device and torch.isfinite(loss)
    grads = torch.autograd.grad(loss, [pyro.param("p").unconstrained(), pyro.param("m")])
    assert all(g.device.type == device and torch.isfinite(g).all() for g in grads)
