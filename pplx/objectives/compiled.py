"""A loss function captured once as an ATen graph and replayed (``Objective.compile()``).

The first call at given argument shapes runs the loss eagerly (creating any parameters and
validating the program), then captures it with :func:`pplx.capture.capture`. Later calls
replay the captured operations: no Python model code and no Pyro handler runs, while autograd
still records the replayed operations, so ``loss.backward()`` reaches the parameters (the
graph holds them by reference, and optimizers update them in place).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.runtime import _PYRO_STACK

from pplx.capture import CaptureError, capture
from pplx.rng import untouched_state


def _key_of(value: Any) -> Any:
    """A cache key for a non-tensor argument: its value if hashable, else its identity."""
    return value if isinstance(value, Hashable) else ("id", id(value))


class CapturedLoss:
    """``loss_fn(*args, **kwargs)`` captured per argument signature and replayed.

    Tensor positional arguments are inputs of the graph (new data at the same shapes reuses
    it); anything else is fixed at capture time and is part of the cache key. A graph is
    captured again when the parameter store holds a different tensor under a name the graph
    used (a cleared or reloaded store).
    """

    def __init__(self, loss_fn: Callable[..., torch.Tensor]) -> None:
        self.loss_fn = loss_fn
        self.graphs: dict[Any, tuple[Callable, list[tuple[str, torch.Tensor]]]] = {}

    def __len__(self) -> int:
        return len(self.graphs)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The loss: replayed, or (first call at this signature) eager and then captured."""
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                raise ValueError(
                    f"compiled objective: keyword argument {name!r} is a tensor; pass tensors "
                    "positionally, so that they are inputs of the compiled program"
                )
        positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        tensors = [args[i] for i in positions]
        key = (
            tuple(
                (tuple(a.shape), a.dtype, a.device, a.requires_grad)
                if isinstance(a, torch.Tensor)
                else _key_of(a)
                for a in args
            ),
            tuple(sorted((k, _key_of(v)) for k, v in kwargs.items())),
        )
        entry = self.graphs.get(key)
        store = pyro.get_param_store()
        if entry is not None and all(store._params.get(n) is t for n, t in entry[1]):
            graph, params = entry
            if _PYRO_STACK:  # let enclosing handlers (SVI's parameter capture) see them
                for name, _ in params:
                    pyro.param(name)
            return graph(*tensors)
        # first call at this signature: run eagerly (creates and validates), then capture
        with poutine.trace(param_only=True) as param_trace:
            loss = self.loss_fn(*args, **kwargs)
        names = [n for n, s in param_trace.trace.nodes.items() if s["type"] == "param"]
        params = [(n, store._params[n]) for n in names]

        def replayable(*inputs: torch.Tensor) -> torch.Tensor:
            full = list(args)
            for i, value in zip(positions, inputs):
                full[i] = value
            return self.loss_fn(*full, **kwargs)

        try:
            # a bookkeeping run: the eager run above was this step
            with poutine.block(), untouched_state():
                graph = capture(replayable, *tensors)
        except CaptureError as error:
            raise CaptureError(
                f"compile(): the program cannot be recorded: {error}. Compute with tensor "
                "operations only, or use the objective without compile()."
            ) from error
        self.graphs[key] = (graph, params)
        return loss
