"""Tests of ``pplx.timeseries.cde``: natural cubic splines, the neural CDE and its encoder."""

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pplx.models import KoopmanVAE
from pplx.timeseries import (
    CDEEncoder,
    NeuralCDE,
    drop_time_rows,
    natural_cubic_coeffs,
    sine_data,
    spline_derivative,
    spline_evaluate,
)
from pplx.timeseries.cde import tridiagonal_solve

F64 = torch.float64


def second_derivative_ends(coeffs):
    """S'' at t_0 (left end of the first piece) and t_{T-1} (right end of the last)."""
    h_last = coeffs.times[-1] - coeffs.times[-2]
    left = 2 * coeffs.c[:, 0]
    right = 2 * coeffs.c[:, -1] + 6 * coeffs.d[:, -1] * h_last
    return left, right


def test_tridiagonal_solve_matches_dense():
    g = torch.Generator().manual_seed(0)
    n = 7
    lower, upper = torch.randn(2, 3, 5, n, generator=g, dtype=F64)
    diag = 4 + torch.rand(3, 5, n, generator=g, dtype=F64)
    rhs = torch.randn(3, 5, n, generator=g, dtype=F64)
    dense = torch.diag_embed(diag) + torch.diag_embed(lower[..., 1:], -1)
    dense = dense + torch.diag_embed(upper[..., :-1], 1)
    expected = torch.linalg.solve(dense, rhs.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(tridiagonal_solve(lower, diag, upper, rhs), expected, atol=1e-12)


def test_spline_interpolates_and_is_natural_c2():
    g = torch.Generator().manual_seed(1)
    times = torch.cumsum(0.5 + torch.rand(9, generator=g, dtype=F64), 0)
    x = torch.randn(4, 9, 3, generator=g, dtype=F64)
    coeffs = natural_cubic_coeffs(x, times)
    assert coeffs.a.shape == (4, 8, 4)  # time channel prepended
    assert torch.allclose(spline_evaluate(coeffs, times)[..., 1:], x, atol=1e-12)
    # time channel is exactly linear
    assert torch.allclose(spline_derivative(coeffs, times)[..., 0], torch.ones(4, 9, dtype=F64))
    left, right = second_derivative_ends(coeffs)
    assert left.abs().max() < 1e-12 and right.abs().max() < 1e-12
    # C^1 and C^2 at the interior knots: right limit of piece i-1 = left value of piece i
    h = (times[1:] - times[:-1])[:-1, None]
    b_end = coeffs.b[:, :-1] + 2 * coeffs.c[:, :-1] * h + 3 * coeffs.d[:, :-1] * h**2
    c_end = coeffs.c[:, :-1] + 3 * coeffs.d[:, :-1] * h
    assert torch.allclose(b_end, coeffs.b[:, 1:], atol=1e-10)
    assert torch.allclose(c_end, coeffs.c[:, 1:], atol=1e-10)


def test_spline_reproduces_lines_and_sine():
    # A natural spline reproduces any straight line exactly.
    t = torch.linspace(0, 3, 7, dtype=F64)
    coeffs = natural_cubic_coeffs((2 * t - 1)[:, None], t, include_time=False)
    dense = torch.linspace(0, 3, 101, dtype=F64)
    assert torch.allclose(spline_evaluate(coeffs, dense)[0, :, 0], 2 * dense - 1, atol=1e-12)
    # sin on a fine grid: interior error O(h^4) (the natural end condition costs O(h^2) near
    # the ends, where sin'' = -sin is small on [0, pi])
    t = torch.linspace(0, math.pi, 25, dtype=F64)
    coeffs = natural_cubic_coeffs(torch.sin(t)[None, :, None], t)
    dense = torch.linspace(0, math.pi, 1001, dtype=F64)
    err = (spline_evaluate(coeffs, dense)[0, :, 1] - torch.sin(dense)).abs().max()
    assert err < 1e-5
    derr = (spline_derivative(coeffs, dense)[0, :, 1] - torch.cos(dense)).abs().max()
    assert derr < 1e-3


def test_spline_matches_scipy_natural_cubic_spline():
    interpolate = pytest.importorskip("scipy.interpolate")
    g = torch.Generator().manual_seed(3)
    t = torch.cumsum(0.3 + torch.rand(12, generator=g, dtype=F64), 0)
    y = torch.randn(2, 12, generator=g, dtype=F64)
    y[1, [1, 4, 5, 9]] = float("nan")
    coeffs = natural_cubic_coeffs(y[..., None], t, include_time=False)
    dense = torch.linspace(t[0].item(), t[-1].item(), 500, dtype=F64)
    for n in range(2):
        keep = ~torch.isnan(y[n])
        ref = interpolate.CubicSpline(t[keep].numpy(), y[n, keep].numpy(), bc_type="natural")
        for order, fn in ((0, spline_evaluate), (1, spline_derivative)):
            expected = torch.as_tensor(ref(dense.numpy(), order))
            assert torch.allclose(fn(coeffs, dense)[n, :, 0], expected, atol=1e-12)


def torchcde_or_skip():
    return pytest.importorskip("torchcde", reason="torchcde is in the [test] extra")


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.7])
def test_spline_matches_torchcde_through_missing_rows_and_entries(rate):
    """The paper's encoder uses torchcde's natural cubic splines; ours agree to rounding,
    through dropped time rows, scattered NaN entries and leading/trailing NaNs."""
    torchcde = torchcde_or_skip()
    x = sine_data(16, seq_len=20, dim=3, generator=torch.Generator().manual_seed(0)).double()
    if rate:
        x, _ = drop_time_rows(x, rate, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = x.masked_fill(torch.rand(x.shape, generator=g, dtype=F64) < 0.1, math.nan)
    x[0, :3, 0] = x[1, -2:, 1] = math.nan
    t = torch.arange(20, dtype=F64)
    ours = natural_cubic_coeffs(x, t)
    with_time = torch.cat([t.expand(16, 20).unsqueeze(-1), x], -1)
    theirs = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(with_time, t), t)
    fine = torch.linspace(0, 19, 191, dtype=F64)
    assert torch.allclose(spline_evaluate(ours, fine), theirs.evaluate(fine), atol=1e-12)
    assert torch.allclose(spline_derivative(ours, fine), theirs.derivative(fine), atol=1e-12)


