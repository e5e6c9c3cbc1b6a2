"""Tests of ``pplx.timeseries``: benchmark data, preprocessing, discriminative/predictive scores.

The score tests use few training steps (CPU time); their thresholds are far from the values
they check: two samples of the sine benchmark score about 0 (the held-out accuracy of a
classifier that cannot tell them apart has binomial standard error 0.5/sqrt(240) ~ 0.03, so
0.1 is more than 3 standard errors), sine against uniform noise scores about 0.5.
"""

import pytest
import torch
from helpers.timeseries import shared_timeseries_dir

from pplx.timeseries import (
    Score,
    discriminative_noise_floor,
    discriminative_score,
    drop_time_rows,
    load_energy,
    load_stocks,
    minmax_scale,
    pad_sequences,
    predictive_score,
    sine_data,
    sliding_windows,
)
from pplx.timeseries.data import BUNDLED_DIR


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ data


def test_sine_data_shape_range_and_reproducibility():
    x = sine_data(50, seq_len=24, dim=5, generator=gen(1))
    assert x.shape == (50, 24, 5) and x.dtype == torch.get_default_dtype()
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, sine_data(50, seq_len=24, dim=5, generator=gen(1)))
    # each feature is sin(f t + phi) with f, phi in (0, 0.1): recover phi from t = 0
    phase = torch.asin(2 * x[:, 0] - 1)
    assert phase.min() >= 0 and phase.max() <= 0.1
    assert phase.std() > 0.01  # drawn per sequence and feature
    x64 = sine_data(3, dtype=torch.float64)
    assert x64.dtype == torch.float64
    with pytest.raises(ValueError, match="seq_len"):
        sine_data(3, seq_len=0)


def test_load_stocks_bundled():
    assert (BUNDLED_DIR / "stock_data.csv").is_file()
    x, names = load_stocks(return_names=True)
    assert x.shape == (3685, 6)
    assert names == ("Open", "High", "Low", "Close", "Adj_Close", "Volume")
    assert torch.isfinite(x).all() and (x[:, 1] >= x[:, 2]).all()  # High >= Low
    assert torch.equal(load_stocks(BUNDLED_DIR), x)  # a folder works too


ENERGY = shared_timeseries_dir() / "energy_data.csv"


@pytest.mark.skipif(not ENERGY.is_file(), reason=f"no energy data at {ENERGY}")
def test_load_energy_from_path_folder_and_environment(monkeypatch):
    x = load_energy(ENERGY, dtype=torch.float64)
    assert x.shape == (19735, 28) and x.dtype == torch.float64 and torch.isfinite(x).all()
    assert torch.equal(load_energy(ENERGY.parent, dtype=torch.float64), x)
    monkeypatch.setenv("PPLX_TIMESERIES_DATA", str(ENERGY.parent))
    assert torch.equal(load_energy(dtype=torch.float64), x)


def test_load_errors_name_path(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="path="):
        load_energy(tmp_path / "nope.csv")
    monkeypatch.delenv("PPLX_TIMESERIES_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="PPLX_TIMESERIES_DATA"):
        load_energy()


def test_minmax_scale_roundtrip_and_nan():
    x = torch.randn(100, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 100.0]) + 5
    s, scaler = minmax_scale(x)
    assert s.min(0).values.abs().max() < 1e-12
    assert (s.max(0).values - 1).abs().max() < 1e-6
    assert torch.allclose(scaler.inverse_transform(s), x, atol=1e-10)
    x[3, 1] = float("nan")
    s, _ = minmax_scale(x)
    assert torch.isnan(s[3, 1]) and torch.isfinite(s[4]).all()
    assert s[:, 1].nan_to_num(0.0).max() <= 1
    with pytest.raises(ValueError, match="NaN everywhere"):
        minmax_scale(torch.full((4, 2), float("nan")))


