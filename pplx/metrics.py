r"""Sample-quality metrics (energy distance, MMD, kernel Stein discrepancy) and time-series scores.

Two-sample metrics compare a sample ``x`` with a sample ``y``:

* :func:`energy_distance` (Székely & Rizzo), built on Euclidean distances;
* :func:`mmd`, the squared maximum mean discrepancy (Gretton et al., 2012) with a Gaussian
  (``"rbf"``) or inverse multiquadric (``"imq"``) kernel.

One-sample metric, comparing a sample ``x`` with a target density :math:`p` known only through
its score :math:`\nabla \log p` (no normalising constant needed):

* :func:`kernel_stein_discrepancy` with the IMQ base kernel (Gorham & Mackey, 2017).

Post-hoc scores of generated time series (TimeGAN's, used by the Koopman VAE paper), defined
in :mod:`pplx.timeseries.metrics` and importable from here too:

* :func:`~pplx.timeseries.metrics.discriminative_score`: :math:`|0.5 - \text{accuracy}|` of
  a GRU classifier told real from generated series on a held-out 20%;
* :func:`~pplx.timeseries.metrics.predictive_score`: MAE on real series of a GRU trained on
  generated ones to predict the next step;
* :func:`~pplx.timeseries.metrics.discriminative_noise_floor` and the
  :class:`~pplx.timeseries.metrics.Score` (mean and std over repeats) they return.

Conventions shared by the three sample-quality metrics:

* Points are rows: a tensor of shape ``(n, d)``; a tensor of shape ``(n,)`` is read as
  ``n`` points in one dimension (``d = 1``). Integer tensors are cast to the default floating
  dtype; two inputs of different floating dtypes are promoted to the wider one.
* The result is a 0-dimensional tensor with the dtype and device of the inputs, and it is
  differentiable with respect to the inputs (autograd flows through every term).
* Pairwise quantities are computed ``block_size`` rows at a time, so memory stays
  :math:`O(\text{block\_size} \cdot n)` however large the samples are; the result does not
  depend on ``block_size`` beyond floating-point rounding.
* Distances are computed from coordinate differences (not from the expansion
  :math:`|x|^2 + |y|^2 - 2 x \cdot y`), so nearby points do not suffer cancellation.
* Bad input raises :class:`ValueError` naming the argument and its shape: inputs that are not
  of shape ``(n, d)`` or ``(n,)``, too few points, mismatched dimensions or devices, and
  non-finite values (NaN or infinity). Non-tensors raise :class:`TypeError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pplx.timeseries.metrics import (
    Score,
    discriminative_noise_floor,
    discriminative_score,
    predictive_score,
)

__all__ = [
    "Score",
    "discriminative_noise_floor",
    "discriminative_score",
    "energy_distance",
    "kernel_stein_discrepancy",
    "mmd",
    "predictive_score",
]

#: Largest pooled sample the median heuristic of :func:`mmd` looks at; larger samples are
#: thinned deterministically (evenly spaced rows of each sample) down to this many points.
MEDIAN_HEURISTIC_MAX_POINTS = 2048

_KERNELS = ("rbf", "imq")


# --------------------------------------------------------------------------- input checks


def _as_points(t: torch.Tensor, name: str, min_points: int = 2) -> torch.Tensor:
    """Return ``t`` as a floating ``(n, d)`` tensor, or raise naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    shape = tuple(t.shape)
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    elif t.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got shape {shape}")
    if t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype} (shape {shape})")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.shape[0] < min_points:
        raise ValueError(
            f"{name} needs at least {min_points} point{'s' if min_points > 1 else ''} (rows), "
            f"got shape {shape}"
        )
    if t.shape[1] < 1:
        raise ValueError(f"{name} has zero dimensions (columns), got shape {shape}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or infinity); shape {shape}")
    return t


