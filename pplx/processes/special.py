r"""Regularised incomplete gamma functions with a gradient in the shape parameter.

:func:`torch.special.gammainc` and :func:`torch.special.gammaincc` have no derivative with
respect to their first argument, but the optimal weights of the Markov approximation of
fractional Brownian motion (:mod:`pplx.processes.fbm`) take the shape :math:`a = H + 1/2` from
the Hurst index :math:`H`, which is learned by gradient descent. This module supplies

* :func:`gammainc`: :math:`P(a, x) = \gamma(a, x) / \Gamma(a)`,
* :func:`gammaincc`: :math:`Q(a, x) = \Gamma(a, x) / \Gamma(a) = 1 - P(a, x)`,
* :func:`gammaincc_scaled`: :math:`e^{x} Q(a, x)`, which stays finite where :math:`e^{x}`
  alone overflows (for large :math:`x` it behaves like :math:`x^{a-1} / \Gamma(a)`),

each differentiable in both :math:`a` and :math:`x`.

Values come from :func:`torch.special.gammainc` / :func:`torch.special.gammaincc` (and, for
the scaled function at :math:`x \ge a + 1`, from the continued fraction below). The derivative
in :math:`x` is the closed form :math:`\partial_x P = x^{a-1} e^{-x} / \Gamma(a)`. The
derivative in :math:`a` is computed in one of two regions (the split of Numerical Recipes,
section 6.2):

* :math:`x < a + 1`: the series :math:`P(a, x) = \sum_{n \ge 0} t_n` with
  :math:`t_n = x^{a+n} e^{-x} / \Gamma(a + n + 1)` (every term positive, so no cancellation),
  differentiated term by term:
  :math:`\partial_a P = \sum_n t_n \,(\log x - \psi(a + n + 1))`; the terms are formed in log
  space, so nothing overflows.
* :math:`x \ge a + 1`: Legendre's continued fraction
  :math:`Q(a, x) = \frac{x^a e^{-x}}{\Gamma(a)} \cdot \cfrac{1}{x + 1 - a
  - \cfrac{1 \cdot (1 - a)}{x + 3 - a - \cfrac{2 (2 - a)}{x + 5 - a - \cdots}}}`
  evaluated by the modified Lentz algorithm while carrying the derivative of every
  intermediate quantity with respect to :math:`a` (forward-mode differentiation of the
  recursion), which gives :math:`\partial_a Q` without the cancellation that
  :math:`1 - P` would suffer when :math:`P \approx 1`.

All internal arithmetic is in float64 (float32 on devices without float64, such as Apple
MPS) and the results are cast back to the dtype of the inputs, so float32 inputs get
float64-accurate values and gradients. Second derivatives are not implemented (the backward
pass is :func:`~torch.autograd.function.once_differentiable`).

Reference:
    W. H. Press, S. A. Teukolsky, W. T. Vetterling and B. P. Flannery, *Numerical Recipes*,
    3rd ed., section 6.2 (incomplete gamma function), and section 5.2 (modified Lentz
    algorithm for continued fractions).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["gammainc", "gammaincc", "gammaincc_scaled"]

#: Largest number of continued-fraction steps before giving up (convergence takes a few dozen
#: steps for moderate ``x`` and about ``sqrt(a)`` steps near the boundary ``x = a + 1``).
_MAX_CF_STEPS = 5000


def _compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _prepare(a, x, name_a: str = "a", name_x: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``a`` and ``x`` into broadcast floating tensors on one device; validate them."""
    tensors = [v for v in (a, x) if isinstance(v, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = None
    for v in tensors:
        if v.is_floating_point():
            dtype = v.dtype if dtype is None else torch.promote_types(dtype, v.dtype)
    if dtype is None:
        dtype = torch.get_default_dtype()
    out = []
    for value, name in ((a, name_a), (x, name_x)):
        if not isinstance(value, torch.Tensor):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a float or a torch.Tensor, got {value!r}")
            value = torch.tensor(float(value), dtype=dtype, device=device)
        elif value.is_complex():
            raise TypeError(f"{name} must be real, got dtype {value.dtype}")
        else:
            if value.device != device:
                raise ValueError(
                    f"{name_a} and {name_x} must be on the same device, got "
                    f"{tensors[0].device} and {value.device}"
                )
            value = value.to(dtype)
        out.append(value)
    a, x = torch.broadcast_tensors(*out)
    with torch.no_grad():
        if not bool(torch.isfinite(a).all()) or not bool((a > 0).all()):
            raise ValueError(f"{name_a} must be finite and > 0 (the shape of the gamma function)")
        if torch.isnan(x).any() or bool((x < 0).any()):
            raise ValueError(f"{name_x} must be >= 0 (and not NaN)")
    return a, x


# --------------------------------------------------------------------------- derivatives


def _series_region(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Series for :math:`x < a + 1`: returns :math:`(P, \partial_a P)`; ``x > 0`` assumed."""
    # Terms decay at least like exp(-n^2 / (2 (a + 1))) once n > x; 10 sqrt(x) + 40 terms
    # leave a remainder far below float64 resolution.
    xmax = float(x.max()) if x.numel() else 0.0
    num_terms = int(math.ceil(10.0 * math.sqrt(xmax) + 40.0))
    n = torch.arange(num_terms, dtype=a.dtype, device=a.device)
    an1 = a.unsqueeze(-1) + n + 1.0
    logx = torch.log(x).unsqueeze(-1)
    terms = torch.exp((an1 - 1.0) * logx - x.unsqueeze(-1) - torch.lgamma(an1))
    value = terms.sum(-1)
    dvalue = (terms * (logx - torch.digamma(an1))).sum(-1)
    return value, dvalue


def _continued_fraction(
    a: torch.Tensor, x: torch.Tensor, with_derivative: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Legendre's continued fraction and its derivative in ``a`` (for ``x >= a + 1``).

    Returns ``h`` with :math:`Q = x^a e^{-x} h / \Gamma(a)` and :math:`\partial_a h` (``None``
    without ``with_derivative``), by the modified Lentz algorithm run in forward mode.
    """
    info = torch.finfo(a.dtype)
    tiny, eps = info.tiny / info.eps, 2.0 * info.eps
    b = x + 1.0 - a
    db = -torch.ones_like(a)
    c = torch.full_like(a, 1.0 / tiny)
    dc = torch.zeros_like(a)
    d = 1.0 / b
    dd = -db / b**2
    h = d.clone()
    dh = dd.clone()
    for i in range(1, _MAX_CF_STEPS + 1):
        an = -i * (i - a)
        b = b + 2.0
        # d <- 1 / (b + an d);  c <- b + an / c;  h <- h * c * d  (derivatives alongside)
        den = b + an * d
        if with_derivative:
            dden = db + i * d + an * dd
            dc = db + i / c - an * dc / c**2
        den = torch.where(den.abs() < tiny, torch.full_like(den, tiny), den)
        d = 1.0 / den
        c = b + an / c
        c = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
        delta = c * d
        if with_derivative:
            dd = -dden * d**2
            ddelta = dc * d + c * dd
            dh = dh * delta + h * ddelta
        h = h * delta
        if i % 8 == 0:
            done = (delta - 1.0).abs() <= eps
            if with_derivative:
                done = done & (ddelta.abs() <= eps * (1.0 + (dh / h).abs()))
            if bool(done.all()):
                break
    return h, (dh if with_derivative else None)


def _derivatives(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    r"""Return :math:`(e^x Q, \partial_a P, \partial_a (e^x Q))`, elementwise, in float64.

    The scaled function is returned too because the continued fraction gives it for free.
    """
    scaled = torch.empty_like(a)
    dp_da = torch.zeros_like(a)
    dscaled_da = torch.zeros_like(a)
    zero = x == 0
    series = (x < a + 1.0) & ~zero
    cf = x >= a + 1.0
    # x = 0: P = 0 for every a, so dP/da = 0; e^0 Q = 1, also constant in a.
    scaled[zero] = 1.0
    if bool(series.any()):
        a_s, x_s = a[series], x[series]
        p, dp = _series_region(a_s, x_s)
        dp_da[series] = dp
        q = torch.special.gammaincc(a_s, x_s)
        scaled[series] = torch.exp(x_s) * q
        dscaled_da[series] = -torch.exp(x_s) * dp
    if bool(cf.any()):
        a_c, x_c = a[cf], x[cf]
        h, dh = _continued_fraction(a_c, x_c)
        log_pref = a_c * torch.log(x_c) - torch.lgamma(a_c)  # log(x^a / Gamma(a))
        pref = torch.exp(log_pref)
        s = pref * h  # e^x Q
        ds = s * (torch.log(x_c) - torch.digamma(a_c)) + pref * dh
        scaled[cf] = s
        dscaled_da[cf] = ds
        dp_da[cf] = -torch.exp(-x_c) * ds
    return scaled, dp_da, dscaled_da


def _dlower_dx(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\partial_x P(a, x) = x^{a-1} e^{-x} / \Gamma(a)` (0 at ``x = 0`` when ``a > 1``)."""
    return torch.exp(torch.xlogy(a - 1.0, x) - x - torch.lgamma(a))


def _to_compute(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(_compute_dtype(t.device))


class _Gammainc(torch.autograd.Function):
    """:math:`P(a, x)`, differentiable in both arguments.

    :math:`Q = 1 - P` shares the backward, with the opposite ``sign``.
    """

    sign = 1.0
    compute = staticmethod(torch.special.gammainc)

    @classmethod
    def forward(cls, ctx, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, x)
        ctx.sign = cls.sign
        return cls.compute(_to_compute(a), _to_compute(x)).to(a.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, x = ctx.saved_tensors
        a64, x64, g64 = _to_compute(a), _to_compute(x), ctx.sign * _to_compute(grad)
        grad_a = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_a = (g64 * _derivatives(a64, x64)[1]).to(a.dtype)
        if ctx.needs_input_grad[1]:
            grad_x = (g64 * _dlower_dx(a64, x64)).to(x.dtype)
        return grad_a, grad_x


class _Gammaincc(_Gammainc):
    """:math:`Q(a, x)` computed directly (accurate where :math:`P` is close to 1)."""

    sign = -1.0
    compute = staticmethod(torch.special.gammaincc)


class _GammainccScaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a64, x64 = _to_compute(a), _to_compute(x)
        if ctx.needs_input_grad[0]:
            # the continued fraction gives the value and its a-derivative in one pass
            scaled, _, dscaled_da = _derivatives(a64, x64)
        else:
            scaled, dscaled_da = _scaled_value(a64, x64), None
        ctx.save_for_backward(a, x, scaled, dscaled_da)
        return scaled.to(a.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, x, scaled, dscaled_da = ctx.saved_tensors
        a64, x64, g64 = _to_compute(a), _to_compute(x), _to_compute(grad)
        grad_a = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_a = (g64 * dscaled_da).to(a.dtype)
        if ctx.needs_input_grad[1]:
            # d/dx [e^x Q(a, x)] = e^x Q(a, x) - x^(a-1) / Gamma(a)
            tail = torch.exp(torch.xlogy(a64 - 1.0, x64) - torch.lgamma(a64))
            grad_x = (g64 * (scaled - tail)).to(x.dtype)
        return grad_a, grad_x


def _scaled_value(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r""":math:`e^x Q(a, x)`, never overflowing where the product is finite.

    From :func:`torch.special.gammaincc` where :math:`x < a + 1`, from the continued fraction
    elsewhere (where :math:`e^x` alone may overflow).
    """
    out = torch.empty_like(a)
    cf = x >= a + 1.0
    low = ~cf
    if bool(low.any()):
        out[low] = torch.exp(x[low]) * torch.special.gammaincc(a[low], x[low])
    if bool(cf.any()):
        a_c, x_c = a[cf], x[cf]
        h, _ = _continued_fraction(a_c, x_c, with_derivative=False)
        out[cf] = torch.exp(a_c * torch.log(x_c) - torch.lgamma(a_c)) * h
    return out


# --------------------------------------------------------------------------- public functions


def gammainc(a: torch.Tensor | float, x: torch.Tensor | float) -> torch.Tensor:
    r"""Regularised lower incomplete gamma function, differentiable in ``a`` and ``x``.

    .. math::

        P(a, x) = \frac{1}{\Gamma(a)} \int_0^x t^{a-1} e^{-t} \, dt, \qquad
        \partial_x P = \frac{x^{a-1} e^{-x}}{\Gamma(a)},

    and :math:`\partial_a P` from the series or the continued fraction described in the module
    documentation. Same values as :func:`torch.special.gammainc`, which has no gradient in
    ``a``.

    Args:
        a: Shape parameter, ``> 0``; a float or a tensor.
        x: Argument, ``>= 0``; a float or a tensor (broadcast against ``a``).

    Returns:
        Tensor of the broadcast shape, with the (promoted) floating dtype and the device of the
        inputs.

    Raises:
        ValueError: If ``a <= 0``, ``x < 0``, either is NaN, or they live on different devices.
        TypeError: If an argument is neither a float nor a real tensor.
    """
    a, x = _prepare(a, x)
    return _Gammainc.apply(a, x)


def gammaincc(a: torch.Tensor | float, x: torch.Tensor | float) -> torch.Tensor:
    r"""Regularised upper incomplete gamma function :math:`Q(a, x) = 1 - P(a, x)`.

    .. math::

        Q(a, x) = \frac{1}{\Gamma(a)} \int_x^\infty t^{a-1} e^{-t} \, dt,

    differentiable in ``a`` and ``x`` (see :func:`gammainc`). Same values as
    :func:`torch.special.gammaincc`.

    Args:
        a: Shape parameter, ``> 0``.
        x: Argument, ``>= 0`` (broadcast against ``a``).

    Returns:
        Tensor of the broadcast shape, dtype and device of the inputs.

    Raises:
        ValueError: If ``a <= 0``, ``x < 0``, either is NaN, or they live on different devices.
        TypeError: If an argument is neither a float nor a real tensor.
    """
    a, x = _prepare(a, x)
    return _Gammaincc.apply(a, x)


def gammaincc_scaled(a: torch.Tensor | float, x: torch.Tensor | float) -> torch.Tensor:
    r"""Exponentially scaled upper incomplete gamma function :math:`e^{x} Q(a, x)`.

    For large :math:`x`, :math:`Q(a, x) \approx x^{a-1} e^{-x} / \Gamma(a)` underflows and
    :math:`e^{x}` overflows (float64 overflows beyond :math:`x \approx 709`), while their
    product :math:`\approx x^{a-1} / \Gamma(a)` is moderate. Where :math:`x \ge a + 1` it is
    computed as :math:`x^a h(a, x) / \Gamma(a)` with Legendre's continued fraction :math:`h`,
    never forming :math:`e^{x}`; elsewhere as :math:`e^{x} Q(a, x)`. Differentiable in ``a``
    and ``x``:

    .. math::

        \partial_x \left[e^{x} Q(a, x)\right] = e^{x} Q(a, x) - \frac{x^{a-1}}{\Gamma(a)}.

    Args:
        a: Shape parameter, ``> 0``.
        x: Argument, ``>= 0`` (broadcast against ``a``).

    Returns:
        Tensor of the broadcast shape, dtype and device of the inputs.

    Raises:
        ValueError: If ``a <= 0``, ``x < 0``, either is NaN, or they live on different devices.
        TypeError: If an argument is neither a float nor a real tensor.
    """
    a, x = _prepare(a, x)
    return _GammainccScaled.apply(a, x)
