"""Checks that run before any long work: clear errors that name the site and say how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger

from pplx.traces import is_data, sample_sites


class ModelError(ValueError):
    """A model, guide or data set that an engine cannot fit as given."""


class _SubsampleCheck(Messenger):
    """Refuse a plate whose minibatch is larger than the plate, naming it (Pyro would not)."""

    def _pyro_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        if type(fn).__name__ == "_Subsample" and fn.subsample_size is not None:
            if fn.subsample_size > fn.size:
                raise ModelError(
                    f"plate {msg['name']!r}: subsample_size={fn.subsample_size} is larger than "
                    f"its size {fn.size}; use at most the number of data points."
                )


def trace_or_explain(fn: Callable, role: str, *args: Any, **kwargs: Any) -> poutine.Trace:
    """Trace ``fn`` once; if it raises, re-raise with the role (model/guide) in the message."""
    try:
        with _SubsampleCheck():
            return poutine.trace(fn).get_trace(*args, **kwargs)
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised with context
        raise ModelError(
            f"running the {role} {getattr(fn, '__name__', type(fn).__name__)!r} on the given "
            f"arguments failed before fitting started: {type(error).__name__}: {error}"
        ) from error


def latent_site_names(model_trace: poutine.Trace) -> list[str]:
    """Names of the model's latent (unobserved, non-enumerated) sample sites."""
    return [
        name
        for name, site in sample_sites(model_trace).items()
        if not site["is_observed"] and site["infer"].get("enumerate") is None
    ]


def check_observed_shapes(model_trace: poutine.Trace) -> None:
    """Refuse observed data whose shape would silently broadcast the likelihood.

    A classic bug: labels of shape ``(N, 1)`` observed by a distribution of shape ``(N,)``
    make a log-likelihood of shape ``(N, N)``.
    """
    for name, site in sample_sites(model_trace).items():
        if not is_data(site):
            continue
        fn_shape = site["fn"].shape()
        value_shape = site["value"].shape
        try:
            joint = torch.broadcast_shapes(fn_shape, value_shape)
        except RuntimeError:
            joint = None
        if joint != fn_shape:
            raise ModelError(
                f"observed site {name!r}: the data have shape {tuple(value_shape)} but the "
                f"distribution has shape {tuple(fn_shape)} (batch + event). "
                + (
                    f"The log-likelihood would broadcast to {tuple(joint)}. "
                    if joint is not None
                    else ""
                )
                + "Reshape the data to the distribution's shape (e.g. y.reshape(-1)), or give "
                "the distribution that shape with pyro.plate or .to_event()."
            )


def check_model(model_trace: poutine.Trace, engine: str) -> list[str]:
    """Check a model trace; return its latent site names."""
    latents = latent_site_names(model_trace)
    if not latents:
        observed = [n for n, s in sample_sites(model_trace).items() if s["is_observed"]]
        raise ModelError(
            f"{engine}: the model has no latent sample sites, so there is nothing to infer "
            f"(observed sites: {observed}). Declare unknowns with pyro.sample(name, prior) "
            "without obs=..., or use pyro.param for point estimates."
        )
    check_observed_shapes(model_trace)
    return latents


def check_guide(model_trace: poutine.Trace, guide_trace: poutine.Trace, engine: str) -> None:
    """Check that the guide samples exactly the model's latent sites."""
    model_sites = sample_sites(model_trace)
    latents = set(latent_site_names(model_trace))
    guide_sites = {n for n, s in sample_sites(guide_trace).items() if not s["is_observed"]}
    missing = sorted(latents - guide_sites)
    if missing:
        raise ModelError(
            f"{engine}: the guide does not sample the model's latent site(s) {missing}. Every "
            "latent site of the model needs a guide site of the same name; an autoguide such as "
            "pyro.infer.autoguide.AutoNormal(model) covers all of them, or mark a discrete site "
            "infer={'enumerate': 'parallel'} and use an enumerating loss."
        )
    observed = sorted(n for n in guide_sites if n in model_sites and model_sites[n]["is_observed"])
    if observed:
        raise ModelError(
            f"{engine}: the guide samples {observed}, which the model observes; remove them "
            "from the guide."
        )
    extra = sorted(guide_sites - set(model_sites))
    if extra:
        raise ModelError(
            f"{engine}: the guide samples site(s) {extra} that the model does not have. Rename "
            "them to match the model, or mark them infer={'is_auxiliary': True}."
        )