def test_neural_cde_matches_torchcde_cdeint():
    """Same spline, vector field and initial map: our fixed-step RK4 path converges at fourth
    order to torchcde's ``cdeint`` solved by an adaptive dopri5 at tolerance 1e-12."""
    torchcde = torchcde_or_skip()
    torch.manual_seed(0)
    x, _ = drop_time_rows(
        sine_data(4, seq_len=10, dim=2, generator=torch.Generator().manual_seed(0)).double(),
        0.3,
        torch.Generator().manual_seed(1),
    )
    t = torch.arange(10, dtype=F64)
    # a smooth field (the default's ReLU has kinks, which cost RK4 its order)
    field = nn.Sequential(
        nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 15), nn.Tanh(), nn.Unflatten(-1, (5, 3))
    )
    ncde = NeuralCDE(3, 5, vector_field=field).double()
    with_time = torch.cat([t.expand(4, 10).unsqueeze(-1), x], -1)
    spline = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(with_time, t), t)

    class Field(nn.Module):
        def forward(self, s, z):
            return ncde.vector_field(z)

    z0 = ncde.initial(spline.evaluate(t[0]))
    exact = torchcde.cdeint(spline, Field(), z0, t, method="dopri5", rtol=1e-12, atol=1e-12)
    errors = []
    for substeps in (4, 8):
        ncde.substeps = substeps
        ours = ncde(natural_cubic_coeffs(x, t))
        assert ours.shape == exact.shape == (4, 10, 5)
        errors.append((ours - exact).abs().max().item())
    # measured: 7.6e-7 and 4.8e-8, a ratio of 16 = 2^4
    assert errors[1] < 1e-6 and errors[0] / errors[1] > 10, errors


def test_missing_rows_give_spline_of_observed_points_only():
    t = torch.arange(10, dtype=F64)
    x = torch.sin(0.7 * t)[None, :, None].repeat(2, 1, 2)
    x[0, [2, 3, 6], :] = float("nan")  # dropped time rows
    x[1, [0, 1], 0] = float("nan")  # leading NaNs, channel 0 only
    x[1, [8, 9], 1] = float("nan")  # trailing NaNs, channel 1 only
    coeffs = natural_cubic_coeffs(x, include_time=False)
    assert all(torch.isfinite(z).all() for z in coeffs)
    # sequence 0 equals the spline fitted on its observed rows only, on a fine grid
    keep = [i for i in range(10) if i not in (2, 3, 6)]
    ref = natural_cubic_coeffs(x[0, keep], t[keep], include_time=False)
    dense = torch.linspace(0, 9, 181, dtype=F64)
    assert torch.allclose(spline_evaluate(coeffs, dense)[0], spline_evaluate(ref, dense)[0])
    # leading / trailing NaNs are filled by the nearest observation, which become knots
    vals = spline_evaluate(coeffs, t)
    assert torch.allclose(vals[1, :2, 0], x[1, 2, 0].expand(2))
    assert torch.allclose(vals[1, 8:, 1], x[1, 7, 1].expand(2))
    obs = ~torch.isnan(x)
    assert torch.allclose(vals[obs], x[obs])
    # natural at both ends of the knot set
    left, right = second_derivative_ends(coeffs)
    assert left.abs().max() < 1e-10 and right.abs().max() < 1e-10


