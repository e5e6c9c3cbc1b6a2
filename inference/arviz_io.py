"""Conversion of draws to ArviZ, built on xarray so it works with ArviZ 0.x and 1.x.

ArviZ 0.x (Python 3.11) has ``InferenceData`` and ``from_pyro``; ArviZ 1.x (Python 3.12+) drops
both in favour of :class:`xarray.DataTree`. Building the xarray datasets here and wrapping them in
whichever container the installed ArviZ uses keeps one code path for both.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

import pplx

SAMPLE_DIMS = ("chain", "draw")


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.cpu().numpy()
    return np.asarray(value)


def _dataset(
    group: Mapping[str, Any],
    leading: Sequence[str],
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    variables = {}
    used_coords = {}
    for name, value in group.items():
        array = _numpy(value)
        extra = array.ndim - len(leading)
        if extra < 0:
            raise ValueError(
                f"variable {name!r} has shape {array.shape} but needs the leading dimensions "
                f"{tuple(leading)}"
            )
        named = list(dims.get(name, ()))[:extra]
        named += [f"{name}_dim_{i}" for i in range(len(named), extra)]
        var_dims = tuple(leading) + tuple(named)
        variables[name] = (var_dims, array)
        for dim in var_dims:
            if dim in coords:
                used_coords[dim] = coords[dim]
    return xr.Dataset(variables, coords=used_coords, attrs=dict(attrs))


def to_inference_data(
    posterior: Mapping[str, Any],
    sample_stats: Mapping[str, Any] | None = None,
    log_likelihood: Mapping[str, Any] | None = None,
    posterior_predictive: Mapping[str, Any] | None = None,
    observed_data: Mapping[str, Any] | None = None,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """Build ArviZ output from tensors shaped ``(chain, draw, ...)``.

    Args:
        posterior: Site name to draws of shape ``(chains, draws, *site_shape)``.
        sample_stats: Per-draw statistics of shape ``(chains, draws)`` (``lp``, ``diverging``...).
        log_likelihood: Observed site to pointwise log-likelihood ``(chains, draws, *obs_shape)``.
        posterior_predictive: Observed site to replicated data ``(chains, draws, *obs_shape)``.
        observed_data: Observed site to the data, without chain/draw dimensions.
        coords: Coordinate values per dimension name.
        dims: Dimension names per variable (beyond chain/draw); default ``<name>_dim_<i>``.
        attrs: Attributes stored on every group (engine name, settings).

    Returns:
        ``arviz.InferenceData`` with ArviZ 0.x, an ``xarray.DataTree`` with ArviZ 1.x. Empty
        groups are left out.
    """
    coords = dict(coords or {})
    dims = dict(dims or {})
    base_attrs = {
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "inference_library": "pplx",
        "inference_library_version": pplx.__version__,
    }
    base_attrs.update({k: str(v) for k, v in (attrs or {}).items()})
    groups: dict[str, xr.Dataset] = {}
    for name, group, leading in (
        ("posterior", posterior, SAMPLE_DIMS),
        ("sample_stats", sample_stats, SAMPLE_DIMS),
        ("log_likelihood", log_likelihood, SAMPLE_DIMS),
        ("posterior_predictive", posterior_predictive, SAMPLE_DIMS),
        ("observed_data", observed_data, ()),
    ):
        if group:
            groups[name] = _dataset(group, leading, dims, coords, base_attrs)
    return _container(groups)


def arviz_major_version() -> int:
    """Major version of the installed ArviZ (0 or 1)."""
    from importlib.metadata import version

    return int(version("arviz").split(".")[0])


def _container(groups: dict[str, xr.Dataset]) -> Any:
    # ArviZ 1.x still answers to ``az.InferenceData`` (a migration shim), so ask the version.
    if arviz_major_version() >= 1:
        return xr.DataTree.from_dict(groups)  # ArviZ 1.x works on DataTree directly
    import arviz as az

    return az.InferenceData(**groups)
