"""Workflow entries for the engines that ship with pplx: NUTS (reference), SVI, Stein, SG-MCMC."""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from torch.optim.lr_scheduler import LambdaLR

from pplx.inference.mcmc import NUTS
from pplx.inference.registry import FitConfig, Problem, register_engine
from pplx.inference.results import Result
from pplx.inference.sgmcmc import SGHMC, SGLD
from pplx.inference.stein import SVGD, SVNG
from pplx.inference.svi import SVI
from pplx.objectives import IWAE
from pplx.traces import max_plate_nesting, trace_program


@register_engine("nuts", "Pyro NUTS (the reference): 2 chains, adaptive step size", True)
def fit_nuts(problem: Problem, config: FitConfig) -> Result:
    """Pyro's NUTS with JIT; quick mode uses 1 chain and 300 warm-up steps."""
    chains = 1 if config.quick else 2
    per_chain = max(1, config.num_samples // chains)
    warmup = 300 if config.quick else 1000
    sampler = NUTS(problem.model, num_chains=chains, progress_bar=config.progress_bar)
    return sampler.run(*problem.args, num_samples=per_chain, warmup_steps=warmup, **problem.kwargs)


def _fit_svi(problem: Problem, config: FitConfig, name: str, guide, loss) -> Result:
    """Adam at lr 0.05 decaying as 1 / (1 + 10 t / T) over the T steps of the fit."""
    steps = 800 if config.quick else 3000
    svi = SVI(
        problem.model,
        guide,
        loss=loss,
        optim_args={"lr": 0.05},
        lr_scheduler=lambda opt: LambdaLR(opt, lambda t: 1.0 / (1.0 + 10.0 * t / steps)),
        progress_bar=config.progress_bar,
        name=name,
    )
    return svi.run(
        *problem.args, num_steps=steps, num_samples=config.num_samples, **problem.kwargs
    )


@register_engine("svi-meanfield", "SVI, mean-field Normal guide (AutoNormal), Trace_ELBO, Adam")
def fit_svi_meanfield(problem: Problem, config: FitConfig) -> Result:
    """Mean-field SVI."""
    guide = AutoNormal(problem.model, init_scale=0.1)
    return _fit_svi(problem, config, "svi-meanfield", guide, Trace_ELBO())


@register_engine(
    "svi-fullrank", "SVI, full-rank Normal guide (AutoMultivariateNormal), Trace_ELBO, Adam"
)
def fit_svi_fullrank(problem: Problem, config: FitConfig) -> Result:
    """Full-rank Gaussian SVI."""
    guide = AutoMultivariateNormal(problem.model, init_scale=0.1)
    return _fit_svi(problem, config, "svi-fullrank", guide, Trace_ELBO())


@register_engine(
    "svi-iwae",
    "SVI, full-rank Normal guide, importance-weighted bound (pplx IWAE, 8 particles, DReG)",
)
def fit_svi_iwae(problem: Problem, config: FitConfig) -> Result:
    """Importance-weighted SVI with doubly reparameterised gradients (pplx.objectives.IWAE)."""
    guide = AutoMultivariateNormal(problem.model, init_scale=0.1)
    nesting = max_plate_nesting(trace_program(problem.model, *problem.args, **problem.kwargs))
    loss = IWAE(num_particles=8, dreg=True, max_plate_nesting=nesting)
    return _fit_svi(problem, config, "svi-iwae", guide, loss)


def _fit_stein(problem: Problem, config: FitConfig, engine_class: type[SVGD]) -> Result:
    """100 particles (a fixed budget: SVGD does not return more draws), Adagrad at lr 0.5."""
    sampler = engine_class(
        problem.model,
        num_particles=100,
        optimizer=torch.optim.Adagrad,
        optim_args={"lr": 0.5},
        progress_bar=config.progress_bar,
    )
    steps = 300 if config.quick else 1000
    return sampler.run(*problem.args, num_steps=steps, **problem.kwargs)


@register_engine("svgd", "SVGD, 100 particles, RBF kernel with median bandwidth, Adagrad")
def fit_svgd(problem: Problem, config: FitConfig) -> Result:
    """Stein variational gradient descent in the unconstrained space."""
    return _fit_stein(problem, config, SVGD)


@register_engine("svng", "Stein variational natural gradient: SVGD preconditioned by the Fisher")
def fit_svng(problem: Problem, config: FitConfig) -> Result:
    """SVGD with the averaged-Fisher preconditioned kernel."""
    return _fit_stein(problem, config, SVNG)


def _fit_sgmcmc(problem: Problem, config: FitConfig, sampler: SGLD) -> Result:
    """4 chains, a minibatch of 64 per chain through the model's own plate when it offers one."""
    kwargs = dict(problem.kwargs)
    if problem.subsample_kwarg is not None and problem.num_data > 64:
        kwargs[problem.subsample_kwarg] = 64
    chains = 4
    per_chain = max(1, config.num_samples // chains)
    warmup = 300 if config.quick else 1000
    return sampler.run(
        *problem.args,
        num_samples=per_chain,
        warmup_steps=warmup,
        num_chains=chains,
        thinning=2,
        **kwargs,
    )


@register_engine("sgld", "SGLD, 4 chains, a minibatch of 64 per chain, step size 2e-3")
def fit_sgld(problem: Problem, config: FitConfig) -> Result:
    """Stochastic gradient Langevin dynamics."""
    return _fit_sgmcmc(
        problem, config, SGLD(problem.model, 2e-3, progress_bar=config.progress_bar)
    )


@register_engine(
    "sghmc", "SGHMC, 4 chains, a minibatch of 64 per chain, step size 2e-4, friction 0.1"
)
def fit_sghmc(problem: Problem, config: FitConfig) -> Result:
    """Stochastic gradient Hamiltonian Monte Carlo."""
    sampler = SGHMC(problem.model, 2e-4, friction=0.1, progress_bar=config.progress_bar)
    return _fit_sgmcmc(problem, config, sampler)
