"""Objectives with Pyro's ELBO interface (``loss``, ``differentiable_loss``, ``loss_and_grads``).

Every :class:`Objective` is a :class:`pyro.infer.ELBO`, so it plugs into
``pyro.infer.SVI(model, guide, optim, loss=...)`` and into :class:`pplx.inference.SVI`
unchanged. Its :meth:`~Objective.program` is the objective written with the primitives of
:mod:`pplx.objectives.program`; :func:`objective` turns a plain function into one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pyro.infer
import torch

from pplx.objectives.compiled import CapturedLoss
from pplx.objectives.program import Terms, plate_nesting_of
from pplx.objectives.transform import (
    Surrogate,
    build_surrogate,
    estimate_value,
    primal_run,
    weighted_terms,
)


class Objective(pyro.infer.ELBO):
    """Base class of pplx objectives.

    Subclasses implement :meth:`program`. The objective's value is the expectation of the
    program's output; :meth:`differentiable_loss` returns a tensor whose value is the loss
    (minus the objective, or the objective itself when ``maximize`` is ``False``) and whose
    gradient is an unbiased estimate of the loss's gradient.

    Args:
        num_particles: Number of vectorized particles :math:`K`.
        max_plate_nesting: Number of plate dimensions of model and guide; guessed from one
            run when ``None``.
    """

    #: the objective is a lower bound to maximise (``False``: an upper bound to minimise)
    maximize: bool = True

    def __init__(self, num_particles: int = 1, max_plate_nesting: int | None = None) -> None:
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__(num_particles=int(num_particles), vectorize_particles=True)
        self._plate_nesting = max_plate_nesting
        self._jit: dict | None = None
        self._compiled: dict = {}

    def compile(
        self,
        backend: str = "capture",
        ignore_warnings: bool = True,
        jit_options: dict | None = None,
    ) -> Objective:
        """Compile :meth:`differentiable_loss`; returns ``self``.

        After one eager run per (model, guide, argument shapes, non-tensor arguments), each
        call replays the recorded tensor program without Pyro's handlers, which removes the
        per-step Python overhead. Requirements: model and guide have a static structure,
        tensors come through ``*args``, and nothing the program does depends on tensor
        *values* in Python. Random draws stay random at every call; stateful baselines
        (moving averages) are frozen at their value when the program was recorded, which
        keeps the gradient unbiased.

        Args:
            backend: ``"capture"`` (default) records the ATen operations of the forward pass
                with :func:`pplx.capture.capture` and replays them under autograd, so the
                backward pass is PyTorch's own; parameters are held by reference (a cleared
                or reloaded parameter store triggers a new capture). ``"jit"`` traces with
                ``torch.jit.trace`` through ``pyro.ops.jit``, as Pyro's ``JitTrace_ELBO``;
                PyTorch 2.13 deprecates ``torch.jit.trace`` and warns on each trace.
            ignore_warnings: ``"jit"`` only: silence the tracer's warnings.
            jit_options: ``"jit"`` only: options for ``torch.jit.trace``.
        """
        if backend not in ("capture", "jit"):
            raise ValueError(f'compile: backend must be "capture" or "jit", got {backend!r}')
        self._jit = {
            "backend": backend,
            "ignore_warnings": ignore_warnings,
            "jit_options": jit_options,
        }
        self._compiled = {}
        return self

    def _compiled_loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        import pyro.ops.jit

        def loss_fn(*args: Any, **kwargs: Any) -> torch.Tensor:
            return self._sign() * self.surrogate(model, guide, *args, **kwargs).surrogate

        options = dict(self._jit)
        if options.pop("backend") == "capture":
            key = (model, guide)
            if key not in self._compiled:
                self._compiled[key] = CapturedLoss(loss_fn)
            return self._compiled[key]
        shapes = tuple(
            (tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else None
            for a in args
        )
        key = (model, guide, shapes)
        if key not in self._compiled:
            self._compiled[key] = pyro.ops.jit.trace(loss_fn, **options)
        return self._compiled[key]

    # -- the program ------------------------------------------------------------------------
    def program(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Any:
        """The objective as a program over the primitives (see :mod:`pplx.objectives`)."""
        raise NotImplementedError

    def plate_nesting(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
        """The number of plate dimensions (guessed once from one run of guide and model)."""
        if self._plate_nesting is None:
            self._plate_nesting = plate_nesting_of((guide, args, kwargs), (model, args, kwargs))
        return self._plate_nesting

    def surrogate(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Surrogate:
        """Run the program and build its :class:`~pplx.objectives.transform.Surrogate`."""
        nesting = self.plate_nesting(model, guide, args, kwargs)
        program = functools.partial(self.program, model, guide, *args, **kwargs)
        return build_surrogate(program, self.num_particles, nesting, args, kwargs)

    def estimate(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """One estimate of the objective, without gradients."""
        nesting = self.plate_nesting(model, guide, args, kwargs)
        program = functools.partial(self.program, model, guide, *args, **kwargs)
        with torch.no_grad():
            out, ex = primal_run(program, self.num_particles, nesting)
            weighted = weighted_terms(out, ex) if isinstance(out, Terms) else []
            return float(estimate_value(out, weighted))

    # -- Pyro's ELBO interface --------------------------------------------------------------
    def _get_trace(self, model, guide, args, kwargs):  # Pyro's abstract hook; unused here
        raise NotImplementedError("pplx objectives run programs, not Pyro's trace pairs")

    def _sign(self) -> float:
        return -1.0 if self.maximize else 1.0

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss (``-objective`` for lower bounds) as a float, without gradients."""
        return self._sign() * self.estimate(model, guide, *args, **kwargs)

    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """A tensor with the loss's value and an unbiased estimate of its gradient."""
        if self._jit is not None:
            return self._compiled_loss(model, guide, args, kwargs)(*args, **kwargs)
        return self._sign() * self.surrogate(model, guide, *args, **kwargs).surrogate

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """Backpropagate :meth:`differentiable_loss` and return the loss as a float."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_particles={self.num_particles})"


class ProgramObjective(Objective):
    """An :class:`Objective` whose program is a user function (see :func:`objective`)."""

    def __init__(
        self,
        fn: Callable,
        num_particles: int = 1,
        maximize: bool = True,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting)
        self.fn = fn
        self.maximize = maximize
        functools.update_wrapper(self, fn, updated=())

    def program(self, model, guide, *args, **kwargs):  # noqa: D102
        return self.fn(model, guide, *args, **kwargs)

    def __repr__(self) -> str:
        return f"objective({self.fn.__name__}, num_particles={self.num_particles})"


def objective(
    fn: Callable | None = None,
    *,
    num_particles: int = 1,
    maximize: bool = True,
    max_plate_nesting: int | None = None,
) -> Any:
    """Turn ``fn(model, guide, *args, **kwargs)`` into an :class:`Objective`.

    ``fn`` is written with the primitives; usable as a decorator, with or without options.
    """
    if fn is None:
        return functools.partial(
            objective,
            num_particles=num_particles,
            maximize=maximize,
            max_plate_nesting=max_plate_nesting,
        )
    return ProgramObjective(fn, num_particles, maximize, max_plate_nesting)