def _match(
    x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that two ``(n, d)`` tensors agree in ``d`` and device; promote their dtypes."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same dimension d: {x_name} has shape "
            f"{tuple(x.shape)} (d={x.shape[1]}), {y_name} has shape {tuple(y.shape)} "
            f"(d={y.shape[1]})"
        )
    if x.device != y.device:
        raise ValueError(
            f"{x_name} and {y_name} must be on the same device, got {x.device} and {y.device}"
        )
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def _check_block_size(block_size: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return block_size


# --------------------------------------------------------------------------- pairwise helpers


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``a`` and ``b``, from coordinate differences."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _pair_sum(
    a: torch.Tensor,
    b: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    block_size: int,
    exclude_diagonal: bool,
) -> torch.Tensor:
    r"""Return :math:`\sum_{i,j} f(|a_i - b_j|)` over row blocks of ``a``.

    With ``exclude_diagonal`` (``a`` and ``b`` are the same sample) the terms :math:`i = j` are
    left out, as in a U-statistic.
    """
    total = a.new_zeros(())
    for start in range(0, a.shape[0], block_size):
        values = fn(_dist(a[start : start + block_size], b))
        total = total + values.sum()
        if exclude_diagonal:
            # Entries (i, start + i) of the block are the terms with equal indices.
            total = total - values.diagonal(offset=start).sum()
    return total


# --------------------------------------------------------------------------- energy distance


def energy_distance(
    x: torch.Tensor, y: torch.Tensor, *, unbiased: bool = True, block_size: int = 1024
) -> torch.Tensor:
    r"""Energy distance between the samples ``x`` and ``y`` (Székely & Rizzo).

    For :math:`X, X' \sim P` and :math:`Y, Y' \sim Q`, all independent,

    .. math::

        \mathcal{E}(P, Q) = 2\,\mathbb{E}\|X - Y\| - \mathbb{E}\|X - X'\| - \mathbb{E}\|Y - Y'\|,

    with Euclidean norms. This squared form is what is called energy distance here (no square
    root is taken). For distributions with finite first moments :math:`\mathcal{E}(P, Q) \ge 0`,
    with equality if and only if :math:`P = Q`.

    With samples :math:`x_1, \dots, x_n` and :math:`y_1, \dots, y_m` the default estimate is
    the U-statistic, unbiased for :math:`\mathcal{E}(P, Q)`:

    .. math::

        \hat{\mathcal{E}}_U = \frac{2}{nm} \sum_{i=1}^n \sum_{j=1}^m \|x_i - y_j\|
            - \frac{1}{n(n-1)} \sum_{i \ne j} \|x_i - x_j\|
            - \frac{1}{m(m-1)} \sum_{i \ne j} \|y_i - y_j\|.

    It can be negative when the two distributions are equal or close. ``unbiased=False`` gives
    the V-statistic (the within-sample sums divided by :math:`n^2` and :math:`m^2`), which is
    the energy distance between the two empirical distributions and hence always
    :math:`\ge 0` (it is biased upwards).

    Reference:
        G. J. Székely and M. L. Rizzo, "Energy statistics: A class of statistics based on
        distances", Journal of Statistical Planning and Inference 143(8), 2013.

    Args:
        x: Sample from :math:`P`, shape ``(n, d)`` or ``(n,)``, ``n >= 2``.
        y: Sample from :math:`Q`, shape ``(m, d)`` or ``(m,)``, ``m >= 2``.
        unbiased: U-statistic (``True``) or V-statistic (``False``).
        block_size: Rows of pairwise distances computed at a time (memory
            :math:`O(\text{block\_size} \cdot \max(n, m))`).

    Returns:
        0-dimensional tensor with the dtype and device of the inputs.

    Raises:
        ValueError: On malformed input (see the module documentation).
    """
    x = _as_points(x, "x")
    y = _as_points(y, "y")
    x, y = _match(x, y, "x", "y")
    block_size = _check_block_size(block_size)
    n, m = x.shape[0], y.shape[0]

    def identity(r: torch.Tensor) -> torch.Tensor:
        return r

    # Distances computed from differences are exactly zero on the diagonal, so the same
    # within-sample sums serve both statistics.
    xy = _pair_sum(x, y, identity, block_size, exclude_diagonal=False)
    xx = _pair_sum(x, x, identity, block_size, exclude_diagonal=False)
    yy = _pair_sum(y, y, identity, block_size, exclude_diagonal=False)
    if unbiased:
        return 2.0 * xy / (n * m) - xx / (n * (n - 1)) - yy / (m * (m - 1))
    return torch.clamp_min(2.0 * xy / (n * m) - xx / n**2 - yy / m**2, 0.0)


