"""The engine registry: how engines join the Bayesian workflow (``pplx demo``).

An engine registers a *fit function* that takes a :class:`Problem` (a Pyro model and its data)
and a :class:`FitConfig` and returns a :class:`~pplx.inference.Result`. Built-in engines
register when :mod:`pplx.inference` is imported; third-party packages can register through
the ``pplx.engines`` entry-point group (each entry point is imported, and registers itself).

Example:
    >>> from pplx.inference import register_engine
    >>> @register_engine("my-engine", "What it does, in one line")  # doctest: +SKIP
    ... def fit(problem, config):
    ...     return MyEngine(problem.model).run(*problem.args, **problem.kwargs)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import torch

from pplx.inference.results import Result


@dataclass(frozen=True)
class Problem:
    """A model and its data, as the workflow hands them to every engine.

    Attributes:
        name: Short name (``logistic``, ``eight_schools``).
        description: One line on the model and the data.
        model: The Pyro model.
        args: Positional arguments of the model (data included).
        kwargs: Keyword arguments of the model.
        sites: Latent sites compared across engines.
        num_data: Number of data points (for minibatching engines).
        subsample_kwarg: Keyword of the model that sets a minibatch size, if it has one.
    """

    name: str
    description: str
    model: Callable
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    sites: tuple[str, ...] = ()
    num_data: int = 0
    subsample_kwarg: str | None = None


@dataclass(frozen=True)
class FitConfig:
    """Settings shared by every engine in one workflow run.

    Attributes:
        quick: Use short runs (for smoke tests and a first look).
        seed: Random seed; each engine is seeded with it before it starts.
        num_samples: Number of posterior draws each engine should return.
        progress_bar: Show progress bars (``None``: on a terminal).
        device: Device the data live on.
    """

    quick: bool = False
    seed: int = 0
    num_samples: int = 1000
    progress_bar: bool | None = None
    device: torch.device = torch.device("cpu")


FitFunction = Callable[[Problem, FitConfig], Result]


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine.

    Attributes:
        name: Name used on the command line.
        fit: The fit function.
        description: One line shown by ``pplx engines``.
        reference: Whether this engine can serve as the reference.
    """

    name: str
    fit: FitFunction
    description: str
    reference: bool = False


_REGISTRY: dict[str, EngineSpec] = {}
_ENTRY_POINTS_LOADED = False


def register_engine(
    name: str, description: str, reference: bool = False
) -> Callable[[FitFunction], FitFunction]:
    """Decorator that registers ``fit(problem, config) -> Result`` under ``name``."""

    def decorator(fit: FitFunction) -> FitFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fit is not fit:
            qualname = getattr(existing.fit, "__qualname__", "?")
            if qualname != getattr(fit, "__qualname__", None):
                raise ValueError(f"an engine named {name!r} is already registered ({qualname})")
        _REGISTRY[name] = EngineSpec(name, fit, description, reference)
        return fit

    return decorator


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for entry in entry_points(group="pplx.engines"):
        entry.load()


def engines() -> dict[str, EngineSpec]:
    """All registered engines, built-in first, in registration order."""
    import pplx.inference  # noqa: F401 - registers the built-in engines

    _load_entry_points()
    return dict(_REGISTRY)


def get_engine(name: str) -> EngineSpec:
    """The engine called ``name``; a clear error lists the known names otherwise."""
    known = engines()
    if name not in known:
        raise KeyError(
            f"unknown engine {name!r}; available engines: {', '.join(known)} (see `pplx engines`)"
        )
    return known[name]
