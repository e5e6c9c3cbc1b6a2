"""The driver loop every engine shares: steps, progress bar, periodic and final checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pplx.inference.progress import progress_bar

#: ``advance(state) -> (postfix, stop)``: take one step; ``postfix`` (a dict or ``None``) is
#: shown on the progress bar every ten steps, ``stop`` ends the loop early.
Advance = Callable[[Any], tuple[dict[str, str] | None, bool]]


def run_steps(
    state: Any,
    total: int,
    advance: Advance,
    *,
    name: str,
    progress: bool | None,
    checkpoint: Path | None,
    checkpoint_every: int,
    save: Callable[[Any, Path], None],
    after: Callable[[Any], None] | None = None,
) -> float:
    """Advance ``state`` (which counts its steps in ``state.step``) until it reaches ``total``.

    After every step a checkpoint is written when ``state.step`` is a multiple of
    ``checkpoint_every``, then ``after(state)`` is called; a final checkpoint is written when
    the loop ends normally or early. An exception leaves the last checkpoint intact.

    Returns:
        Wall-clock seconds spent in the loop (checkpoints included).
    """
    start = time.perf_counter()
    bar = progress_bar(total, name, progress, initial=state.step)
    try:
        while state.step < total:
            postfix, stop = advance(state)
            if checkpoint is not None and state.step % checkpoint_every == 0:
                save(state, checkpoint)
            if after is not None:
                after(state)
            bar.update(1)
            if postfix and (state.step % 10 == 0 or stop):
                bar.set_postfix(postfix, refresh=False)
            if stop:
                break
    finally:
        bar.close()
    if checkpoint is not None:
        save(state, checkpoint)
    return time.perf_counter() - start