# --------------------------------------------------------------------------- MMD


def _median_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Median of the distances between distinct points of the pooled sample (see :func:`mmd`)."""
    n, m = x.shape[0], y.shape[0]
    if n + m > MEDIAN_HEURISTIC_MAX_POINTS:
        n_keep = min(n, max(2, round(MEDIAN_HEURISTIC_MAX_POINTS * n / (n + m))))
        m_keep = min(m, MEDIAN_HEURISTIC_MAX_POINTS - n_keep)

        def thin(t: torch.Tensor, k: int) -> torch.Tensor:
            index = torch.linspace(0, t.shape[0] - 1, k, device=t.device).round().long()
            return t[index]

        x, y = thin(x, n_keep), thin(y, m_keep)
    z = torch.cat([x, y]).detach()
    distances = _dist(z, z)
    upper = torch.ones_like(distances, dtype=torch.bool).triu(diagonal=1)
    values = distances[upper]
    # numpy's median: the middle value, or the mean of the two middle values.
    count = values.numel()
    low = values.kthvalue((count + 1) // 2).values
    high = values.kthvalue(count // 2 + 1).values
    return (low + high) / 2


def _kernel_fn(kernel: str, bandwidth: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The kernel as a function of the distance ``r``."""
    h2 = bandwidth**2
    if kernel == "rbf":
        return lambda r: torch.exp(-(r**2) / (2.0 * h2))
    return lambda r: torch.rsqrt(1.0 + r**2 / h2)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: str = "rbf",
    bandwidth: str | float | torch.Tensor = "median",
    *,
    unbiased: bool = True,
    block_size: int = 1024,
) -> torch.Tensor:
    r"""Squared maximum mean discrepancy between the samples ``x`` and ``y``.

    For a kernel :math:`k` and :math:`X, X' \sim P`, :math:`Y, Y' \sim Q`, all independent,

    .. math::

        \mathrm{MMD}^2(P, Q) = \mathbb{E}\,k(X, X') + \mathbb{E}\,k(Y, Y')
            - 2\,\mathbb{E}\,k(X, Y),

    the squared RKHS distance between the mean embeddings of :math:`P` and :math:`Q`. Both
    kernels offered are characteristic, so :math:`\mathrm{MMD}^2(P, Q) = 0` if and only if
    :math:`P = Q`. With :math:`r = \|x - y\|` (Euclidean) and bandwidth :math:`h > 0`:

    * ``"rbf"`` (Gaussian): :math:`k(x, y) = \exp\!\big(-r^2 / (2 h^2)\big)`;
    * ``"imq"`` (inverse multiquadric): :math:`k(x, y) = (1 + r^2 / h^2)^{-1/2}`.

    ``bandwidth="median"`` is the median heuristic of Gretton et al.: :math:`h` is the median
    of the distances :math:`\|z_i - z_j\|`, :math:`i < j`, between distinct points of the
    pooled sample :math:`z = (x_1, \dots, x_n, y_1, \dots, y_m)` (the usual median, averaging
    the two middle values when their number is even). When :math:`n + m` exceeds
    :data:`MEDIAN_HEURISTIC_MAX_POINTS` the median is taken over evenly spaced rows of ``x``
    and of ``y``, in proportion to :math:`n` and :math:`m`, so its cost stays bounded; the
    choice is deterministic. The heuristic bandwidth is treated as a constant (no gradient
    flows through it). A number (or a 0-dimensional tensor, through which gradients do flow)
    sets :math:`h` directly.

    The default estimate is the unbiased U-statistic

    .. math::

        \widehat{\mathrm{MMD}}^2_U = \frac{1}{n(n-1)} \sum_{i \ne j} k(x_i, x_j)
            + \frac{1}{m(m-1)} \sum_{i \ne j} k(y_i, y_j)
            - \frac{2}{nm} \sum_{i=1}^n \sum_{j=1}^m k(x_i, y_j),

    which can be negative. ``unbiased=False`` gives the V-statistic (sums over all
    :math:`i, j`, divided by :math:`n^2` and :math:`m^2`), the squared MMD between the
    empirical distributions, always :math:`\ge 0`.

    Reference:
        A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schölkopf and A. Smola, "A kernel
        two-sample test", Journal of Machine Learning Research 13, 2012.

    Args:
        x: Sample from :math:`P`, shape ``(n, d)`` or ``(n,)``, ``n >= 2``.
        y: Sample from :math:`Q`, shape ``(m, d)`` or ``(m,)``, ``m >= 2``.
        kernel: ``"rbf"`` or ``"imq"``.
        bandwidth: ``"median"`` or a positive number :math:`h`.
        unbiased: U-statistic (``True``) or V-statistic (``False``).
        block_size: Rows of the kernel matrices computed at a time.

    Returns:
        0-dimensional tensor, the squared MMD estimate, with the dtype and device of the inputs.

    Raises:
        ValueError: On malformed input, an unknown kernel, a bandwidth that is not positive and
            finite, or a median heuristic that gives zero (most points identical).
    """
    x = _as_points(x, "x")
    y = _as_points(y, "y")
    x, y = _match(x, y, "x", "y")
    block_size = _check_block_size(block_size)
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be 'median' or a positive number, got {bandwidth!r}")
        h = _median_distance(x, y)
        if not bool(h > 0):
            raise ValueError(
                "bandwidth='median' gave zero (most pairwise distances in x and y are zero); "
                "pass bandwidth as a positive number"
            )
    else:
        h = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device)
        if h.dim() != 0 or not bool(torch.isfinite(h)) or not bool(h > 0):
            raise ValueError(
                f"bandwidth must be 'median' or a positive finite number, got {bandwidth!r}"
            )
    fn = _kernel_fn(kernel, h)
    n, m = x.shape[0], y.shape[0]
    xy = _pair_sum(x, y, fn, block_size, exclude_diagonal=False)
    xx = _pair_sum(x, x, fn, block_size, exclude_diagonal=unbiased)
    yy = _pair_sum(y, y, fn, block_size, exclude_diagonal=unbiased)
    if unbiased:
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)
    return torch.clamp_min(xx / n**2 + yy / m**2 - 2.0 * xy / (n * m), 0.0)