def test_sliding_windows():
    data = torch.arange(30.0).view(10, 3)
    w = sliding_windows(data, 4)
    assert w.shape == (7, 4, 3)
    for i in range(7):
        assert torch.equal(w[i], data[i : i + 4])
    assert sliding_windows(data, 4, stride=3).shape == (3, 4, 3)
    ws = sliding_windows(data, 4, shuffle=True, generator=gen())
    assert sorted(ws[:, 0, 0].tolist()) == sorted(w[:, 0, 0].tolist())
    with pytest.raises(ValueError, match="seq_len"):
        sliding_windows(data, 11)


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_drop_time_rows(rate):
    x = sine_data(40, seq_len=24, dim=3, generator=gen())
    xm, mask = drop_time_rows(x, rate, gen(2))
    assert mask.shape == (40, 24)
    assert (mask.sum(1) == 24 - round(rate * 24)).all()
    assert torch.equal(torch.isnan(xm).any(-1), ~mask)
    assert torch.isnan(xm[~mask]).all()  # whole rows
    assert torch.equal(xm[mask], x[mask])
    assert not torch.equal(mask[0], mask[1])  # independent per sequence


def test_drop_time_rows_errors():
    with pytest.raises(ValueError, match="rate"):
        drop_time_rows(torch.zeros(2, 3, 1), 1.0)
    with pytest.raises(ValueError, match="x must"):
        drop_time_rows(torch.zeros(3, 1), 0.5)


def test_pad_sequences():
    x, mask = pad_sequences([torch.ones(3, 2), torch.zeros(5, 2)])
    assert x.shape == (2, 5, 2) and mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert torch.isnan(x[0, 3:]).all()
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pad_sequences([torch.ones(3, 2), torch.ones(3, 4)])


# ------------------------------------------------------------------ metrics

N, STEPS = 600, 120
KW = dict(num_steps=STEPS, lr=1e-2, hidden=4)


@pytest.fixture(scope="module")
def samples():
    g = gen(0)
    real = sine_data(N, generator=g)
    real2 = sine_data(N, generator=g)
    noise = torch.rand(N, 24, 5, generator=g)
    return real, real2, noise


def test_discriminative_score_real_vs_real_near_zero(samples):
    real, real2, _ = samples
    score = discriminative_score(real, real2, seeds=(0, 1), **KW)
    assert isinstance(score, Score) and len(score.values) == 2
    assert score.floor == discriminative_noise_floor(2 * (N - round(0.8 * N)))  # 20 % held out
    assert score.mean < 0.1, score


def test_discriminative_score_real_vs_noise_near_half(samples):
    real, _, noise = samples
    score = discriminative_score(real, noise, seeds=(0,), **KW)
    assert score.mean > 0.35, score


def test_predictive_score_real_beats_noise(samples):
    real, real2, noise = samples
    on_real = predictive_score(real, real2, seeds=(0,), **KW)
    on_noise = predictive_score(real, noise, seeds=(0,), **KW)
    assert on_real.mean < on_noise.mean, (on_real, on_noise)


def test_scores_reproducible_and_errors(samples):
    real, real2, _ = samples
    a = predictive_score(real[:64], real2[:64], seeds=(3,), num_steps=5, target="all")
    b = predictive_score(real[:64], real2[:64], seeds=(3,), num_steps=5, target="all")
    assert a == b
    assert Score.of([1.0, 3.0]).std == pytest.approx(2**0.5)
    with pytest.raises(ValueError, match="same"):
        discriminative_score(real, real2[:, :10])
    bad = real.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="synthetic has NaN"):
        predictive_score(real, bad)
    with pytest.raises(ValueError, match="target"):
        predictive_score(real, real2, target="first")
    with pytest.raises(ValueError, match="num_steps"):
        discriminative_score(real, real2, num_steps=0)


def test_discriminative_noise_floor_is_the_mean_score_of_a_coin():
    """A classifier that guesses scores |0.5 - accuracy| with accuracy ~ Binomial(n, 1/2) / n;
    the floor is the half-normal mean of that, checked by simulation (4 standard errors)."""
    n, reps = 400, 20_000
    acc = torch.distributions.Binomial(n, torch.tensor(0.5)).sample((reps,)) / n
    scores = (acc - 0.5).abs().double()
    tol = 4 * scores.std().item() / reps**0.5
    assert abs(scores.mean().item() - discriminative_noise_floor(n)) < tol + 1e-3
    assert discriminative_noise_floor(4000) == pytest.approx(0.0063, abs=1e-4)
    with pytest.raises(ValueError, match="num_test"):
        discriminative_noise_floor(0)
