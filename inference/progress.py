"""Progress bars that appear on a terminal and stay quiet in logs and CI."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_enabled(requested: bool | None) -> bool:
    """Resolve a ``progress_bar`` argument: ``None`` means "on when stderr is a terminal"."""
    if requested is not None:
        return bool(requested)
    if os.environ.get("PPLX_PROGRESS", "").lower() in ("0", "false", "no"):
        return False
    return sys.stderr.isatty()


def progress_bar(total: int, desc: str, enabled: bool | None = None, initial: int = 0) -> tqdm:
    """A tqdm bar over ``total`` steps, disabled unless :func:`progress_enabled`."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=not progress_enabled(enabled),
        dynamic_ncols=True,
        leave=False,
    )
