"""Pyro's NUTS as a pplx engine: the reference every other engine is compared with.

This is a thin wrapper: :class:`pyro.infer.NUTS` inside :class:`pyro.infer.MCMC`, with the
model checked up front and the draws returned as a :class:`~pplx.inference.Result`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import MCMC

from pplx.inference.progress import progress_enabled
from pplx.inference.results import Result
from pplx.inference.validation import ModelError, check_model, latent_site_names, trace_or_explain
from pplx.traces import sample_sites


def result_from_mcmc(mcmc: MCMC, engine: str = "nuts", wall_time: float = float("nan")) -> Result:
    """Turn a finished :class:`pyro.infer.MCMC` run into a :class:`Result`.

    Draws keep their chains; ``sample_stats["diverging"]`` marks divergent transitions.
    """
    samples = mcmc.get_samples(group_by_chain=True)
    chains, draws = next(iter(samples.values())).shape[:2]
    diagnostics = mcmc.diagnostics()
    diverging = torch.zeros(chains, draws, dtype=torch.bool)
    for chain in range(chains):
        indices = diagnostics.get("divergences", {}).get(f"chain {chain}", [])
        indices = [i for i in indices if i < draws]
        diverging[chain, indices] = True
    acceptance = diagnostics.get("acceptance rate", {})
    return Result(
        engine,
        dict(samples),
        sample_stats={"diverging": diverging},
        wall_time=wall_time,
        info={
            "num_chains": chains,
            "num_samples": draws,
            "warmup_steps": mcmc.warmup_steps,
            "mean_accept_prob": float(sum(acceptance.values()) / max(1, len(acceptance))),
            "divergences": int(diverging.sum()),
        },
    )


class NUTS:
    """The No-U-Turn sampler from Pyro, returning a :class:`Result`.

    Args:
        model: A Pyro model with continuous latent sites (discrete sites must be marked for
            enumeration, as Pyro's NUTS requires).
        num_chains: Number of chains (run one after another unless Pyro parallelises them).
        target_accept_prob: Step-size adaptation target.
        max_tree_depth: Maximum tree depth of NUTS.
        jit_compile: Compile the potential energy with the PyTorch JIT (``torch.jit.trace``
            through Pyro; about 1.7 times faster on eight schools). PyTorch 2.13 deprecates
            ``torch.jit.trace``; as the choice is pplx's default, its deprecation warning is
            silenced here. ``False`` runs the potential eagerly.
        progress_bar: Show Pyro's progress bar; ``None`` shows it on a terminal.
        name: Engine name recorded in the result.
    """

    def __init__(
        self,
        model: Callable,
        num_chains: int = 1,
        target_accept_prob: float = 0.8,
        max_tree_depth: int = 10,
        jit_compile: bool = True,
        progress_bar: bool | None = None,
        name: str = "nuts",
    ) -> None:
        if num_chains < 1:
            raise ValueError(f"{name}: num_chains must be >= 1, got {num_chains}")
        self.model = model
        self.num_chains = num_chains
        self.target_accept_prob = target_accept_prob
        self.max_tree_depth = max_tree_depth
        self.jit_compile = jit_compile
        self.progress_bar = progress_bar
        self.name = name

    def _check(self, args: tuple, kwargs: dict) -> None:
        trace = trace_or_explain(self.model, "model", *args, **kwargs)
        check_model(trace, self.name)
        sites = sample_sites(trace)
        discrete = [
            n
            for n in latent_site_names(trace)
            if getattr(sites[n]["fn"].support, "is_discrete", False)
        ]
        if discrete:
            raise ModelError(
                f"{self.name}: latent site(s) {discrete} are discrete; NUTS needs continuous "
                "latents. Mark them infer={'enumerate': 'parallel'} to sum them out, or use "
                "SVI with a discrete-capable loss."
            )

    def run(
        self, *args: Any, num_samples: int = 1000, warmup_steps: int | None = None, **kwargs: Any
    ) -> Result:
        """Run the chains and return their draws (warm-up discarded)."""
        if num_samples < 1:
            raise ValueError(f"{self.name}: num_samples must be >= 1, got {num_samples}")
        warmup_steps = num_samples if warmup_steps is None else warmup_steps
        self._check(args, kwargs)
        kernel = pyro.infer.NUTS(
            self.model,
            target_accept_prob=self.target_accept_prob,
            max_tree_depth=self.max_tree_depth,
            jit_compile=self.jit_compile,
            ignore_jit_warnings=True,
        )
        mcmc = MCMC(
            kernel,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            num_chains=self.num_chains,
            disable_progbar=not progress_enabled(self.progress_bar),
            mp_context="spawn" if self.num_chains > 1 else None,
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.trace` is deprecated", category=DeprecationWarning
            )
            mcmc.run(*args, **kwargs)
        return result_from_mcmc(mcmc, self.name, time.perf_counter() - start)
