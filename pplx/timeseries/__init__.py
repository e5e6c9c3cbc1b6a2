"""Time-series benchmarks (sine, stocks, energy), preprocessing, and post-hoc scores.

See :mod:`pplx.timeseries.data`, :mod:`pplx.timeseries.metrics` and
:mod:`pplx.timeseries.cde` (cubic splines and a neural-CDE encoder for irregular series); the
Koopman VAE that generates such series is :class:`pplx.models.KoopmanVAE`.
"""

from pplx.timeseries.cde import (
    CDEEncoder,
    CubicCoeffs,
    NeuralCDE,
    natural_cubic_coeffs,
    spline_derivative,
    spline_evaluate,
)
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
from pplx.timeseries.metrics import (
    Score,
    discriminative_noise_floor,
    discriminative_score,
    predictive_score,
)

__all__ = [
    "CDEEncoder",
    "CubicCoeffs",
    "MinMaxScaler",
    "NeuralCDE",
    "Score",
    "discriminative_noise_floor",
    "discriminative_score",
    "drop_time_rows",
    "load_energy",
    "load_stocks",
    "minmax_scale",
    "natural_cubic_coeffs",
    "pad_sequences",
    "predictive_score",
    "sine_data",
    "sliding_windows",
    "spline_derivative",
    "spline_evaluate",
]
