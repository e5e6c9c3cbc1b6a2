r"""Natural cubic splines of irregular series and a neural CDE encoder, in plain torch.

For irregular time series, Kidger et al. (NeurIPS 2020, "Neural Controlled Differential
Equations for Irregular Time Series") interpolate the observed points of each channel by a
natural cubic spline :math:`X(t)` (with time itself as a channel) and solve the controlled
differential equation

.. math:: z(t_0) = \zeta_\theta(X(t_0)), \qquad
    \mathrm dz(t) = f_\theta(z(t))\, \mathrm dX(t)
    = f_\theta(z(t))\, \dot X(t)\, \mathrm dt,

with :math:`f_\theta(z) \in \mathbb R^{h \times c}`. The Koopman VAE (Naiman, Berman et al.,
ICLR 2024) feeds the hidden path :math:`z(t_1), \dots, z(t_T)` to its per-step posterior on the
irregular benchmarks. This module implements, in plain torch (no torchcde dependency; the
tests check the splines and the solver against torchcde's),

* :func:`natural_cubic_coeffs`: per-channel natural cubic splines through the observed
  (non-NaN) points of every sequence, vectorised over batch and channels (one batched
  tridiagonal solve, :func:`tridiagonal_solve`), re-expressed as one cubic per grid interval;
* :func:`spline_evaluate`, :func:`spline_derivative`: :math:`X(t)` and :math:`\dot X(t)`;
* :class:`NeuralCDE`: fixed-step RK4 (or Euler) solve of the CDE on the spline, returning the
  hidden path at the grid times;
* :class:`CDEEncoder`: a drop-in replacement for :class:`pplx.models.KoopmanVAE`'s GRU encoder
  (``vae.encoder = CDEEncoder.for_model(vae)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from pyro.infer.util import is_validation_enabled
from torch import nn

__all__ = [
    "CDEEncoder",
    "CubicCoeffs",
    "NeuralCDE",
    "natural_cubic_coeffs",
    "spline_derivative",
    "spline_evaluate",
    "tridiagonal_solve",
]


class CubicCoeffs(NamedTuple):
    r"""Piecewise-cubic path on a grid :math:`t_0 < \dots < t_{T-1}`.

    On :math:`[t_i, t_{i+1}]`, with :math:`s = t - t_i`,
    :math:`X(t) = a_i + b_i s + c_i s^2 + d_i s^3`.

    Attributes:
        times: Grid, shape ``(T,)``.
        a: Values at the left ends, ``(B, T-1, C)``.
        b: First derivatives at the left ends, ``(B, T-1, C)``.
        c: Half the second derivatives at the left ends, ``(B, T-1, C)``.
        d: A sixth of the third derivatives, ``(B, T-1, C)``.
    """

    times: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor


def tridiagonal_solve(
    lower: torch.Tensor, diag: torch.Tensor, upper: torch.Tensor, rhs: torch.Tensor
) -> torch.Tensor:
    r"""Solve batched tridiagonal systems by the Thomas algorithm (differentiable).

    Row :math:`i` reads :math:`l_i x_{i-1} + m_i x_i + u_i x_{i+1} = r_i`; ``lower[..., 0]``
    and ``upper[..., -1]`` are ignored. Stable for diagonally dominant systems (such as the
    spline systems here); :math:`O(n)` per system, a Python loop over :math:`n` vectorised over
    the leading dimensions.

    Args:
        lower: Sub-diagonal, shape ``(..., n)``.
        diag: Diagonal, ``(..., n)``.
        upper: Super-diagonal, ``(..., n)``.
        rhs: Right-hand sides, ``(..., n)``.

    Returns:
        The solution :math:`x`, shape ``(..., n)``.
    """
    n = diag.shape[-1]
    c_prime = [upper[..., 0] / diag[..., 0]]
    r_prime = [rhs[..., 0] / diag[..., 0]]
    for i in range(1, n):
        m = diag[..., i] - lower[..., i] * c_prime[-1]
        c_prime.append(upper[..., i] / m)
        r_prime.append((rhs[..., i] - lower[..., i] * r_prime[-1]) / m)
    x = [r_prime[-1]]
    for i in range(n - 2, -1, -1):
        x.append(r_prime[i] - c_prime[i] * x[-1])
    return torch.stack(x[::-1], -1)


def _check_times(times: torch.Tensor | None, T: int, like: torch.Tensor) -> torch.Tensor:
    if times is None:
        return torch.arange(T, dtype=like.dtype, device=like.device)
    times = torch.as_tensor(times, dtype=like.dtype, device=like.device)
    if times.shape != (T,):
        raise ValueError(f"times must have shape (T,)=({T},), got {tuple(times.shape)}")
    if not torch.isfinite(times).all() or not (times[1:] > times[:-1]).all():
        raise ValueError("times must be finite and strictly increasing")
    return times


def natural_cubic_coeffs(
    x: torch.Tensor, times: torch.Tensor | None = None, *, include_time: bool = True
) -> CubicCoeffs:
    r"""Natural cubic spline coefficients through the observed points of each channel.

    For every sequence and channel the knots are the times :math:`t_i` at which
    :math:`x_{i}` is not NaN; leading and trailing NaNs are first filled with the nearest
    observed value (so every spline spans the whole grid; a channel with no observation is 0),
    as torchcde does. The natural spline through knots :math:`(\tau_k, y_k)`, with
    :math:`h_k = \tau_{k+1} - \tau_k` and second derivatives :math:`M_k`, solves the
    tridiagonal system

    .. math:: h_{k-1} M_{k-1} + 2(h_{k-1} + h_k) M_k + h_k M_{k+1}
        = 6\Big(\frac{y_{k+1} - y_k}{h_k} - \frac{y_k - y_{k-1}}{h_{k-1}}\Big),
        \qquad M_0 = M_{K-1} = 0.

    The knots of each (sequence, channel) are compacted to the front and padded with identity
    rows, so all systems are solved at once (:func:`tridiagonal_solve`); the spline is then
    re-expanded as one cubic per grid interval (:class:`CubicCoeffs`). The result is
    :math:`C^2`, interpolates the observed points and has zero second derivative at both
    ends. Differentiable in the observed values (NaN entries get zero gradient).

    Args:
        x: Series ``(B, T, d)`` (or ``(T, d)``), NaN where missing; ``T >= 2``.
        times: Strictly increasing grid ``(T,)`` shared by the batch (default
            ``0, 1, ..., T-1``).
        include_time: Prepend time as channel 0 (recommended by Kidger et al.: it makes the
            CDE see when observations happen), giving ``C = d + 1`` channels.

    Returns:
        The :class:`CubicCoeffs` of the ``C`` channels.
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor (B, T, d) or (T, d), got {shape}")
    if x.dim() == 2:
        x = x.unsqueeze(0)
    B, T, _ = x.shape
    if T < 2:
        raise ValueError(f"x needs at least 2 time steps, got T={T}")
    # A value check, so it follows Pyro's validation switch (off while a compiled objective
    # records the program).
    if is_validation_enabled() and torch.isinf(x).any():
        raise ValueError("x has infinite values")
    times = _check_times(times, T, x)
    if include_time:
        x = torch.cat([times.expand(B, T).unsqueeze(-1), x], -1)
    C = x.shape[-1]
    y = x.transpose(1, 2).reshape(B * C, T)  # one row per (sequence, channel)
    obs = ~torch.isnan(y)
    y = torch.where(obs, y, torch.zeros((), dtype=y.dtype, device=y.device))
    idx = torch.arange(T, device=y.device)

    # Fill leading / trailing NaNs with the nearest observation (they become knots).
    first = obs.long().argmax(1, keepdim=True)
    last = T - 1 - obs.flip(1).long().argmax(1, keepdim=True)
    before, after = idx < first, idx > last
    y = torch.where(before, y.gather(1, first), torch.where(after, y.gather(1, last), y))
    obs = obs | before | after | ~obs.any(1, keepdim=True)

    # Compact the knots to the front (stable: keeps time order); pad with unit steps.
    K = obs.sum(1, keepdim=True)
    order = torch.argsort((~obs).long(), dim=1, stable=True)
    pad = idx >= K
    t_last = times[-1]
    tk = torch.where(pad, t_last + (idx - K + 1).to(y.dtype), times[order])
    yc = y.gather(1, order)
    yk = torch.where(pad, yc.gather(1, K - 1), yc)

    h = tk[:, 1:] - tk[:, :-1]
    slope = (yk[:, 1:] - yk[:, :-1]) / h
    zeros = y.new_zeros(B * C, 1)
    active = (idx >= 1) & (idx <= K - 2)
    one, zero = y.new_ones(()), y.new_zeros(())
    h_left = torch.cat([zeros + 1, h], 1)  # h_{k-1}
    h_right = torch.cat([h, zeros + 1], 1)  # h_k
    lower = torch.where(active, h_left, zero)
    upper = torch.where(active, h_right, zero)
    diag = torch.where(active, 2 * (h_left + h_right), one)
    rhs_full = torch.cat([zeros, slope[:, 1:] - slope[:, :-1], zeros], 1)
    rhs = torch.where(active, 6 * rhs_full, zero)
    M = tridiagonal_solve(lower, diag, upper, rhs)

    # Re-expand on the grid: interval i lies in knot interval k(i).
    grid = times[:-1].expand(B * C, T - 1).contiguous()
    k = torch.searchsorted(tk.contiguous(), grid, right=True) - 1
    k = k.clamp(0, T - 2)
    t0, t1 = tk.gather(1, k), tk.gather(1, k + 1)
    y0, y1 = yk.gather(1, k), yk.gather(1, k + 1)
    m0, m1 = M.gather(1, k), M.gather(1, k + 1)
    hk = t1 - t0
    u, v = grid - t0, t1 - grid
    lin0, lin1 = y0 / hk - m0 * hk / 6, y1 / hk - m1 * hk / 6
    a = (m0 * v**3 + m1 * u**3) / (6 * hk) + lin0 * v + lin1 * u
    b = (m1 * u**2 - m0 * v**2) / (2 * hk) - lin0 + lin1
    c = (m0 * v + m1 * u) / (2 * hk)
    d = (m1 - m0) / (6 * hk)

    def unflatten(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(B, C, T - 1).transpose(1, 2)

    return CubicCoeffs(times, unflatten(a), unflatten(b), unflatten(c), unflatten(d))


def _locate(coeffs: CubicCoeffs, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    times = coeffs.times
    t = torch.as_tensor(t, dtype=times.dtype, device=times.device)
    i = (torch.searchsorted(times, t.reshape(-1), right=True) - 1).clamp(0, len(times) - 2)
    return i.reshape(t.shape), t - times[i.reshape(t.shape)]


def _gather(coef: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    # coef (B, T-1, C); i of any shape -> (B, *i.shape, C)
    return coef[:, i]


def spline_evaluate(coeffs: CubicCoeffs, t: torch.Tensor | float) -> torch.Tensor:
    r"""Evaluate :math:`X(t)` (constant-cubic extrapolation of the end pieces outside the grid).

    Args:
        coeffs: From :func:`natural_cubic_coeffs`.
        t: Scalar or tensor of times.

    Returns:
        ``(B, C)`` for a scalar ``t``, else ``(B, *t.shape, C)``.
    """
    i, s = _locate(coeffs, t)
    s = s.unsqueeze(-1)
    a, b, c, d = (_gather(z, i) for z in coeffs[1:])
    return a + s * (b + s * (c + s * d))


def spline_derivative(coeffs: CubicCoeffs, t: torch.Tensor | float) -> torch.Tensor:
    r"""Evaluate :math:`\dot X(t) = b_i + 2 c_i s + 3 d_i s^2`; see :func:`spline_evaluate`."""
    i, s = _locate(coeffs, t)
    s = s.unsqueeze(-1)
    _, b, c, d = (_gather(z, i) for z in coeffs[1:])
    return b + s * (2 * c + 3 * s * d)


class NeuralCDE(nn.Module):
    r"""Neural CDE :math:`\mathrm dz = f_\theta(z)\, \mathrm dX` driven by a cubic spline.

    :math:`z(t_0) = W X(t_0) + w` and, on each grid interval, ``substeps`` fixed steps of RK4
    (or Euler) integrate :math:`\dot z = f_\theta(z) \dot X(t)`. The default vector field is
    the MLP of Kidger et al., :math:`f_\theta(z) = \tanh(W_2\, \mathrm{ReLU}(W_1 z + b_1) + b_2)`
    reshaped to ``(hidden, C)``. With RK4, a vector field that does not depend on :math:`z`
    is integrated exactly (Simpson's rule is exact on the quadratic :math:`\dot X`).

    Args:
        input_channels: Channels :math:`C` of the spline (``d + 1`` with the time channel).
        hidden: Dimension :math:`h` of :math:`z`.
        width: Width of the default vector-field MLP.
        method: ``"rk4"`` or ``"euler"``.
        substeps: Solver steps per grid interval.
        vector_field: Optional replacement for :math:`f_\theta`: a callable (an
            ``nn.Module`` to have its parameters trained) mapping ``(B, hidden)`` to
            ``(B, hidden, C)``.
    """

    def __init__(
        self,
        input_channels: int,
        hidden: int,
        *,
        width: int = 64,
        method: str = "rk4",
        substeps: int = 1,
        vector_field: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("input_channels", input_channels), ("hidden", hidden)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if method not in ("rk4", "euler"):
            raise ValueError(f"method must be 'rk4' or 'euler', got {method!r}")
        if int(substeps) != substeps or substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
        self.input_channels, self.hidden = input_channels, hidden
        self.method, self.substeps = method, substeps
        self.initial = nn.Linear(input_channels, hidden)
        if vector_field is None:
            vector_field = nn.Sequential(
                nn.Linear(hidden, width),
                nn.ReLU(),
                nn.Linear(width, hidden * input_channels),
                nn.Tanh(),
                nn.Unflatten(-1, (hidden, input_channels)),
            )
        self.vector_field = vector_field

    def _rhs(self, z: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        f = self.vector_field(z)
        return (f @ dx.unsqueeze(-1)).squeeze(-1)

    def forward(self, coeffs: CubicCoeffs) -> torch.Tensor:
        r"""Hidden path at the grid times.

        Args:
            coeffs: Spline of the input, :func:`natural_cubic_coeffs` with ``C`` channels.

        Returns:
            :math:`z(t_0), \dots, z(t_{T-1})`, shape ``(B, T, hidden)``.
        """
        times, a, b, c, d = coeffs
        if a.shape[-1] != self.input_channels:
            raise ValueError(
                f"spline has {a.shape[-1]} channels, expected input_channels={self.input_channels}"
            )
        z = self.initial(a[:, 0])
        path = [z]
        for i in range(len(times) - 1):
            bi, ci, di = b[:, i], c[:, i], d[:, i]
            dt = (times[i + 1] - times[i]) / self.substeps

            def dx(s: torch.Tensor, bi=bi, ci=ci, di=di) -> torch.Tensor:
                return bi + s * (2 * ci + 3 * s * di)

            for j in range(self.substeps):
                s = j * dt
                if self.method == "euler":
                    z = z + dt * self._rhs(z, dx(s))
                    continue
                mid = dx(s + dt / 2)
                k1 = self._rhs(z, dx(s))
                k2 = self._rhs(z + dt / 2 * k1, mid)
                k3 = self._rhs(z + dt / 2 * k2, mid)
                k4 = self._rhs(z + dt * k3, dx(s + dt))
                z = z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            path.append(z)
        return torch.stack(path, 1)


class CDEEncoder(nn.Module):
    r"""Neural-CDE encoder for :class:`pplx.models.KoopmanVAE` on irregular data.

    Has the call signature of the VAE's GRU encoder (``vae.encoder``): it takes the
    concatenation ``[zero-filled x, mask]`` of shape ``(B, T, 2 d)`` that
    :meth:`KoopmanVAE.encode` builds, turns the unobserved entries back into NaNs, fits
    :func:`natural_cubic_coeffs` (time as an extra channel) and runs a :class:`NeuralCDE`;
    it returns ``(output, last)`` like ``nn.GRU``, with ``output`` of shape
    ``(B, T, out_features)`` feeding ``vae.encoder_out``. Swap it in with

    .. code-block:: python

        vae.encoder = CDEEncoder.for_model(vae)

    (before creating the optimiser / ``SVI``, or after ``pyro.clear_param_store()``).

    Args:
        x_dim: Number of features :math:`d`.
        out_features: Output width; must equal ``vae.encoder_out.in_features`` (that is
            ``2 * hidden`` for the default bidirectional VAE).
        hidden: CDE state size (default ``out_features``).
        times: Grid ``(T,)`` of the series (default ``0, 1, ..., T-1``).
        gru: Run a GRU over the CDE path (the CDE "feeds the encoder"); otherwise a linear map
            to ``out_features`` when ``hidden != out_features``.
        **cde_kwargs: Passed to :class:`NeuralCDE` (``width``, ``method``, ``substeps``).
    """

    def __init__(
        self,
        x_dim: int,
        out_features: int,
        *,
        hidden: int | None = None,
        times: torch.Tensor | None = None,
        gru: bool = False,
        **cde_kwargs,
    ) -> None:
        super().__init__()
        if int(x_dim) != x_dim or x_dim < 1:
            raise ValueError(f"x_dim must be a positive integer, got {x_dim!r}")
        if int(out_features) != out_features or out_features < 1:
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        hidden = out_features if hidden is None else hidden
        self.x_dim, self.out_features = x_dim, out_features
        self.times = None if times is None else torch.as_tensor(times)
        self.cde = NeuralCDE(x_dim + 1, hidden, **cde_kwargs)
        self.head: nn.Module | None
        if gru:
            self.head = nn.GRU(hidden, out_features, batch_first=True)
        elif hidden != out_features:
            self.head = nn.Linear(hidden, out_features)
        else:
            self.head = None

    @classmethod
    def for_model(cls, vae: nn.Module, **kwargs) -> CDEEncoder:
        """Encoder sized for a :class:`~pplx.models.KoopmanVAE` (its ``x_dim`` and read-out)."""
        kwargs.setdefault("hidden", vae.hidden)
        enc = cls(vae.x_dim, vae.encoder_out.in_features, **kwargs)
        p = vae.encoder_out.weight
        return enc.to(device=p.device, dtype=p.dtype)

    def forward(self, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``[zero-filled x, mask]`` of shape ``(B, T, 2 d)``.

        Returns:
            ``(output, output[:, -1])`` with ``output`` of shape ``(B, T, out_features)``.
        """
        if inp.dim() != 3 or inp.shape[-1] != 2 * self.x_dim:
            raise ValueError(
                f"input must have shape (B, T, 2 * x_dim={2 * self.x_dim}), got {tuple(inp.shape)}"
            )
        values, mask = inp[..., : self.x_dim], inp[..., self.x_dim :] > 0.5
        x = values.masked_fill(~mask, float("nan"))
        times = None if self.times is None else self.times.to(x.device)
        out = self.cde(natural_cubic_coeffs(x, times))
        if isinstance(self.head, nn.GRU):
            out = self.head(out)[0]
        elif self.head is not None:
            out = self.head(out)
        return out, out[:, -1]