# --------------------------------------------------------------------------- KSD


def _imq_pieces(
    r2: torch.Tensor, d: int, c: float, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""IMQ kernel, gradient coefficient and trace term as functions of :math:`r^2`.

    For :math:`k(x, y) = (c^2 + r^2)^\beta` with :math:`r^2 = \|x - y\|^2` and
    :math:`q = c^2 + r^2`, returns :math:`(k, g, t)` with

    .. math::

        \nabla_x k = g\,(x - y) = -\nabla_y k, \qquad g = 2 \beta q^{\beta - 1},

        t = \operatorname{tr}(\nabla_x \nabla_y k)
          = -2 d \beta q^{\beta - 1} - 4 \beta (\beta - 1) r^2 q^{\beta - 2}.
    """
    q = c**2 + r2
    k = q**beta
    q1 = k / q  # q^(beta - 1)
    g = 2.0 * beta * q1
    t = -2.0 * d * beta * q1 - 4.0 * beta * (beta - 1.0) * r2 * (q1 / q)
    return k, g, t


def _imq_stein_kernel(
    x: torch.Tensor, y: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, c: float, beta: float
) -> torch.Tensor:
    r"""Langevin Stein kernel matrix :math:`k_p(x_i, y_j)` of the IMQ kernel, shape ``(n, m)``.

    With :math:`u = x - y`, :math:`k_p(x, y) = (s_x \cdot s_y) k + g\,(s_y - s_x) \cdot u + t`
    in the notation of :func:`_imq_pieces`, where :math:`s_x = \nabla \log p(x)`.
    """
    r2 = _dist(x, y) ** 2
    k, g, t = _imq_pieces(r2, x.shape[1], c, beta)
    # (s_x - s_y) . (x - y) = s_x.x - s_x.y - s_y.x + s_y.y, from inner products.
    sxx = (sx * x).sum(-1)
    syy = (sy * y).sum(-1)
    cross = sxx[:, None] + syy[None, :] - sx @ y.T - x @ sy.T
    return (sx @ sy.T) * k - g * cross + t


def _as_score(
    score: torch.Tensor | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Evaluate or check the score so that it is an ``(n, d)`` tensor like ``x``."""
    if callable(score) and not isinstance(score, torch.Tensor):
        s = score(x)
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"score(x) must return a torch.Tensor, got {type(s).__name__}")
        what = "score(x)"
    else:
        s = score
        what = "score"
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"score must be a torch.Tensor or a callable, got {type(s).__name__}")
    if s.shape == (x.shape[0],) and x.shape[1] == 1:
        s = s.unsqueeze(-1)
    if tuple(s.shape) != tuple(x.shape):
        raise ValueError(
            f"{what} must have the shape of x, {tuple(x.shape)}, got shape {tuple(s.shape)}"
        )
    if s.device != x.device:
        raise ValueError(f"{what} is on {s.device} but x is on {x.device}")
    s = s.to(x.dtype)
    if not bool(torch.isfinite(s).all()):
        raise ValueError(
            f"{what} contains non-finite values (NaN or infinity); shape {tuple(s.shape)}"
        )
    return s


