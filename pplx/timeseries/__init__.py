"""Time-series benchmarks (sine, stocks, energy), preprocessing, and post-hoc scores.

See :mod:`pplx.timeseries.data` and :mod:`pplx.timeseries.metrics`; the Koopman VAE that
generates such series is :class:`pplx.models.KoopmanVAE`.
"""

from pplx.timeseries.data import (
    MinMaxScaler,
    drop_time_rows,
    load_energy,
    load_stocks,
    minmax_scale,
    pad_sequences,
    sine_data,
    sliding_windows,
)
from pplx.timeseries.metrics import Score, discriminative_score, predictive_score

__all__ = [
    "MinMaxScaler",
    "Score",
    "discriminative_score",
    "drop_time_rows",
    "load_energy",
    "load_stocks",
    "minmax_scale",
    "pad_sequences",
    "predictive_score",
    "sine_data",
    "sliding_windows",
]
