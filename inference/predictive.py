"""Evaluate a Pyro model on posterior draws: log-densities, pointwise log-likelihood, predictions.

All functions take draws as a dict ``site -> (S, *site_shape)`` and run the model once, with a
particle plate of size ``S`` left of the model's plates. A model that does not broadcast over
that dimension is evaluated once per draw instead, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from pplx.traces import (
    from_particle_layout,
    is_data,
    max_plate_nesting,
    per_particle_sum,
    sample_sites,
    site_infos,
    to_particle_layout,
    trace_program,
    vectorized_trace,
    warn_fallback,
)

Draws = Mapping[str, torch.Tensor]


def _num_draws(draws: Draws) -> int:
    sizes = {v.shape[0] for v in draws.values()}
    if len(sizes) != 1:
        raise ValueError(f"draws must share their leading (draw) dimension, got sizes {sizes}")
    return sizes.pop()


def _conditioned_traces(
    model: Callable, draws: Draws, args: tuple, kwargs: Mapping[str, Any], uncondition: bool
) -> tuple[list[poutine.Trace] | poutine.Trace, dict, int]:
    """Trace ``model`` conditioned on ``draws``: one vectorized trace, or a list (fallback)."""
    num = _num_draws(draws)
    program = poutine.uncondition(model) if uncondition else model
    first = {k: v[0] for k, v in draws.items()}
    trace0 = trace_program(poutine.condition(program, first), *args, **kwargs)
    infos = site_infos(trace0)
    unknown = sorted(set(draws) - set(infos))
    if unknown:
        raise ValueError(
            f"draws contain sites {unknown} that the model does not sample; "
            f"the model's sample sites are {sorted(infos)}"
        )
    enumerated = [
        name
        for name, site in sample_sites(trace0).items()
        if site["infer"].get("enumerate") and name not in draws and not site["is_observed"]
    ]
    if enumerated:
        raise ValueError(
            f"site(s) {enumerated} are marked for enumeration and have no draws; evaluating the "
            "model on posterior draws would sample them instead of summing them out. Pass "
            "draws for them (e.g. from pyro.infer.infer_discrete) to compute log-densities."
        )
    nesting = max_plate_nesting(trace0)
    try:
        layout = {k: to_particle_layout(v, infos[k], nesting) for k, v in draws.items()}
        trace = vectorized_trace(poutine.condition(program, layout), num, nesting, args, kwargs)
        trace.compute_log_prob()
        return trace, infos, num
    except (RuntimeError, ValueError, IndexError) as error:
        warn_fallback("evaluating the model on posterior draws", error)
    traces = []
    for i in range(num):
        one = {k: v[i] for k, v in draws.items()}
        trace = trace_program(poutine.condition(program, one), *args, **kwargs)
        trace.compute_log_prob()
        traces.append(trace)
    return traces, infos, num


def _collect(
    traces: list[poutine.Trace] | poutine.Trace,
    num: int,
    pick: Callable[[dict], torch.Tensor | None],
) -> dict[str, torch.Tensor]:
    """Gather ``pick(site)`` per site as ``(S, ...)`` from a vectorized trace or a list."""
    if isinstance(traces, poutine.Trace):
        out = {}
        for name, site in sample_sites(traces).items():
            value = pick(site)
            if value is not None:
                out[name] = value
        return out
    per_trace = [_collect(t, 1, pick) for t in traces]
    return {name: torch.stack([d[name] for d in per_trace]) for name in per_trace[0]}


def log_joint(model: Callable, draws: Draws, *args: Any, **kwargs: Any) -> torch.Tensor:
    r"""Log joint density :math:`\log p(x, z_s)` of the model for each draw ``z_s``: ``(S,)``."""
    traces, _, num = _conditioned_traces(model, draws, args, kwargs, uncondition=False)
    if isinstance(traces, poutine.Trace):
        terms = [per_particle_sum(s["log_prob"], num) for s in sample_sites(traces).values()]
        return torch.stack(terms).sum(0).detach()
    return torch.stack([t.log_prob_sum() for t in traces]).detach()


def pointwise_log_likelihood(
    model: Callable, draws: Draws, *args: Any, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Per-observation log-likelihood of every observed site: ``site -> (S, *obs_shape)``.

    The values are what ArviZ's ``log_likelihood`` group holds and what PSIS-LOO and WAIC use.
    """
    traces, infos, num = _conditioned_traces(model, draws, args, kwargs, uncondition=False)

    def pick(site: dict) -> torch.Tensor | None:
        if not is_data(site) or site["name"] in draws:
            return None
        log_prob = site["log_prob"].detach()
        shape = infos[site["name"]].shape[: len(infos[site["name"]].shape) - site["fn"].event_dim]
        if isinstance(traces, list):
            return log_prob.reshape(shape)
        return log_prob.expand((num,) + log_prob.shape[1:]).reshape((num,) + tuple(shape))

    return _collect(traces, num, pick)