def _as_weights(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    n = x.shape[0]
    if tuple(weights.shape) != (n,):
        raise ValueError(
            f"weights must have shape ({n},), one per row of x, got shape {tuple(weights.shape)}"
        )
    if weights.device != x.device:
        raise ValueError(f"weights is on {weights.device} but x is on {x.device}")
    # The tolerance on the sum follows the less precise of the two dtypes.
    eps = torch.finfo(x.dtype).eps
    if weights.is_floating_point():
        eps = max(eps, torch.finfo(weights.dtype).eps)
    w = weights.to(x.dtype)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"weights must be finite and nonnegative (shape {tuple(w.shape)})")
    tol = math.sqrt(eps)
    total = float(w.sum())
    if abs(total - 1.0) > tol:
        raise ValueError(f"weights must sum to 1, got sum {total:.6g} (shape {tuple(w.shape)})")
    return w


def kernel_stein_discrepancy(
    x: torch.Tensor,
    score: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    c: float = 1.0,
    beta: float = -0.5,
    *,
    weights: torch.Tensor | None = None,
    block_size: int = 1024,
) -> torch.Tensor:
    r"""IMQ kernel Stein discrepancy of the sample ``x`` from the density :math:`p`.

    Only the score :math:`s(x) = \nabla_x \log p(x)` is needed, so :math:`p` may be
    unnormalised. With the inverse multiquadric base kernel

    .. math::

        k(x, y) = (c^2 + \|x - y\|^2)^\beta, \qquad c > 0, \quad -1 < \beta < 0,

    the Langevin Stein kernel is

    .. math::

        k_p(x, y) = s(x) \cdot s(y)\, k(x, y) + s(x) \cdot \nabla_y k(x, y)
            + s(y) \cdot \nabla_x k(x, y) + \operatorname{tr}\big(\nabla_x \nabla_y k(x, y)\big).

    Writing :math:`u = x - y`, :math:`r^2 = \|u\|^2` and :math:`q = c^2 + r^2`, the IMQ
    derivatives are :math:`\nabla_x k = 2 \beta q^{\beta - 1} u = -\nabla_y k` and

    .. math::

        \operatorname{tr}(\nabla_x \nabla_y k)
            = -2 d \beta q^{\beta - 1} - 4 \beta (\beta - 1) r^2 q^{\beta - 2},

    so :math:`k_p(x, y) = s(x) \cdot s(y)\, q^\beta - 2 \beta q^{\beta - 1}
    (s(x) - s(y)) \cdot u + \operatorname{tr}(\nabla_x \nabla_y k)`. The discrepancy is the
    (weighted) V-statistic

    .. math::

        \mathrm{KSD} = \Big( \sum_{i=1}^n \sum_{j=1}^n w_i w_j\, k_p(x_i, x_j) \Big)^{1/2},

    with :math:`w_i = 1/n` by default. :math:`k_p` is positive definite, so the sum is
    :math:`\ge 0` (rounding below zero is clipped). For samples from :math:`p` the squared KSD
    has expectation :math:`\mathbb{E}_p[k_p(X, X)]/n`, so KSD decays like :math:`n^{-1/2}`;
    for :math:`\beta \in (-1, 0)` and a distantly dissipative :math:`p` with Lipschitz score,
    KSD tending to zero implies weak convergence of the sample to :math:`p` (Gorham & Mackey,
    Theorem 8).

    Reference:
        J. Gorham and L. Mackey, "Measuring sample quality with kernels", Proceedings of the
        34th International Conference on Machine Learning (ICML), 2017.

    Args:
        x: Sample, shape ``(n, d)`` or ``(n,)``, ``n >= 1``.
        score: :math:`\nabla \log p` at the points, a tensor of the shape of ``x``, or a
            callable mapping an ``(n, d)`` tensor of points to the ``(n, d)`` tensor of scores
            (it is called once, on ``x`` reshaped to ``(n, d)``). It is cast to the dtype of
            ``x``.
        c: Kernel scale :math:`c > 0`.
        beta: Kernel exponent :math:`\beta \in (-1, 0)`.
        weights: Optional nonnegative weights of shape ``(n,)`` summing to 1 (within
            :math:`\sqrt{\epsilon}`, :math:`\epsilon` the machine epsilon of the less precise
            of the dtypes of ``x`` and ``weights``), for a weighted sample. Default uniform.
        block_size: Rows of the Stein kernel matrix computed at a time.

    Returns:
        0-dimensional tensor, the KSD (not squared), with the dtype and device of ``x``.

    Raises:
        ValueError: On malformed input (see the module documentation), a score or weights of
            the wrong shape or with non-finite values, weights that are negative or do not sum
            to 1, or ``c``, ``beta`` out of range.
    """
    x = _as_points(x, "x", min_points=1)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c must be a positive finite number, got {c!r}")
    if not (-1.0 < beta < 0.0):
        raise ValueError(f"beta must lie in the open interval (-1, 0), got {beta!r}")
    block_size = _check_block_size(block_size)
    s = _as_score(score, x)
    n = x.shape[0]
    w = None if weights is None else _as_weights(weights, x)
    # The Stein kernel depends on x only through differences; centring keeps the inner products
    # in _imq_stein_kernel small, which limits cancellation.
    x = x - x.detach().mean(0)
    total = x.new_zeros(())
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        kp = _imq_stein_kernel(x[start:stop], x, s[start:stop], s, c, beta)
        if w is None:
            total = total + kp.sum()
        else:
            total = total + w[start:stop] @ kp @ w
    ksd2 = total / n**2 if w is None else total
    return torch.sqrt(torch.clamp_min(ksd2, 0.0))
