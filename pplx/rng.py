"""Bookkeeping runs: leave the random stream and the modules' buffers as they were."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["untouched_buffers", "untouched_rng", "untouched_state"]


def _devices() -> list[int]:
    """CUDA devices whose generators a block might use (only those already initialised)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextlib.contextmanager
def untouched_rng() -> Iterator[None]:
    """Restore torch's CPU and CUDA generators after the block, whatever it drew.

    Used for bookkeeping runs of a program (guessing its plate nesting, tracing it to find its
    sites) so that they do not shift the random stream of the run that follows: a fit then
    draws the same numbers whether or not it was resumed from a checkpoint, and whatever
    bookkeeping happened before.
    """
    with torch.random.fork_rng(devices=_devices()):
        yield


@contextlib.contextmanager
def untouched_buffers() -> Iterator[None]:
    """Restore the buffers of every module called in the block to their values before it.

    A bookkeeping run of a program in training mode would otherwise update its modules'
    running statistics (``torch.nn.BatchNorm1d`` and the like) as if it were a training step.
    A global forward pre-hook records each called module's buffers the first time it runs; at
    the end of the block the buffers are put back, values and tensor objects alike (so a
    buffer that the module replaced rather than updated in place is restored too).
    """
    saved: dict[int, tuple[torch.nn.Module, dict[str, tuple[torch.Tensor, torch.Tensor]]]] = {}

    def remember(module: torch.nn.Module, _inputs: object) -> None:
        if id(module) not in saved:
            buffers = {
                n: (b, b.detach().clone()) for n, b in module._buffers.items() if b is not None
            }
            saved[id(module)] = (module, buffers)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(remember)
    try:
        yield
    finally:
        handle.remove()
        for module, buffers in saved.values():
            for name, (tensor, value) in buffers.items():
                # through .data: the restore must not bump the version counter, or a graph
                # built before the block that saved the buffer (batch norm saves its running
                # statistics for backward) would refuse to backpropagate
                tensor.data.copy_(value)
                module._buffers[name] = tensor


@contextlib.contextmanager
def untouched_state() -> Iterator[None]:
    """A bookkeeping run: :func:`untouched_rng` and :func:`untouched_buffers` together.

    For runs of a program that only inspect it (guess its plate nesting, trace its sites,
    capture its graph, try it on a minibatch) so that they leave no trace in the fit.
    """
    with untouched_rng(), untouched_buffers():
        yield