def posterior_predictive(
    model: Callable, draws: Draws, *args: Any, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Replicated data: every observed site re-sampled given each draw: ``site -> (S, *shape)``."""
    observed = {
        name
        for name, info in site_infos(trace_program(model, *args, **kwargs)).items()
        if info.observed
    }
    traces, infos, num = _conditioned_traces(model, draws, args, kwargs, uncondition=True)

    def pick(site: dict) -> torch.Tensor | None:
        if site["name"] not in observed:
            return None
        value = site["value"].detach()
        if isinstance(traces, list):
            return value
        return from_particle_layout(value, infos[site["name"]].shape, num)

    return _collect(traces, num, pick)


def observed_data(model: Callable, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
    """The values of the model's observed sites (ArviZ's ``observed_data`` group)."""
    trace = trace_program(model, *args, **kwargs)
    return {n: s["value"].detach() for n, s in sample_sites(trace).items() if is_data(s)}


def _q_sites(trace: poutine.Trace) -> list[dict]:
    r"""The guide's sample sites that make up :math:`\log q`: latent, auxiliary included.

    Plates' subsample sites are left out: their zero log-density lives on the plate's device
    (the CPU unless the plate names one), not the guide's.
    """
    return [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def guide_draws(
    guide: Callable, num_samples: int, *args: Any, **kwargs: Any
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    r"""Draw ``num_samples`` latent values from a guide, with their log-density :math:`\log q`.

    Returns:
        ``(draws, log_q)``: draws as ``site -> (S, *shape)`` (auxiliary sites left out) and
        the guide's total log-density per draw, shape ``(S,)`` (auxiliary sites included).
    """
    with torch.no_grad():
        trace0 = trace_program(guide, *args, **kwargs)
        infos = site_infos(trace0)
        nesting = max_plate_nesting(trace0)
        try:
            trace = vectorized_trace(guide, num_samples, nesting, args, kwargs)
            trace.compute_log_prob()
            draws = {
                name: from_particle_layout(
                    site["value"].detach(), infos[name].shape, num_samples
                ).clone()
                for name, site in sample_sites(trace).items()
                if not site["is_observed"]
            }
            log_q = torch.stack(
                [per_particle_sum(site["log_prob"], num_samples) for site in _q_sites(trace)]
            ).sum(0)
            return draws, log_q.detach()
        except (RuntimeError, ValueError, IndexError) as error:
            warn_fallback("drawing from the guide", error)
        values: dict[str, list[torch.Tensor]] = {}
        log_qs = []
        for _ in range(num_samples):
            trace = trace_program(guide, *args, **kwargs)
            trace.compute_log_prob(lambda name, site: not site["is_observed"])
            log_qs.append(sum(site["log_prob_sum"] for site in _q_sites(trace)))
            for name, site in sample_sites(trace).items():
                if not site["is_observed"]:
                    values.setdefault(name, []).append(site["value"])
        draws = {k: torch.stack(v).detach() for k, v in values.items()}
        return draws, torch.stack(log_qs).detach()
