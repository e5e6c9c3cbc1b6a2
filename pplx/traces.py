"""Trace utilities shared by objectives and engines.

Pyro programs are inspected through traces. These helpers answer the questions every engine asks
before it starts (which sites are latent, how deep the plates go) and run a program with a
vectorized *particle plate* to the left of the model's own plates, so that ``S`` draws cost one
execution instead of ``S`` (ARCHITECTURE.md: "particles are a plate").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

PARTICLE_PLATE = "_pplx_particles"


@dataclass(frozen=True)
class SiteInfo:
    """Static description of one sample site, read off a single trace.

    Attributes:
        name: The site name.
        shape: The value's shape without any particle dimension.
        event_dim: Number of rightmost dimensions that belong to the event.
        observed: Whether the site is conditioned on data.
        discrete: Whether the site's distribution has a discrete support.
        support: The distribution's support constraint.
    """

    name: str
    shape: torch.Size
    event_dim: int
    observed: bool
    discrete: bool
    support: Any


def sample_sites(trace: poutine.Trace) -> dict[str, dict]:
    """Return the non-auxiliary sample sites of a trace, in execution order."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and not site["infer"].get("is_auxiliary", False)
        and not site["infer"].get("_do_not_trace", False)
    }


def is_data(site: dict) -> bool:
    """Whether a sample site observes data (``pyro.deterministic`` sites do not count)."""
    return bool(site["is_observed"]) and not site["infer"].get("_deterministic", False)


def site_infos(trace: poutine.Trace) -> dict[str, SiteInfo]:
    """Describe every (non-auxiliary) sample site of ``trace``."""
    infos = {}
    for name, site in sample_sites(trace).items():
        fn = site["fn"]
        support = getattr(fn, "support", None)
        infos[name] = SiteInfo(
            name=name,
            shape=site["value"].shape,
            event_dim=fn.event_dim if hasattr(fn, "event_dim") else 0,
            observed=is_data(site),
            discrete=bool(getattr(support, "is_discrete", False)),
            support=support,
        )
    return infos


def trace_program(fn: Callable, *args: Any, **kwargs: Any) -> poutine.Trace:
    """Run ``fn`` once under a trace and return the trace."""
    return poutine.trace(fn).get_trace(*args, **kwargs)


def max_plate_nesting(*traces: poutine.Trace) -> int:
    """Number of batch dimensions the plates in ``traces`` use (Pyro's ``max_plate_nesting``)."""
    depth = 0
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    depth = max(depth, -frame.dim)
            fn = site["fn"]
            batch_shape = getattr(fn, "batch_shape", ())
            depth = max(depth, len(batch_shape))
    return depth


def particle_plate(num_particles: int, plate_nesting: int) -> pyro.plate:
    """The plate that holds ``num_particles`` independent executions as one batch dimension."""
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=-plate_nesting - 1)


def to_particle_layout(value: torch.Tensor, info: SiteInfo, plate_nesting: int) -> torch.Tensor:
    """Reshape draws ``(S, *shape)`` into the layout a site has inside the particle plate.

    Inside the particle plate a site's value has shape ``(S, 1, ..., 1, *shape)`` with enough
    singleton dimensions that the particle dimension sits left of every model plate.
    """
    batch_ndim = len(info.shape) - info.event_dim
    pad = plate_nesting - batch_ndim
    if pad < 0:
        raise ValueError(
            f"site {info.name!r} has {batch_ndim} batch dimensions but the model's plates "
            f"only account for {plate_nesting}; declare its batch dimensions with pyro.plate "
            "or move them into the event with .to_event()."
        )
    num = value.shape[0]
    return value.reshape((num,) + (1,) * pad + tuple(info.shape))


def from_particle_layout(value: torch.Tensor, shape: torch.Size, num: int) -> torch.Tensor:
    """Inverse of :func:`to_particle_layout`: return ``(S, *shape)``."""
    shape = tuple(shape)
    if value.dim() <= len(shape):  # the value does not vary across particles
        return value.expand((num,) + shape)
    if value.shape[0] == 1 and num > 1:
        value = value.expand((num,) + value.shape[1:])
    return value.reshape((num,) + shape)


def vectorized_trace(
    fn: Callable,
    num_particles: int,
    plate_nesting: int,
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
) -> poutine.Trace:
    """Trace ``num_particles`` executions of ``fn`` at once, inside a particle plate."""
    kwargs = dict(kwargs or {})

    def batched(*a: Any, **k: Any) -> Any:
        with particle_plate(num_particles, plate_nesting):
            return fn(*a, **k)

    return poutine.trace(batched).get_trace(*args, **kwargs)


def per_particle_sum(log_prob: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Sum a site's log-density over everything but the particle dimension, giving ``(S,)``."""
    if log_prob.dim() == 0 or log_prob.shape[0] != num_particles:
        # A site whose log-density does not depend on the particle: broadcast.
        return log_prob.sum().expand(num_particles)
    return log_prob.reshape(num_particles, -1).sum(-1)


def warn_fallback(what: str, error: Exception) -> None:
    """Warn that a vectorized evaluation failed and a sequential loop is used instead."""
    warnings.warn(
        f"{what}: the program could not be vectorized over draws ({type(error).__name__}: "
        f"{error}); falling back to one execution per draw, which is slower. Make the model "
        "broadcast over a batch dimension left of its plates to avoid this.",
        RuntimeWarning,
        stacklevel=3,
    )
