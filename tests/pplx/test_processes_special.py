"""Incomplete gamma functions with a gradient in the shape parameter (pplx.processes.special)."""

import math

import pytest
import torch
from scipy import integrate
from scipy import special as sp

from pplx.processes import gammainc, gammaincc, gammaincc_scaled

# Points on both sides of the series / continued-fraction split x = a + 1, near it, and far
# out (where exp(x) overflows float64 but exp(x) Q(a, x) does not).
A = [0.3, 0.7, 1.0, 1.3, 1.5, 2.2, 0.51, 5.0, 50.0, 1.2, 0.9, 1.7]
X = [0.01, 0.5, 1.9, 3.0, 100.0, 2.0, 1e4, 5.5, 52.0, 1e-8, 1.9, 2.69]


def _dq_da_quadrature(a: float, x: float) -> float:
    """d/da Q(a, x) from the integral: [int_x^inf log(t) t^(a-1) e^-t dt] / Gamma(a) - psi(a) Q.

    With t = x + u the integrand is e^-x * log(x + u) (x + u)^(a-1) e^-u; the factor e^-x is
    kept outside (the result is returned multiplied by e^x, i.e. d/da [e^x Q])."""
    val, _ = integrate.quad(
        lambda u: math.log(x + u) * (x + u) ** (a - 1.0) * math.exp(-u),
        0.0,
        math.inf,
        epsabs=0.0,
        epsrel=1e-13,
        limit=200,
    )
    scaled_q = val / math.gamma(a)  # e^x * [int log(t) ...] / Gamma(a)
    eq = integrate.quad(
        lambda u: (x + u) ** (a - 1.0) * math.exp(-u), 0.0, math.inf, epsabs=0.0, epsrel=1e-13
    )[0] / math.gamma(a)  # e^x Q(a, x)
    return scaled_q - sp.digamma(a) * eq


def test_values_match_torch_and_scipy():
    a = torch.tensor(A, dtype=torch.float64)
    x = torch.tensor(X, dtype=torch.float64)
    torch.testing.assert_close(gammainc(a, x), torch.special.gammainc(a, x), rtol=0, atol=0)
    torch.testing.assert_close(gammaincc(a, x), torch.special.gammaincc(a, x), rtol=0, atol=0)
    # e^x Q(a, x) against quadrature of its integral representation int (x+u)^(a-1) e^-u du.
    expected = [
        integrate.quad(
            lambda u, a=ai, x=xi: (x + u) ** (a - 1.0) * math.exp(-u),
            0,
            math.inf,
            epsabs=0.0,
            epsrel=1e-13,
        )[0]
        / math.gamma(ai)
        for ai, xi in zip(A, X)
    ]
    torch.testing.assert_close(
        gammaincc_scaled(a, x), torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0
    )


def test_derivative_in_a_matches_quadrature():
    # d/da [e^x Q(a, x)] = e^x dQ/da; dP/da = -dQ/da. Reference by adaptive quadrature.
    a = torch.tensor(A, dtype=torch.float64, requires_grad=True)
    x = torch.tensor(X, dtype=torch.float64)
    (grad_scaled,) = torch.autograd.grad(gammaincc_scaled(a, x).sum(), a)
    reference = torch.tensor([_dq_da_quadrature(ai, xi) for ai, xi in zip(A, X)])
    torch.testing.assert_close(grad_scaled, reference.to(torch.float64), rtol=1e-8, atol=1e-14)
    (grad_lower,) = torch.autograd.grad(gammainc(a, x).sum(), a)
    expected_lower = -reference * torch.exp(-x)
    torch.testing.assert_close(grad_lower, expected_lower, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("fn", [gammainc, gammaincc, gammaincc_scaled])
def test_gradcheck_float64(fn):
    # x on both sides of the split x = a + 1; away from x = 0 where dP/dx is singular (a < 1).
    a = torch.tensor([0.3, 0.7, 1.3, 1.5, 2.2, 0.9, 1.7], dtype=torch.float64, requires_grad=True)
    x = torch.tensor(
        [0.2, 0.5, 3.0, 40.0, 2.0, 1.9, 2.69], dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(fn, (a, x))


def test_float32_inputs_get_float64_accurate_gradients():
    a64 = torch.tensor([0.7, 1.3, 1.1], dtype=torch.float64, requires_grad=True)
    x64 = torch.tensor([0.4, 20.0, 2.0], dtype=torch.float64)
    a32 = a64.detach().float().requires_grad_(True)
    for fn in (gammainc, gammaincc_scaled):
        (g64,) = torch.autograd.grad(fn(a64, x64).sum(), a64)
        out32 = fn(a32, x64.float())
        assert out32.dtype == torch.float32
        (g32,) = torch.autograd.grad(out32.sum(), a32)
        assert g32.dtype == torch.float32
        # float32 rounding of the inputs (rel 6e-8) moves the result by less than 1e-6
        torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=0)


def test_scaled_does_not_overflow():
    a = torch.tensor([0.7, 1.3], dtype=torch.float64)
    x = torch.tensor([1e3, 1e6], dtype=torch.float64)
    value = gammaincc_scaled(a, x)
    assert torch.isfinite(value).all()
    # large-x asymptotics: e^x Q(a, x) = x^(a-1) / Gamma(a) * (1 + (a-1)/x + O(x^-2))
    approx = x ** (a - 1) / torch.exp(torch.lgamma(a)) * (1 + (a - 1) / x)
    torch.testing.assert_close(value, approx, rtol=1e-5, atol=0)


def test_broadcasting_and_python_floats():
    a = torch.tensor([[0.5], [1.5]], dtype=torch.float64)
    x = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    assert gammainc(a, x).shape == (2, 3)
    assert gammainc(0.5, 2.0).dtype == torch.get_default_dtype()
    assert math.isclose(float(gammainc(0.5, 2.0)), sp.gammainc(0.5, 2.0), rel_tol=1e-6)


@pytest.mark.parametrize(
    ("a", "x", "match"),
    [
        (0.0, 1.0, "a must be finite and > 0"),
        (-1.0, 1.0, "a must be finite and > 0"),
        (1.0, -0.5, "x must be >= 0"),
        (float("nan"), 1.0, "a must be finite"),
    ],
)
def test_bad_input(a, x, match):
    with pytest.raises(ValueError, match=match):
        gammainc(a, x)
    with pytest.raises(TypeError, match="float or a torch.Tensor"):
        gammainc("1", 1.0)