def test_nan_rows_finite_gradients_and_edge_cases():
    x, _ = drop_time_rows(
        sine_data(5, seq_len=12, dim=2, generator=torch.Generator().manual_seed(0)),
        0.5,
        torch.Generator().manual_seed(1),
    )
    x = x.to(F64).requires_grad_()
    coeffs = natural_cubic_coeffs(x)
    loss = sum(z.pow(2).sum() for z in coeffs[1:])
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[torch.isnan(x)] == 0).all()
    # a channel with no observation is 0; a single observation gives a constant
    y = torch.full((1, 6, 2), float("nan"), dtype=F64)
    y[0, 3, 1] = 0.25
    c = natural_cubic_coeffs(y, include_time=False)
    vals = spline_evaluate(c, torch.linspace(0, 5, 11, dtype=F64))
    assert (vals[..., 0] == 0).all() and torch.allclose(
        vals[..., 1], torch.tensor(0.25, dtype=F64)
    )
    with pytest.raises(ValueError, match="strictly increasing"):
        natural_cubic_coeffs(torch.zeros(1, 3, 1), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        natural_cubic_coeffs(torch.zeros(1, 1, 1))


class ConstantField(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, z):
        return self.A.expand(z.shape[0], *self.A.shape)


@pytest.mark.parametrize("method", ["rk4", "euler"])
def test_neural_cde_constant_field_matches_analytic(method):
    g = torch.Generator().manual_seed(2)
    x, _ = drop_time_rows(torch.randn(3, 15, 2, generator=g, dtype=F64), 0.3, g)
    coeffs = natural_cubic_coeffs(x)
    A = torch.randn(4, 3, generator=g, dtype=F64)
    substeps = 1 if method == "rk4" else 64
    cde = NeuralCDE(3, 4, method=method, substeps=substeps, vector_field=ConstantField(A))
    cde = cde.to(F64)
    path = cde(coeffs)
    assert path.shape == (3, 15, 4)
    X = spline_evaluate(coeffs, coeffs.times)
    z0 = cde.initial(X[:, 0])
    expected = z0[:, None] + (X - X[:, :1]) @ A.T
    tol = 1e-12 if method == "rk4" else 1e-2  # RK4 = Simpson: exact on a quadratic dX
    assert (path - expected).abs().max() < tol * max(1.0, expected.abs().max().item())


def test_neural_cde_shape_and_gradients():
    torch.manual_seed(0)
    x, _ = drop_time_rows(torch.rand(4, 10, 3), 0.5, torch.Generator().manual_seed(0))
    cde = NeuralCDE(4, 6, width=16, substeps=2)
    path = cde(natural_cubic_coeffs(x))
    assert path.shape == (4, 10, 6) and torch.isfinite(path).all()
    path.pow(2).mean().backward()
    for name, p in cde.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="channels"):
        NeuralCDE(3, 6)(natural_cubic_coeffs(x))
    with pytest.raises(ValueError, match="method"):
        NeuralCDE(3, 6, method="dopri5")


@pytest.mark.parametrize("gru", [False, True])
def test_cde_encoder_in_koopman_vae(gru):
    pyro.clear_param_store()
    torch.manual_seed(0)
    x = sine_data(16, seq_len=8, dim=3, generator=torch.Generator().manual_seed(0))
    x_missing, mask = drop_time_rows(x, 0.5, torch.Generator().manual_seed(1))
    vae = KoopmanVAE(3, z_dim=4, hidden=8)
    vae.encoder = CDEEncoder.for_model(vae, width=16, gru=gru)
    out, last = vae.encoder(
        torch.cat([x_missing.nan_to_num(0.0), mask[..., None].expand_as(x)], -1).float()
    )
    assert out.shape == (16, 8, vae.encoder_out.in_features) and last.shape == (16, 16)
    loc, scale = vae.encode(x_missing, mask)
    assert loc.shape == scale.shape == (16, 8, 4) and torch.isfinite(loc).all()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    before = [p.detach().clone() for p in vae.encoder.parameters()]
    losses = [svi.step(x_missing, mask) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(b, p) for b, p in zip(before, vae.encoder.parameters()))
    with pytest.raises(ValueError, match="2 \\* x_dim"):
        vae.encoder(torch.zeros(2, 8, 3))
