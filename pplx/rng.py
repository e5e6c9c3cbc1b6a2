"""Random streams: run a block of code without consuming the caller's random numbers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["untouched_rng"]


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
