"""Checkpoints written atomically, and the random-number state they carry.

A checkpoint is written to a temporary file beside its target and moved into place with
:func:`os.replace`, so a crash while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pyro.util
import torch

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every random-number state an engine draws from (torch, CUDA, Python, NumPy)."""
    state = pyro.util.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state from :func:`rng_state`."""
    pyro.util.set_rng_state(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_writable(path: str | Path, what: str = "checkpoint") -> Path:
    """Fail early, with a clear message, if ``path``'s folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise PermissionError(
            f"cannot write the {what} {str(path)!r}: it is a folder; give a file name inside it"
        )
    folder = path.parent if path.parent != Path("") else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pplx-probe-"):
            pass
    except OSError as error:
        raise PermissionError(
            f"cannot write the {what} {str(path)!r}: {error.strerror or error}. "
            "Choose a folder you can write to."
        ) from error
    return path


def save_checkpoint(path: str | Path, engine: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` for ``engine`` to ``path`` atomically."""
    path = Path(path)
    full = {"format_version": FORMAT_VERSION, "engine": engine, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=".ckpt-")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(full, handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path, engine: str, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` for the same engine."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=False)
    if payload.get("engine") != engine:
        raise ValueError(
            f"checkpoint {str(path)!r} was written by engine {payload.get('engine')!r}, "
            f"not {engine!r}; point checkpoint= at a file of this engine or delete it."
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format {payload.get('format_version')}, this pplx "
            f"reads format {FORMAT_VERSION}."
        )
    return payload
