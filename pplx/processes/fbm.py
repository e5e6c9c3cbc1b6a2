r"""Markov-approximate fractional Brownian motion (MA-fBM).

Fractional Brownian motion :math:`B^H` with Hurst index :math:`H \in (0, 1)` is a centred
Gaussian process with covariance

.. math::

    \operatorname{Cov}(B^H_t, B^H_s) = \tfrac12 \left(t^{2H} + s^{2H} - |t - s|^{2H}\right).

It is not Markov, which makes it awkward as the driving noise of an SDE. Its Markov
approximation (Harms & Stefanovits; used for fractional SDEs by Daems et al., ICLR 2024)
replaces the fractional kernel by a weighted sum of exponentials: :math:`K` Ornstein-Uhlenbeck
processes driven by **one shared** Brownian motion :math:`W`,

.. math::

    dY_k(t) = -\gamma_k Y_k(t)\, dt + dW(t), \qquad k = 1, \dots, K,

with speeds :math:`\gamma_k` on a geometric grid (:func:`geometric_gammas`), and

* **type I** (approximates the Mandelbrot-van Ness representation, i.e. standard fBM with
  :math:`\operatorname{Var} B^H_t = t^{2H}`): :math:`Y(0)` drawn from the stationary joint law
  :math:`\operatorname{Cov}(Y_i(0), Y_j(0)) = 1 / (\gamma_i + \gamma_j)` and
  :math:`\hat B^H_t = \sum_k \omega_k \,(Y_k(t) - Y_k(0))`;
* **type II** (approximates Riemann-Liouville fBM
  :math:`\frac{1}{\Gamma(H + 1/2)} \int_0^t (t - u)^{H - 1/2} dW_u`): :math:`Y(0) = 0` and
  :math:`\hat B^H_t = \sum_k \omega_k Y_k(t)`.

The weights :math:`\omega` (:func:`fbm_weights`) minimise the mean squared error
:math:`\int_0^T \mathbb{E}[(B^H_t - \hat B^H_t)^2]\, dt` over a horizon :math:`[0, T]`; they
are the solution of a :math:`K \times K` linear system whose right-hand side involves
incomplete gamma functions, and they are differentiable in :math:`H` (through
:mod:`pplx.processes.special`), so :math:`H` can be learned by gradient descent.

What this module offers:

* :func:`geometric_gammas`: the speed grid;
* :func:`fbm_weights`: the optimal weights, in closed form (:func:`fbm_weights_jet`: with
  their derivative in :math:`H`);
* :func:`fbm_covariance`: the exact covariance of standard fBM (type I target) or of
  Riemann-Liouville fBM (type II target);
* :func:`ma_fbm_covariance`: the exact covariance of the approximation
  :math:`\hat B^H` (from the Ornstein-Uhlenbeck covariances, in closed form);
* :func:`sample_ma_fbm`: batched path sampling on a time grid, by the exact discretisation of
  the Ornstein-Uhlenbeck system or by the Euler-Maruyama step used in SDE models;
* :func:`sample_fbm`: exact fBM paths on a uniform grid by the Davies-Harte (circulant
  embedding) method, the ground truth the approximation is compared with.

Conventions: times are 1-D tensors of nonnegative, strictly increasing values (0 may be left
out: every path starts at :math:`\hat B^H_0 = 0`). Results take the device of the inputs and
their floating dtype (or ``dtype=``); internal arithmetic is float64 (float32 on devices
without float64), because the weights of a wide speed grid alternate in sign and the linear
system is ill-conditioned. Gradients flow to ``hurst`` through every function (the sampled
paths are reparameterised: linear in the weights).

Reference:
    K. Daems, M. Opper, G. Crevecoeur and T. Birdal, "Variational Inference for SDEs Driven by
    Fractional Noise", ICLR 2024. P. Harms and D. Stefanovits, "Affine representations of
    fractional processes with applications in mathematical finance", Stochastic Processes and
    their Applications 129(4), 2019. R. B. Davies and D. S. Harte, "Tests for Hurst effect",
    Biometrika 74(1), 1987.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pplx.processes.special import gammainc, gammaincc_scaled

__all__ = [
    "KINDS",
    "fbm_covariance",
    "fbm_weights",
    "fbm_weights_jet",
    "geometric_gammas",
    "ma_fbm_covariance",
    "mvn_variance",
    "sample_fbm",
    "sample_ma_fbm",
]

#: The two types of Markov approximation (see the module documentation).
KINDS = ("I", "II")

#: Default number of Ornstein-Uhlenbeck processes :math:`K` of :func:`sample_ma_fbm`.
DEFAULT_NUM_PROCESSES = 5
#: Default fastest speed :math:`\gamma_{\max}` (Daems et al. use 20 with :math:`K = 5`).
DEFAULT_GAMMA_MAX = 20.0

_METHODS = ("exact", "euler")

#: Relative eigenvalue cutoff of the weights' (equilibrated) linear system, per compute dtype.
_RCOND = {torch.float64: 1e-12, torch.float32: 1e-6}

TimesLike = torch.Tensor | Sequence[float] | tuple[float, int]


# --------------------------------------------------------------------------- input checks


def _compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _check_kind(kind: str) -> str:
    if isinstance(kind, str):
        canonical = kind.strip().upper().removeprefix("TYPE").strip()
        if canonical in KINDS:
            return canonical
    raise ValueError(
        f"kind must be 'I' (stationary start, approximates standard / Mandelbrot-van Ness fBM) "
        f"or 'II' (zero start, approximates Riemann-Liouville fBM), got {kind!r}"
    )


def _check_hurst(hurst: torch.Tensor | float | None, name: str = "hurst") -> torch.Tensor:
    """Return ``hurst`` as a 0-dimensional tensor (keeping its graph), checked to lie in (0, 1)."""
    if hurst is None:
        raise ValueError(f"{name} is required (the Hurst index H in (0, 1))")
    if isinstance(hurst, torch.Tensor):
        if hurst.numel() != 1:
            raise ValueError(
                f"{name} must be a single number (a 0-dimensional tensor), got shape "
                f"{tuple(hurst.shape)}"
            )
        if hurst.is_complex():
            raise TypeError(f"{name} must be real, got dtype {hurst.dtype}")
        if not hurst.is_floating_point():
            hurst = hurst.to(torch.get_default_dtype())
        hurst = hurst.reshape(())
        value = float(hurst.detach())
    elif isinstance(hurst, (int, float)) and not isinstance(hurst, bool):
        value = float(hurst)
        hurst = torch.tensor(value, dtype=torch.float64)  # exact; results follow other inputs
    else:
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {hurst!r}")
    if not (0.0 < value < 1.0):  # also rejects NaN
        raise ValueError(
            f"{name} must lie strictly between 0 and 1 (the Hurst index of fractional Brownian "
            f"motion), got {value}; use a value in (0, 1) (H = 0.5 is Brownian motion)"
        )
    return hurst


def _check_positive(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got shape {tuple(value.shape)}")
        value = float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _check_gammas(gammas, device: torch.device | None = None) -> torch.Tensor:
    """Return the speeds as a 1-D floating tensor, checked: K >= 1, positive, finite, distinct."""
    if not isinstance(gammas, torch.Tensor):
        try:
            gammas = torch.as_tensor(gammas, dtype=torch.float64, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"gammas must be a 1-D tensor of speeds, got {gammas!r}") from err
    if not gammas.is_floating_point():
        gammas = gammas.to(torch.get_default_dtype())
    if gammas.dim() != 1:
        raise ValueError(
            f"gammas must be a 1-D tensor of K speeds, got shape {tuple(gammas.shape)}"
        )
    if gammas.numel() < 1:
        raise ValueError(
            "gammas is empty: the approximation needs K >= 1 Ornstein-Uhlenbeck processes"
        )
    g = gammas.detach()
    if not bool(torch.isfinite(g).all()) or not bool((g > 0).all()):
        raise ValueError(f"gammas must be finite and > 0, got {g.tolist()}")
    if g.numel() > 1 and torch.unique(g).numel() != g.numel():
        raise ValueError(
            f"gammas must be distinct (equal speeds make the weights' linear system singular), "
            f"got {g.tolist()}"
        )
    return gammas


def _check_times(times, device: torch.device | None, dtype: torch.dtype) -> torch.Tensor:
    """Return observation times as a 1-D tensor: a tensor/sequence, or a pair (T, num_steps)."""
    if (
        isinstance(times, tuple)
        and len(times) == 2
        and isinstance(times[1], int)
        and not isinstance(times[1], bool)
    ):
        horizon, num_steps = times
        horizon = _check_positive(horizon, "times[0] (the horizon T of the pair (T, num_steps))")
        if num_steps < 1:
            raise ValueError(f"num_steps (times[1]) must be >= 1, got {num_steps}")
        return torch.linspace(0.0, horizon, num_steps + 1, dtype=dtype, device=device)
    if not isinstance(times, torch.Tensor):
        try:
            times = torch.as_tensor(times, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"times must be a 1-D tensor of times or a pair (T, num_steps), got {times!r}"
            ) from err
    if times.dim() != 1 or times.numel() < 1:
        raise ValueError(
            f"times must be a non-empty 1-D tensor (or a pair (T, num_steps)), got shape "
            f"{tuple(times.shape)}"
        )
    if not times.is_floating_point():
        times = times.to(dtype)
    t = times.detach()
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError("times must be finite and >= 0")
    if t.numel() > 1 and not bool((t[1:] > t[:-1]).all()):
        raise ValueError("times must be strictly increasing")
    return times


def _check_horizon(horizon, times: torch.Tensor) -> float:
    t_max = float(times.detach().max())
    if horizon is None:
        if t_max <= 0.0:
            raise ValueError(
                "times contains only t = 0; give later times or a horizon T > 0 for the weights"
            )
        return t_max
    horizon = _check_positive(horizon, "horizon")
    if t_max > horizon * (1.0 + 1e-12):
        raise ValueError(
            f"observation times outside the grid [0, horizon] = [0, {horizon}]: the largest "
            f"time is {t_max}. The weights are optimal on [0, horizon] only; pass a larger "
            f"horizon (or leave it out to use the largest time)"
        )
    return horizon


def _infer_dtype(*values) -> torch.dtype:
    dtype = None
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            dtype = v.dtype if dtype is None else torch.promote_types(dtype, v.dtype)
    return torch.get_default_dtype() if dtype is None else dtype


def _infer_device(*values) -> torch.device:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.empty(0).device


# --------------------------------------------------------------------------- speeds, weights


def geometric_gammas(
    num_processes: int = DEFAULT_NUM_PROCESSES,
    gamma_max: float = DEFAULT_GAMMA_MAX,
    gamma_min: float | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Speeds :math:`\gamma_1 < \dots < \gamma_K` on a geometric grid.

    With the default ``gamma_min = 1 / gamma_max`` this is the grid of Daems et al.,
    :math:`\gamma_k = r^{k - (K + 1)/2}` with ratio :math:`r = \gamma_{\max}^{2/(K-1)}`,
    symmetric around 1 on a log scale. In general
    :math:`\gamma_k = \gamma_{\min} (\gamma_{\max}/\gamma_{\min})^{(k-1)/(K-1)}`, and
    :math:`K = 1` gives the single speed :math:`\sqrt{\gamma_{\min}\gamma_{\max}}`.

    Choosing the range: the speeds are rates in units of 1/time. Rough paths
    (:math:`H < 1/2`) need fast speeds (:math:`\gamma_{\max} T \gg 1`), long memory
    (:math:`H > 1/2`) needs slow ones (:math:`\gamma_{\min} T \ll 1`); the guide
    (``docs/guides/fbm.rst``) tabulates the approximation error. An Euler-Maruyama step
    :math:`\Delta t` needs :math:`\gamma_{\max} \Delta t < 0.5`.

    Args:
        num_processes: :math:`K \ge 1`.
        gamma_max: Fastest speed, ``> 0``.
        gamma_min: Slowest speed, ``0 < gamma_min < gamma_max`` (default ``1 / gamma_max``,
            which needs ``gamma_max > 1``).
        dtype: Floating dtype (default: torch's default dtype).
        device: Device (default: torch's default device).

    Returns:
        Tensor of shape ``(num_processes,)``, increasing.

    Raises:
        ValueError: If ``num_processes < 1`` or the range is empty or not positive.
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int):
        raise TypeError(f"num_processes (K) must be an int >= 1, got {num_processes!r}")
    if num_processes < 1:
        raise ValueError(
            f"num_processes (K) must be >= 1 Ornstein-Uhlenbeck process, got {num_processes}"
        )
    gamma_max = _check_positive(gamma_max, "gamma_max")
    if gamma_min is None:
        gamma_min = 1.0 / gamma_max
    gamma_min = _check_positive(gamma_min, "gamma_min")
    if num_processes > 1 and not gamma_min < gamma_max:
        raise ValueError(
            f"need gamma_min < gamma_max for K > 1 speeds, got gamma_min = {gamma_min}, "
            f"gamma_max = {gamma_max} (the default gamma_min = 1 / gamma_max needs "
            f"gamma_max > 1)"
        )
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if num_processes == 1:
        return torch.tensor([math.sqrt(gamma_min * gamma_max)], dtype=dtype, device=device)
    exponents = torch.linspace(0.0, 1.0, num_processes, dtype=torch.float64)
    log_g = math.log(gamma_min) + exponents * (math.log(gamma_max) - math.log(gamma_min))
    return torch.exp(log_g).to(dtype=dtype, device=device)


def mvn_variance(hurst: torch.Tensor | float) -> torch.Tensor:
    r"""Variance constant :math:`V_H` of the Mandelbrot-van Ness representation.

    The process :math:`\frac{1}{\Gamma(H + 1/2)} \int_{-\infty}^{t}
    \left[(t - u)_+^{H - 1/2} - (-u)_+^{H - 1/2}\right] dW_u` has variance
    :math:`V_H\, t^{2H}` with

    .. math::

        V_H = \frac{1}{\Gamma(H + 1/2)^2}\left[\int_0^\infty
              \left((1 + s)^{H - 1/2} - s^{H - 1/2}\right)^2 ds + \frac{1}{2H}\right]
            = \frac{1}{\Gamma(2H + 1) \sin(\pi H)}

    (Mandelbrot & Van Ness, 1968), so :math:`V_{1/2} = 1`. Type-I weights are divided by
    :math:`\sqrt{V_H}` to approximate standard fBM (:math:`1/\sqrt{V_H} \approx 0.72` at
    :math:`H = 0.2`, :math:`0.92` at :math:`H = 0.8`). Differentiable in ``hurst``.

    Args:
        hurst: Hurst index in :math:`(0, 1)`.

    Returns:
        0-dimensional tensor.
    """
    out_dtype = _infer_dtype(hurst)
    hurst = _check_hurst(hurst)
    return _mvn_variance(hurst.to(_compute_dtype(hurst.device))).to(out_dtype)


def _mvn_variance(h: torch.Tensor) -> torch.Tensor:
    """:math:`V_H` elementwise, unchecked (see :func:`mvn_variance`)."""
    return torch.exp(-torch.lgamma(2.0 * h + 1.0)) / torch.sin(math.pi * h)


def _phi2(x: torch.Tensor) -> torch.Tensor:
    r""":math:`(x - 1 + e^{-x}) / x^2`, accurate for small :math:`x \ge 0` (Taylor series)."""
    small = x < 0.1
    xs = torch.where(small, x, torch.zeros_like(x))
    series = torch.zeros_like(x)
    for n in range(12, -1, -1):  # sum_n (-x)^n / (n + 2)!, Horner form
        series = series * (-xs) + 1.0 / math.factorial(n + 2)
    xl = torch.where(small, torch.ones_like(x), x)
    direct = (xl + torch.expm1(-xl)) / xl**2
    return torch.where(small, series, direct)


def _b_type_one(a: torch.Tensor, g: torch.Tensor, horizon: float) -> torch.Tensor:
    r"""Right-hand side of the type-I system for the Mandelbrot-van Ness kernel.

    :math:`b_k = 2T\gamma^{-a} - \frac{T^a}{\gamma\,\Gamma(a + 1)}
    + \frac{e^{-\gamma T} - e^{\gamma T} Q(a, \gamma T)}{\gamma^{a + 1}}` with
    :math:`a = H + 1/2`. For :math:`x = \gamma T \le 1` the same quantity is evaluated as
    :math:`T^{a+1}\left[\sum_{n \ge 0} \frac{x^n}{\Gamma(a + n + 2)}
    - 2\,\frac{\sinh x - x}{x^{a+1}}\right]`, which avoids the cancellation of the
    closed form as :math:`x \to 0`.
    """
    x = g * horizon
    small = x <= 1.0
    # Series branch, on safe inputs (x in (0, 1]).
    xs = torch.where(small, x, torch.ones_like(x))
    n = torch.arange(40, dtype=x.dtype, device=x.device)
    log_terms = n * torch.log(xs).unsqueeze(-1) - torch.lgamma(a.unsqueeze(-1) + n + 2.0)
    series = torch.exp(log_terms).sum(-1)  # a: 0-dimensional or one value per speed
    sinh_minus = torch.zeros_like(xs)  # (sinh x - x) / x^3 = sum_m x^(2m) / (2m + 3)!
    for m in range(12, -1, -1):
        sinh_minus = sinh_minus * xs**2 + 1.0 / math.factorial(2 * m + 3)
    b_small = horizon ** (a + 1.0) * (series - 2.0 * sinh_minus * xs ** (2.0 - a))
    # Closed form with the scaled upper incomplete gamma function, on safe inputs (x > 1).
    gl = torch.where(small, torch.full_like(g, 2.0 / horizon), g)
    xl = gl * horizon
    scaled = gammaincc_scaled(a.expand_as(xl), xl)
    log_g = torch.log(gl)
    b_large = (
        2.0 * horizon * torch.exp(-a * log_g)
        - torch.exp(a * math.log(horizon) - torch.lgamma(a + 1.0)) / gl
        + (torch.exp(-xl) - scaled) * torch.exp(-(a + 1.0) * log_g)
    )
    return torch.where(small, b_small, b_large)


def _b_type_two(a: torch.Tensor, g: torch.Tensor, horizon: float) -> torch.Tensor:
    r""":math:`b_k = T\gamma^{-a} P(a, \gamma T) - a\,\gamma^{-(a+1)} P(a + 1, \gamma T)`."""
    x = g * horizon
    log_g = torch.log(g)
    a_k = a.expand_as(x)
    return horizon * torch.exp(-a * log_g) * gammainc(a_k, x) - a * torch.exp(
        -(a + 1.0) * log_g
    ) * gammainc(a_k + 1.0, x)


def fbm_weights(
    hurst: torch.Tensor | float,
    gammas: torch.Tensor | Sequence[float],
    horizon: float = 1.0,
    kind: str = "I",
) -> torch.Tensor:
    r"""Optimal weights :math:`\omega` of the Markov approximation, differentiable in ``hurst``.

    The weights minimise :math:`\int_0^T \mathbb{E}[(B^H_t - \hat B^H_t)^2]\, dt`, a quadratic
    form :math:`\omega^\top A \omega - 2 b^\top \omega + \text{const}`, so
    :math:`\omega = A^{-1} b` (Daems et al., 2024, with :math:`g_i = \gamma_i`,
    :math:`a = H + 1/2`, :math:`P` and :math:`Q` the regularised lower and upper incomplete
    gamma functions).

    Type II (Riemann-Liouville target, kernel :math:`(t-u)^{H-1/2} / \Gamma(H + 1/2)`):

    .. math::

        A_{ij} = \frac{T + (e^{-(g_i + g_j) T} - 1)/(g_i + g_j)}{g_i + g_j}, \qquad
        b_k = T g_k^{-a} P(a, g_k T) - a\, g_k^{-(a + 1)} P(a + 1, g_k T).

    Type I (Mandelbrot-van Ness target):

    .. math::

        A_{ij} = \frac{2T + (e^{-g_i T} - 1)/g_i + (e^{-g_j T} - 1)/g_j}{g_i + g_j}, \qquad
        b_k = \frac{2T}{g_k^{a}} - \frac{T^{a}}{g_k \Gamma(a + 1)}
              + \frac{e^{-g_k T} - e^{g_k T} Q(a, g_k T)}{g_k^{a + 1}},

    and then :math:`\omega` is divided by :math:`\sqrt{V_H}` (:func:`mvn_variance`) so that
    :math:`\hat B^H` approximates standard fBM, :math:`\operatorname{Var} B^H_t = t^{2H}`.

    Numerics: :math:`A` is evaluated as :math:`T^2 \varphi((g_i + g_j) T)` (type II) and
    :math:`T^2 (g_i \varphi(g_i T) + g_j \varphi(g_j T)) / (g_i + g_j)` (type I) with
    :math:`\varphi(x) = (x - 1 + e^{-x}) / x^2`, free of cancellation for slow speeds;
    :math:`e^{g T} Q` comes from :func:`~pplx.processes.special.gammaincc_scaled` (no overflow
    for fast speeds); the system is solved in float64 after a symmetric diagonal scaling
    (Jacobi equilibration), since :math:`A` is close to a Cauchy matrix and ill-conditioned
    for wide grids. The gradient in ``hurst`` flows through
    :func:`~pplx.processes.special.gammainc` / ``gammaincc_scaled``.

    Args:
        hurst: Hurst index :math:`H \in (0, 1)`: a float or a 0-dimensional tensor (may
            require grad).
        gammas: Speeds, shape ``(K,)``, positive and distinct (:func:`geometric_gammas`).
        horizon: :math:`T > 0`, the end of the interval the error is minimised over.
        kind: ``"I"`` or ``"II"``.

    Returns:
        Tensor of shape ``(K,)`` on the device of ``gammas``, with the promoted floating
        dtype of ``hurst`` and ``gammas``.

    Raises:
        ValueError: If ``hurst`` is outside (0, 1), ``gammas`` is empty (K < 1), not
            positive or not distinct, ``horizon <= 0``, or ``kind`` is unknown.
    """
    kind, hurst, gammas, horizon, out_dtype, cdtype = _weights_arguments(
        hurst, gammas, horizon, kind
    )
    h = hurst.to(device=gammas.device, dtype=cdtype)
    matrix, rhs = _weights_system(h, gammas.detach().to(cdtype), horizon, kind)
    return _solve_weights(matrix, rhs).to(out_dtype)


def _weights_arguments(hurst, gammas, horizon, kind):
    """Checked arguments of the weights, their output dtype and the dtype to compute in."""
    kind = _check_kind(kind)
    out_dtype = _infer_dtype(hurst, gammas)
    hurst = _check_hurst(hurst)
    gammas = _check_gammas(gammas)
    horizon = _check_positive(horizon, "horizon")
    return kind, hurst, gammas, horizon, out_dtype, _compute_dtype(gammas.device)


def fbm_weights_jet(
    hurst: torch.Tensor | float,
    gammas: torch.Tensor | Sequence[float],
    horizon: float = 1.0,
    kind: str = "I",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The weights :math:`\omega(H)` and their derivative :math:`d\omega / dH`, without a graph.

    The matrix of the weights' linear system does not depend on :math:`H` and the solve is
    linear, so :math:`d\omega/dH = A^{+}\, db/dH`; each :math:`b_k` depends on :math:`H` and
    :math:`\gamma_k` alone, so :math:`db/dH` is one backward pass with :math:`H` repeated
    per speed (the cost of one :func:`fbm_weights` with gradient). Used by
    :class:`~pplx.processes.sde.FractionalSDE` to compute the weights once per value of
    :math:`H` and attach the exact first derivative, :math:`\omega_0 + \omega'_0 (H - H_0)`
    at :math:`H = H_0`.

    Args:
        hurst: Hurst index :math:`H \in (0, 1)` (its graph, if any, is ignored).
        gammas: Speeds, shape ``(K,)``.
        horizon: :math:`T > 0`.
        kind: ``"I"`` or ``"II"``.

    Returns:
        ``(weights, derivative)``, both detached, shape ``(K,)``, dtype and device as
        :func:`fbm_weights`; ``weights`` equals :func:`fbm_weights` ``(hurst, ...)``.

    Raises:
        ValueError: As :func:`fbm_weights`.
    """
    kind, hurst, gammas, horizon, out_dtype, cdtype = _weights_arguments(
        hurst, gammas, horizon, kind
    )
    g = gammas.detach().to(cdtype)
    h = hurst.detach().to(device=gammas.device, dtype=cdtype)
    with torch.enable_grad():
        h_per_speed = h.expand(g.shape).clone().requires_grad_(True)
        matrix, rhs = _weights_system(h_per_speed, g, horizon, kind)
        (d_rhs,) = torch.autograd.grad(rhs.sum(), h_per_speed)
    with torch.no_grad():
        weights = _solve_weights(matrix, rhs.detach())
        derivative = _solve_weights(matrix, d_rhs)
    return weights.to(out_dtype), derivative.to(out_dtype)


def _weights_system(
    h: torch.Tensor, g: torch.Tensor, horizon: float, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The matrix ``(K, K)`` and right-hand side ``(K,)`` of the weights' system.

    ``h`` is 0-dimensional or one value per speed (shape ``(K,)``); compute dtype.
    """
    a = h + 0.5
    x = g * horizon
    if kind == "II":
        s = g.unsqueeze(-1) + g
        matrix = horizon**2 * _phi2(s * horizon)
        rhs = _b_type_two(a, g, horizon)
    else:
        gp = g * _phi2(x)
        matrix = horizon**2 * (gp.unsqueeze(-1) + gp) / (g.unsqueeze(-1) + g)
        rhs = _b_type_one(a, g, horizon) / torch.sqrt(_mvn_variance(h))
    return matrix, rhs


def _solve_weights(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Jacobi-equilibrated pseudo-inverse solve ``A^+ rhs`` (linear in ``rhs``)."""
    # Eigen-directions of the scaled matrix with eigenvalues below RCOND * largest are
    # dropped. They carry no measurable part of the error (the objective agrees with a
    # 60-digit solve) but would give huge cancelling weights (|w| ~ 1e12 for type II on wide
    # grids), useless for sampling.
    scale = torch.rsqrt(matrix.diagonal())
    eigvals, eigvecs = torch.linalg.eigh(scale.unsqueeze(-1) * matrix * scale)
    rcond = _RCOND[matrix.dtype]
    keep = eigvals > rcond * eigvals.max()
    inv = torch.where(keep, 1.0 / torch.where(keep, eigvals, torch.ones_like(eigvals)), 0.0)
    return scale * (eigvecs @ (inv * (eigvecs.T @ (scale * rhs))))


# --------------------------------------------------------------------------- covariances


def _pow_safe(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``t ** p`` for ``t >= 0``, ``p > 0``, with 0 (and a finite gradient in p) at ``t = 0``."""
    pos = t > 0
    return torch.where(pos, torch.where(pos, t, torch.ones_like(t)) ** p, torch.zeros_like(t))


def _rl_covariance(tm: torch.Tensor, tM: torch.Tensor, hurst: torch.Tensor) -> torch.Tensor:
    r"""Riemann-Liouville covariance for ``tm <= tM`` (elementwise) by tanh-sinh quadrature.

    :math:`\frac{1}{\Gamma(H+1/2)^2}\int_0^{m} (M - u)^{a} (m - u)^{a}\, du`, :math:`a = H - 1/2`,
    with :math:`u = m\,\sigma(2y)`, :math:`y = \frac{\pi}{2}\sinh\tau` (so
    :math:`m - u = m\,\sigma(-2y)` without cancellation), the integrand formed in log space,
    and the trapezoid rule in :math:`\tau \in [-7, 7]`, step 1/32: the double-exponential
    clustering resolves the endpoint singularity :math:`(m - u)^{2H - 1}` and the transition
    at scale :math:`M - m` however small it is.
    """
    step = 1.0 / 32.0
    tau = torch.arange(-224, 225, dtype=tm.dtype, device=tm.device) * step
    y2 = math.pi * torch.sinh(tau)  # 2y
    log_weight = (
        torch.nn.functional.logsigmoid(y2)
        + torch.nn.functional.logsigmoid(-y2)
        + torch.log(math.pi * torch.cosh(tau))
        + math.log(step)
    )
    a = hurst - 0.5
    out = torch.zeros_like(tm)
    pos = tm > 0
    m = torch.where(pos, tm, torch.ones_like(tm)).unsqueeze(-1)
    gap = (tM - tm).unsqueeze(-1)
    log_m = torch.log(m)
    log_near = log_m + torch.nn.functional.logsigmoid(-y2)  # log(m - u)
    log_far = torch.logaddexp(torch.log(gap), log_near)  # log(M - u) = log(gap + (m - u))
    log_terms = a * (log_near + log_far) + log_m + log_weight
    value = torch.exp(log_terms).sum(-1) * torch.exp(-2.0 * torch.lgamma(hurst + 0.5))
    return torch.where(pos, value, out)


def fbm_covariance(
    times: torch.Tensor | Sequence[float], hurst: torch.Tensor | float, kind: str = "I"
) -> torch.Tensor:
    r"""Exact covariance matrix of the process that the approximation of ``kind`` targets.

    Type I: standard fBM,

    .. math::

        C(t, s) = \tfrac12 \left(t^{2H} + s^{2H} - |t - s|^{2H}\right).

    Type II: Riemann-Liouville fBM
    :math:`\frac{1}{\Gamma(H + 1/2)} \int_0^t (t - u)^{H - 1/2} dW_u`, for :math:`s \le t`

    .. math::

        C(t, s) = \frac{1}{\Gamma(H + 1/2)^2} \int_0^s (t - u)^{H - 1/2} (s - u)^{H - 1/2} du,
        \qquad C(t, t) = \frac{t^{2H}}{2H\, \Gamma(H + 1/2)^2},

    evaluated by double-exponential (tanh-sinh) quadrature to about float64 precision (the
    closed form involves :math:`{}_2F_1(1/2 - H, 1; H + 3/2; s/t)`, awkward near
    :math:`s = t`). Both are differentiable in ``hurst``.

    Args:
        times: 1-D tensor of times :math:`\ge 0`, shape ``(N,)`` (or a pair ``(T, num_steps)``
            for the uniform grid with ``num_steps + 1`` points).
        hurst: Hurst index in :math:`(0, 1)`.
        kind: ``"I"`` or ``"II"``.

    Returns:
        Tensor of shape ``(N, N)``, dtype and device of ``times``.

    Raises:
        ValueError: If ``hurst`` is outside (0, 1), ``times`` is malformed, or ``kind`` is
            unknown.
    """
    kind = _check_kind(kind)
    out_dtype = _infer_dtype(times, hurst)
    hurst = _check_hurst(hurst)
    device = _infer_device(times)
    times = _check_times(times, device, _compute_dtype(device))
    cdtype = _compute_dtype(times.device)
    t = times.to(cdtype)
    h = hurst.to(device=t.device, dtype=cdtype)
    ti, tj = t.unsqueeze(-1), t.unsqueeze(0)
    if kind == "I":
        two_h = 2.0 * h
        cov = 0.5 * (
            _pow_safe(ti, two_h) + _pow_safe(tj, two_h) - _pow_safe((ti - tj).abs(), two_h)
        )
        return cov.to(out_dtype)
    tm = torch.minimum(ti, tj)
    tM = torch.maximum(ti, tj)
    rows = []
    block = max(1, 4096 // max(1, t.numel()))
    for start in range(0, t.numel(), block):
        rows.append(_rl_covariance(tm[start : start + block], tM[start : start + block], h))
    return torch.cat(rows, 0).to(out_dtype)


def ma_fbm_covariance(
    times: torch.Tensor | Sequence[float],
    hurst: torch.Tensor | float | None,
    gammas: torch.Tensor | Sequence[float],
    kind: str = "I",
    weights: torch.Tensor | None = None,
    horizon: float | None = None,
) -> torch.Tensor:
    r"""Exact covariance matrix of the Markov approximation :math:`\hat B^H` at ``times``.

    With :math:`D_{ij} = 1 / (\gamma_i + \gamma_j)`, :math:`m = \min(t, s)` and
    :math:`E_k(m) = 1 - e^{-\gamma_k m}`:

    * type I (stationary start): :math:`\operatorname{Cov}(Y_i(t), Y_j(s))
      = D_{ij} e^{-\gamma_i (t - s)_+ - \gamma_j (s - t)_+}`, and the increments
      :math:`Y(t) - Y(0)` give

      .. math::

          \operatorname{Cov}(\hat B^H_t, \hat B^H_s) = \sum_k \omega_k (D\omega)_k\,
          E_k(m) \left(1 + e^{-\gamma_k |t - s|}\right);

    * type II (zero start): :math:`\operatorname{Cov}(Y_i(t), Y_j(s))
      = e^{-\gamma_i (t - m) - \gamma_j (s - m)} (1 - e^{-(\gamma_i + \gamma_j) m})
      / (\gamma_i + \gamma_j)`, so

      .. math::

          \operatorname{Cov}(\hat B^H_t, \hat B^H_s) = \sum_{i} \omega_i
          e^{-\gamma_i |t - s|} \sum_j \frac{1 - e^{-(\gamma_i + \gamma_j) m}}
          {\gamma_i + \gamma_j}\, \omega_j.

    Both forms are free of the cancellation between large stationary variances
    :math:`1/(2\gamma_k)` that a direct expansion would suffer for slow speeds. Cost
    :math:`O(N^2 K + N K^2)`.

    Args:
        times: 1-D tensor of times :math:`\ge 0` (or a pair ``(T, num_steps)``).
        hurst: Hurst index (needed only when ``weights`` is not given).
        gammas: Speeds, shape ``(K,)``.
        kind: ``"I"`` or ``"II"``.
        weights: Weights :math:`\omega`, shape ``(K,)``; default
            :func:`fbm_weights` ``(hurst, gammas, horizon, kind)``.
        horizon: The :math:`T` the weights are optimal for (default: the largest time).
            Times beyond it are an error.

    Returns:
        Tensor of shape ``(N, N)`` on the device of ``times``, promoted floating dtype.

    Raises:
        ValueError: On malformed input (see :func:`fbm_weights`), or times outside
            ``[0, horizon]``.
    """
    kind = _check_kind(kind)
    out_dtype = _infer_dtype(times, gammas, weights)
    gammas = _check_gammas(gammas)
    times = _check_times(times, gammas.device, _compute_dtype(gammas.device))
    horizon = _check_horizon(horizon, times)
    if weights is None:
        weights = fbm_weights(hurst, gammas, horizon, kind)
    elif not isinstance(weights, torch.Tensor) or weights.shape != gammas.shape:
        raise ValueError(
            f"weights must be a tensor of shape {tuple(gammas.shape)} (one per speed), got "
            f"{getattr(weights, 'shape', weights)}"
        )
    cdtype = _compute_dtype(times.device)
    t = times.to(cdtype)
    g = gammas.to(device=t.device, dtype=cdtype)
    w = weights.to(device=t.device, dtype=cdtype)
    m = torch.minimum(t.unsqueeze(-1), t)  # (N, N)
    lag = (t.unsqueeze(-1) - t).abs()
    decay = torch.exp(-lag.unsqueeze(-1) * g)  # (N, N, K)
    if kind == "I":
        v = w * ((w / (g.unsqueeze(-1) + g)).sum(-1))  # w_k (D w)_k
        e = -torch.expm1(-m.unsqueeze(-1) * g)
        cov = (v * e * (1.0 + decay)).sum(-1)
    else:
        s = g.unsqueeze(-1) + g  # (K, K)
        # G_i(m) = sum_j (1 - e^{-(g_i + g_j) m}) / (g_i + g_j) w_j, for every distinct m = t_n
        f = -torch.expm1(-t.reshape(-1, 1, 1) * s) / s  # (N, K, K)
        gm = f @ w  # (N, K)
        idx = torch.minimum(
            torch.arange(t.numel(), device=t.device).unsqueeze(-1),
            torch.arange(t.numel(), device=t.device),
        )
        cov = (w * decay * gm[idx]).sum(-1)
    return cov.to(out_dtype)


# --------------------------------------------------------------------------- path sampling


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """A factor ``L`` with ``L L^T = matrix`` for symmetric PSD (batched) matrices, by ``eigh``.

    Unlike a Cholesky factor it needs no jitter: the Gram matrices of exponentials met here
    are numerically rank-deficient, and eigenvalues that rounding makes slightly negative are
    set to zero (an error of order ``eps * ||matrix||`` in the sampled covariance).
    """
    eigvals, eigvecs = torch.linalg.eigh(matrix)
    return eigvecs * eigvals.clamp_min(0.0).sqrt().unsqueeze(-2)


def _step_covariance(g: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    r"""Covariance of :math:`\int_0^{\Delta t} e^{-\gamma_k (\Delta t - u)} dW_u`, per step.

    :math:`\Sigma_{ij} = (1 - e^{-(\gamma_i + \gamma_j)\Delta t}) / (\gamma_i + \gamma_j)`;
    ``dt`` of shape ``(S,)`` gives ``(S, K, K)``.
    """
    s = g.unsqueeze(-1) + g
    return -torch.expm1(-dt.reshape(-1, 1, 1) * s) / s


def _causal_conv(
    kernel: torch.Tensor, signal: torch.Tensor, sum_dim: int | None = None
) -> torch.Tensor:
    """Causal convolution along the last axis: ``out[n] = sum_{m <= n} kernel[n - m] signal[m]``.

    ``kernel`` and ``signal`` (same last size ``L``) broadcast; zero-padded real FFTs of size
    ``2 L``. With ``sum_dim`` the products are summed over that axis in the frequency domain
    (one inverse FFT for a sum of convolutions).
    """
    length = signal.shape[-1]
    spectrum = torch.fft.rfft(kernel, n=2 * length) * torch.fft.rfft(signal, n=2 * length)
    if sum_dim is not None:
        spectrum = spectrum.sum(sum_dim)
    return torch.fft.irfft(spectrum, n=2 * length)[..., :length]


def _ma_paths_uniform(
    w: torch.Tensor,
    g: torch.Tensor,
    dt: float,
    num_steps: int,
    kind: str,
    method: str,
    noise: torch.Tensor,
    noise0: torch.Tensor | None,
) -> torch.Tensor:
    r"""Paths on the uniform grid :math:`0, \Delta t, \dots, n \Delta t` by FFT convolution.

    The recursion :math:`Y_{n+1} = a \odot Y_n + \xi_n` unrolls to
    :math:`Y_n = a^n \odot Y_0 + \sum_{m < n} a^{n - 1 - m} \odot \xi_m`, so
    :math:`\hat B_n = \omega^\top (Y_n - Y_0)` (type I) or :math:`\omega^\top Y_n` (type II) is a
    causal convolution of the noise: with :math:`\xi_m = L z_m` (exact step) the kernels are
    :math:`h^{(j)}_l = \sum_k \omega_k a_k^l L_{kj}`, one per noise coordinate, summed in the
    frequency domain; with the Euler step :math:`\xi_m = \Delta W_m \mathbf{1}` there is one
    kernel :math:`h_l = \sum_k \omega_k a_k^l`. Cost :math:`O(P K n \log n)` resp.
    :math:`O(P n \log n)` for :math:`P` paths, with no Python loop over time.

    ``noise``: ``(P, n, K)`` standard normal (exact) or ``(P, n)`` (Euler).
    ``noise0``: ``(P, K)`` standard normal for the stationary start (type I), else ``None``.
    Returns ``(P, n + 1)``.
    """
    steps = torch.arange(num_steps, dtype=g.dtype, device=g.device)
    if method == "exact":
        log_a = -g * dt
        factor = _sqrt_psd(_step_covariance(g, g.new_tensor([dt])).squeeze(0))
        powers = torch.exp(steps.unsqueeze(-1) * log_a)  # (n, K): a_k^l
        kernels = ((powers * w) @ factor).T  # (K, n): h^(j)_l = sum_k w_k a_k^l L_kj
        conv = _causal_conv(kernels, noise.transpose(-1, -2), sum_dim=-2)
    else:
        a = 1.0 - g * dt
        log_a = torch.log(a)
        powers = torch.exp(steps.unsqueeze(-1) * log_a)
        kernel = powers @ w  # (n,)
        conv = _causal_conv(kernel, noise * math.sqrt(dt))
    paths = torch.cat([torch.zeros_like(conv[..., :1]), conv], -1)
    if kind == "I":
        # + sum_k w_k (a_k^n - 1) Y_k(0), Y(0) = L0 z0 stationary; expm1 keeps slow speeds exact
        factor0 = _sqrt_psd(1.0 / (g.unsqueeze(-1) + g))
        n_all = torch.arange(num_steps + 1, dtype=g.dtype, device=g.device)
        gain = torch.expm1(n_all.unsqueeze(-1) * log_a) * w  # (n + 1, K)
        paths = paths + noise0 @ (gain @ factor0).T
    return paths


def _ma_paths_loop(
    w: torch.Tensor,
    g: torch.Tensor,
    dt: torch.Tensor,
    kind: str,
    method: str,
    noise: torch.Tensor,
    noise0: torch.Tensor | None,
) -> torch.Tensor:
    """Paths on an arbitrary grid (steps ``dt``, shape ``(n,)``) by stepping the recursion.

    Same noise layout and result as :func:`_ma_paths_uniform`; one Python step per time step.
    """
    num_paths = noise.shape[0]
    y0 = torch.zeros(num_paths, g.numel(), dtype=g.dtype, device=g.device)
    if kind == "I":
        y0 = noise0 @ _sqrt_psd(1.0 / (g.unsqueeze(-1) + g)).T
    if method == "exact":
        decay = torch.exp(-dt.unsqueeze(-1) * g)  # (n, K)
        factors = _sqrt_psd(_step_covariance(g, dt))  # (n, K, K)
    y = y0
    values = [torch.zeros(num_paths, dtype=g.dtype, device=g.device)]
    for n in range(dt.numel()):
        if method == "exact":
            y = decay[n] * y + noise[:, n] @ factors[n].T
        else:
            y = y - g * dt[n] * y + noise[:, n].unsqueeze(-1) * dt[n].sqrt()
        values.append((y - y0) @ w)
    return torch.stack(values, -1)


def _check_generator(generator, device: torch.device):
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {generator!r}")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the paths are sampled on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )
    return generator


def _check_num_paths(num_paths) -> int:
    if isinstance(num_paths, bool) or not isinstance(num_paths, int) or num_paths < 1:
        raise ValueError(f"num_paths must be an int >= 1, got {num_paths!r}")
    return num_paths


def _grid(times: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Full simulation grid ``[0, times...]`` and whether ``times`` starts at 0."""
    starts_at_zero = bool(times[0] == 0)
    grid = times if starts_at_zero else torch.cat([times.new_zeros(1), times])
    return grid, starts_at_zero


def _uniform_step(grid: torch.Tensor) -> float | None:
    """The common step of ``grid`` if it is uniform from 0 (to 1e-9 relative), else ``None``."""
    if grid.numel() < 2:
        return None
    dt = float(grid[-1]) / (grid.numel() - 1)
    expected = torch.arange(grid.numel(), dtype=grid.dtype, device=grid.device) * dt
    if bool(((grid - expected).abs() <= 1e-9 * float(grid[-1])).all()):
        return dt
    return None


def sample_ma_fbm(
    times: TimesLike,
    hurst: torch.Tensor | float | None,
    num_processes: int = DEFAULT_NUM_PROCESSES,
    kind: str = "I",
    num_paths: int = 1,
    *,
    gammas: torch.Tensor | Sequence[float] | None = None,
    gamma_max: float = DEFAULT_GAMMA_MAX,
    gamma_min: float | None = None,
    weights: torch.Tensor | None = None,
    horizon: float | None = None,
    method: str = "exact",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Sample paths of the Markov approximation :math:`\hat B^H` at ``times``, batched.

    The augmented state :math:`Y = (Y_1, \dots, Y_K)` is linear Gaussian. Over a step
    :math:`\Delta t`:

    * ``method="exact"`` (default): the exact transition
      :math:`Y(t + \Delta t) = e^{-\gamma \Delta t} \odot Y(t) + \xi` with
      :math:`\xi_k = \int_t^{t+\Delta t} e^{-\gamma_k (t + \Delta t - u)} dW_u`, jointly
      Gaussian (all driven by the same :math:`W`) with covariance
      :math:`\Sigma_{ij} = (1 - e^{-(\gamma_i + \gamma_j)\Delta t}) / (\gamma_i + \gamma_j)`,
      sampled as :math:`L z` with :math:`L L^\top = \Sigma` from an eigendecomposition (no
      jitter; :math:`\Sigma` is numerically rank-deficient). The samples have exactly the
      covariance :func:`ma_fbm_covariance`, for any step size.
    * ``method="euler"``: the Euler-Maruyama step used by SDE models,
      :math:`Y \leftarrow Y - \gamma \odot Y \Delta t + \Delta W`; it needs
      :math:`\gamma_{\max} \Delta t < 0.5` and has an :math:`O(\Delta t)` bias.

    Type I starts from the stationary law :math:`Y(0) \sim \mathcal{N}(0, D)`,
    :math:`D_{ij} = 1/(\gamma_i + \gamma_j)` (of the continuous process, for both methods) and
    returns :math:`\omega^\top (Y(t) - Y(0))`; type II starts from :math:`Y(0) = 0` and returns
    :math:`\omega^\top Y(t)`. On a uniform grid from 0 the recursion is evaluated as an FFT
    convolution (no loop over time steps); other grids step through time.

    The paths are linear in the weights, so they are differentiable in ``hurst``
    (reparameterised samples).

    Args:
        times: Either a 1-D tensor of strictly increasing times :math:`\ge 0` (the paths are
            returned at these times; :math:`\hat B^H_0 = 0` is implied when 0 is left out), or
            a pair ``(T, num_steps)`` for the uniform grid :math:`n T / \text{num\_steps}`,
            :math:`n = 0, \dots, \text{num\_steps}`.
        hurst: Hurst index in :math:`(0, 1)` (may require grad); not needed when ``weights``
            is given.
        num_processes: :math:`K`, when ``gammas`` is not given.
        kind: ``"I"`` or ``"II"``.
        num_paths: Number of independent paths.
        gammas: Speeds, shape ``(K,)``; default
            :func:`geometric_gammas` ``(num_processes, gamma_max, gamma_min)``.
        gamma_max: Fastest speed of the default grid.
        gamma_min: Slowest speed of the default grid (default ``1 / gamma_max``).
        weights: Weights, shape ``(K,)``; default :func:`fbm_weights` on ``[0, horizon]``.
        horizon: The :math:`T` the weights are optimal for (default: the last time).
            ``times`` beyond it are an error.
        method: ``"exact"`` or ``"euler"``.
        generator: Optional :class:`torch.Generator` on the sampling device.
        device: Device of the result (default: that of ``times``, else ``hurst``, else
            torch's default).
        dtype: Floating dtype of the result (default: promoted from ``times`` and ``hurst``).

    Returns:
        Tensor of shape ``(num_paths, N)``: ``N = len(times)``, or ``num_steps + 1`` for a
        pair.

    Raises:
        ValueError: If ``hurst`` is outside (0, 1), ``num_processes < 1``, the times are
            malformed or outside ``[0, horizon]``, ``gamma_max * dt >= 0.5`` with
            ``method="euler"``, or an argument is unknown.
    """
    kind = _check_kind(kind)
    num_paths = _check_num_paths(num_paths)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if device is None:
        device = _infer_device(times, hurst, gammas, weights)
    device = torch.device(device)
    out_dtype = dtype if dtype is not None else _infer_dtype(times, hurst, gammas, weights)
    generator = _check_generator(generator, device)
    cdtype = _compute_dtype(device)
    times = _check_times(times, device, cdtype)
    horizon = _check_horizon(horizon, times)
    if gammas is None:
        gammas = geometric_gammas(num_processes, gamma_max, gamma_min, dtype=cdtype, device=device)
    gammas = _check_gammas(gammas, device)
    if weights is None:
        weights = fbm_weights(_check_hurst(hurst), gammas.to(device), horizon, kind)
    elif not isinstance(weights, torch.Tensor) or weights.shape != gammas.shape:
        raise ValueError(
            f"weights must be a tensor of shape {tuple(gammas.shape)} (one per speed), got "
            f"{getattr(weights, 'shape', weights)}"
        )
    g = gammas.detach().to(device=device, dtype=cdtype)
    w = weights.to(device=device, dtype=cdtype)
    grid, starts_at_zero = _grid(times.detach().to(device=device, dtype=cdtype))
    steps = grid.diff()
    num_steps = steps.numel()
    if method == "euler" and num_steps > 0:
        worst = float(g.max()) * float(steps.max())
        if worst >= 0.5:
            needed = math.ceil(2.0 * float(g.max()) * float(grid[-1]))
            raise ValueError(
                f"gamma_max * dt = {worst:.3g} >= 0.5: the Euler-Maruyama step of the fastest "
                f"Ornstein-Uhlenbeck process (gamma_max = {float(g.max()):.3g}) is unstable or "
                f"inaccurate. Use a finer grid (more than {needed} uniform steps on "
                f"[0, {float(grid[-1]):.3g}]), a smaller gamma_max, or method='exact'"
            )
    k = g.numel()
    noise_shape = (num_paths, num_steps, k) if method == "exact" else (num_paths, num_steps)
    noise = torch.randn(noise_shape, generator=generator, dtype=cdtype, device=device)
    noise0 = None
    if kind == "I":
        noise0 = torch.randn((num_paths, k), generator=generator, dtype=cdtype, device=device)
    if num_steps == 0:
        paths = torch.zeros(num_paths, 1, dtype=cdtype, device=device) * w.sum()
    else:
        dt = _uniform_step(grid)
        if dt is not None:
            paths = _ma_paths_uniform(w, g, dt, num_steps, kind, method, noise, noise0)
        else:
            paths = _ma_paths_loop(w, g, steps, kind, method, noise, noise0)
    if not starts_at_zero:
        paths = paths[:, 1:]
    return paths.to(out_dtype)


def sample_fbm(
    times: TimesLike,
    hurst: torch.Tensor | float,
    num_paths: int = 1,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    r"""Exact standard fBM paths on a uniform grid, by the Davies-Harte method.

    The increments on a grid of step :math:`\Delta t` (fractional Gaussian noise) have
    autocovariance :math:`\rho_k = \frac{\Delta t^{2H}}{2}\left(|k+1|^{2H} - 2|k|^{2H}
    + |k-1|^{2H}\right)`. Their :math:`n \times n` Toeplitz covariance is embedded in the
    circulant matrix of size :math:`2n` with first row
    :math:`(\rho_0, \dots, \rho_{n-1}, \rho_n, \rho_{n-1}, \dots, \rho_1)`, diagonalised by the
    FFT with eigenvalues :math:`\lambda = \operatorname{FFT}(\rho)` (nonnegative for fGn).
    With :math:`\zeta` a vector of standard complex normals, the real and imaginary parts of
    :math:`\operatorname{FFT}(\sqrt{\lambda / 2n}\, \zeta)` are two independent exact draws
    of the increments (their first :math:`n` entries); the path is their cumulative sum.
    Cost :math:`O(P n \log n)` for :math:`P` paths. Differentiable in ``hurst``.

    Reference:
        R. B. Davies and D. S. Harte, "Tests for Hurst effect", Biometrika 74(1), 1987;
        C. R. Dietrich and G. N. Newsam, SIAM J. Sci. Comput. 18(4), 1997.

    Args:
        times: A pair ``(T, num_steps)``, or a 1-D tensor of uniformly spaced times
            :math:`n \Delta t` (starting at 0 or at :math:`\Delta t`).
        hurst: Hurst index in :math:`(0, 1)`.
        num_paths: Number of independent paths.
        generator: Optional :class:`torch.Generator` on the sampling device.
        device: Device (default: that of ``times``, else ``hurst``, else torch's default).
        dtype: Floating dtype (default: promoted from ``times`` and ``hurst``).

    Returns:
        Tensor of shape ``(num_paths, N)``, as :func:`sample_ma_fbm`.

    Raises:
        ValueError: If ``hurst`` is outside (0, 1) or the grid is not uniform.
    """
    out_dtype = dtype if dtype is not None else _infer_dtype(times, hurst)
    if device is None:
        device = _infer_device(times, hurst)
    hurst = _check_hurst(hurst)
    num_paths = _check_num_paths(num_paths)
    device = torch.device(device)
    generator = _check_generator(generator, device)
    cdtype = _compute_dtype(device)
    times = _check_times(times, device, cdtype)
    grid, starts_at_zero = _grid(times.detach().to(device=device, dtype=cdtype))
    n = grid.numel() - 1
    if n == 0:
        return torch.zeros(num_paths, 1, dtype=out_dtype, device=device)
    dt = _uniform_step(grid)
    if dt is None:
        raise ValueError(
            "sample_fbm (Davies-Harte) needs a uniform grid n * dt; use a pair (T, num_steps) "
            "or sample_ma_fbm for arbitrary times"
        )
    two_h = 2.0 * hurst.to(device=device, dtype=cdtype)
    k = torch.arange(n + 1, dtype=cdtype, device=device)
    rho = 0.5 * (
        _pow_safe(k + 1.0, two_h) - 2.0 * _pow_safe(k, two_h) + _pow_safe((k - 1.0).abs(), two_h)
    )
    row = torch.cat([rho, rho[1:-1].flip(0)])  # length 2n
    eigvals = torch.fft.fft(row).real
    if float(eigvals.detach().min()) < -1e-8 * float(eigvals.detach().abs().max()):
        raise RuntimeError(  # not expected for fractional Gaussian noise
            f"Davies-Harte embedding is not positive semidefinite (min eigenvalue "
            f"{float(eigvals.min()):.3g}); use sample_ma_fbm"
        )
    scale = torch.sqrt(eigvals.clamp_min(0.0) / (2 * n))
    pairs = (num_paths + 1) // 2
    shape = (pairs, 2 * n)
    z_re = torch.randn(shape, generator=generator, dtype=cdtype, device=device)
    z_im = torch.randn(shape, generator=generator, dtype=cdtype, device=device)
    draws = torch.fft.fft(scale * torch.complex(z_re, z_im))[:, :n]
    increments = torch.cat([draws.real, draws.imag], 0)[:num_paths] * dt ** (two_h / 2.0)
    paths = torch.cat([increments.new_zeros(num_paths, 1), increments.cumsum(-1)], -1)
    if not starts_at_zero:
        paths = paths[:, 1:]
    return paths.to(out_dtype)
