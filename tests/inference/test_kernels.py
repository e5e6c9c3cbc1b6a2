"""Tests of the Stein kernels: ``RBFKernel``, ``IMQKernel`` and ``PreconditionedKernel``.

Every direction is compared with a brute-force double loop over particle pairs,

    phi(x_j) = (1/n) sum_i [k(x_i, x_j) score_i + grad_{x_i} k(x_i, x_j)],

where the kernel gradient comes from ``torch.autograd`` on a plain implementation of the kernel
written here (not from the library's closed-form derivative). Everything is float64, so the
comparisons are to rounding error (rtol 1e-10).
"""

from __future__ import annotations

import math

import pytest
import torch

from pplx.inference.kernels import IMQKernel, PreconditionedKernel, RBFKernel, squared_distances

D64 = torch.float64
RTOL, ATOL = 1e-10, 1e-12


def particles(n: int = 7, dim: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spread-out particles and arbitrary 'scores' (the direction is linear in the score)."""
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(n, dim, generator=g, dtype=D64)
    score = torch.randn(n, dim, generator=g, dtype=D64)
    return x, score


# --------------------------------------------------------------------------- reference kernels


def rbf(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    return torch.exp(-((x - y) ** 2).sum() / h)


def imq(c: float, beta: float):
    def k(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
        return (c + ((x - y) ** 2).sum() / h) ** beta

    return k


def brute_direction(k, x: torch.Tensor, score: torch.Tensor, h: float) -> torch.Tensor:
    """(1/n) sum_i [k(x_i, x_j) s_i + grad_{x_i} k(x_i, x_j)] by a double loop and autograd."""
    n = x.shape[0]
    phi = torch.zeros_like(x)
    for j in range(n):
        for i in range(n):
            xi = x[i].clone().requires_grad_(True)
            value = k(xi, x[j], h)
            (grad,) = torch.autograd.grad(value, xi)
            phi[j] += value.detach() * score[i] + grad
    return phi / n


def median_pairwise_d2(x: torch.Tensor) -> float:
    """Median of ||x_i - x_j||^2 over the n(n-1)/2 distinct pairs, by a plain loop.

    The tests use n = 7 (21 pairs, an odd number), so the median is the middle value and does not
    depend on how ties between the two middle values of an even count are broken.
    """
    n = x.shape[0]
    values = sorted(float(((x[i] - x[j]) ** 2).sum()) for i in range(n) for j in range(i + 1, n))
    assert len(values) % 2 == 1
    return values[len(values) // 2]


# --------------------------------------------------------------------------- scalar kernels

KERNELS = {
    "rbf": (lambda bw: RBFKernel(bandwidth=bw), lambda: rbf),
    "imq": (lambda bw: IMQKernel(bandwidth=bw), lambda: imq(1.0, -0.5)),
    "imq_c2_beta-0.3": (
        lambda bw: IMQKernel(c=2.0, beta=-0.3, bandwidth=bw),
        lambda: imq(2.0, -0.3),
    ),
}


def test_squared_distances_match_pairwise_norms():
    x, _ = particles()
    y = x[:4] + 0.1
    expected = torch.cdist(x, y) ** 2
    torch.testing.assert_close(squared_distances(x, y), expected, rtol=1e-10, atol=1e-12)
    assert (squared_distances(x).diagonal() == 0).all()


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("h", [0.7, 3.0])
def test_direction_fixed_bandwidth_equals_brute_force(name, h):
    make, ref = KERNELS[name]
    x, score = particles()
    phi, bandwidth = make(h).stein_direction(x, score)
    assert float(bandwidth) == h
    torch.testing.assert_close(phi, brute_direction(ref(), x, score, h), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_direction_median_bandwidth_equals_brute_force(name):
    make, ref = KERNELS[name]
    x, score = particles()
    n = x.shape[0]
    phi, bandwidth = make("median").stein_direction(x, score)
    # Liu & Wang's heuristic for RBF: med(d^2) / log(n + 1); IMQ uses med(d^2) itself.
    med = median_pairwise_d2(x)
    expected_h = med / math.log(n + 1) if name == "rbf" else med
    assert float(bandwidth) == pytest.approx(expected_h, rel=1e-12)
    torch.testing.assert_close(
        phi, brute_direction(ref(), x, score, expected_h), rtol=RTOL, atol=ATOL
    )


def test_median_heuristic_values_and_degenerate_cases():
    x, _ = particles()
    d2 = squared_distances(x)
    n = x.shape[0]
    med = median_pairwise_d2(x)
    assert float(RBFKernel().median_heuristic(d2)) == pytest.approx(med / math.log(n + 1))
    assert float(IMQKernel().median_heuristic(d2)) == pytest.approx(med)
    # All particles equal: the median distance is 0, and the heuristic falls back to 1 (IMQ) or
    # 1/log(n+1) (RBF) instead of a zero bandwidth (a division by zero).
    same = torch.zeros(5, 2, dtype=D64)
    assert float(IMQKernel().median_heuristic(squared_distances(same))) == 1.0
    assert float(RBFKernel().median_heuristic(squared_distances(same))) == pytest.approx(
        1 / math.log(6)
    )
    phi, _ = RBFKernel().stein_direction(same, torch.ones(5, 2, dtype=D64))
    assert torch.isfinite(phi).all()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_grad_first_equals_autograd(name):
    make, ref = KERNELS[name]
    kernel = make(1.3)
    x, _ = particles()
    kmat, dk, h = kernel.gram(x)
    grad = kernel.grad_first(x, dk)
    n = x.shape[0]
    assert grad.shape == (n, n, x.shape[1])
    k = ref()
    for i in range(n):
        for j in range(n):
            xi = x[i].clone().requires_grad_(True)
            value = k(xi, x[j], float(h))
            (expected,) = torch.autograd.grad(value, xi)
            torch.testing.assert_close(kmat[i, j], value.detach(), rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(grad[i, j], expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_derivative_is_dk_dd2(name):
    make, _ = KERNELS[name]
    kernel = make(0.9)
    d2 = torch.linspace(0.0, 5.0, 11, dtype=D64).requires_grad_(True)
    h = torch.tensor(0.9, dtype=D64)
    (expected,) = torch.autograd.grad(kernel.matrix(d2, h).sum(), d2)
    torch.testing.assert_close(kernel.derivative(d2.detach(), h), expected, rtol=RTOL, atol=ATOL)


def test_bandwidth_schedule_is_called_with_the_step():
    calls = []

    def schedule(step: int) -> float:
        calls.append(step)
        return 0.5 + step

    x, score = particles()
    kernel = RBFKernel(bandwidth=schedule)
    phi, h = kernel.stein_direction(x, score, step=3)
    assert calls == [3]
    assert float(h) == 3.5
    fixed, _ = RBFKernel(bandwidth=3.5).stein_direction(x, score)
    torch.testing.assert_close(phi, fixed, rtol=0, atol=0)


def test_bandwidth_schedule_returning_nonpositive_raises():
    x, score = particles()
    with pytest.raises(ValueError, match="schedule gave -1.0 at step 2"):
        RBFKernel(bandwidth=lambda step: 1.0 - step).stein_direction(x, score, step=2)


@pytest.mark.parametrize("bandwidth", [0, -1.0, 0.0, float("nan"), "silverman", "mean"])
@pytest.mark.parametrize("cls", [RBFKernel, IMQKernel])
def test_invalid_bandwidth_raises(cls, bandwidth):
    with pytest.raises(ValueError, match="bandwidth"):
        cls(bandwidth=bandwidth)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c": 0.0}, "c must be positive"),
        ({"c": -1.0}, "c must be positive"),
        ({"beta": 0.0}, r"beta must be in \(-1, 0\)"),
        ({"beta": -1.0}, r"beta must be in \(-1, 0\)"),
        ({"beta": 0.5}, r"beta must be in \(-1, 0\)"),
        ({"beta": -1.5}, r"beta must be in \(-1, 0\)"),
    ],
)
def test_invalid_imq_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IMQKernel(**kwargs)


# --------------------------------------------------------------------------- preconditioned


def spd_matrix(dim: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=D64)
    return a @ a.T + 0.5 * torch.eye(dim, dtype=D64)


@pytest.mark.parametrize("base", [RBFKernel(), IMQKernel(), RBFKernel(bandwidth=2.0)])
def test_preconditioned_with_identity_metric_equals_base(base):
    x, score = particles()
    kernel = PreconditionedKernel(base, metric=torch.eye(3, dtype=D64))
    phi, h = kernel.stein_direction(x, score)
    expected, expected_h = base.stein_direction(x, score)
    torch.testing.assert_close(phi, expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(h, expected_h, rtol=RTOL, atol=0)


@pytest.mark.parametrize("bandwidth", [1.7, "median"])
def test_preconditioned_fixed_metric_equals_brute_force(bandwidth):
    """Q^{-1} (1/n) sum_i [k(L^T x_i, L^T x_j) s_i + grad_{x_i} k(L^T x_i, L^T x_j)], Q = L L^T."""
    x, score = particles()
    n = x.shape[0]
    q = spd_matrix()
    chol = torch.linalg.cholesky(q)
    kernel = PreconditionedKernel(RBFKernel(bandwidth=bandwidth), metric=q)
    phi, h = kernel.stein_direction(x, score)
    whitened = x @ chol  # rows L^T x_i
    if bandwidth == "median":
        assert float(h) == pytest.approx(median_pairwise_d2(whitened) / math.log(n + 1))
    else:
        assert float(h) == bandwidth

    def k_q(xi: torch.Tensor, xj: torch.Tensor, hh: float) -> torch.Tensor:
        return rbf(chol.T @ xi, chol.T @ xj, hh)

    inner = brute_direction(k_q, x, score, float(h))  # autograd sees L through k_q
    expected = torch.linalg.solve(q, inner.T).T
    torch.testing.assert_close(phi, expected, rtol=1e-9, atol=1e-11)


def test_fisher_metric_is_mean_score_outer_product_plus_damping():
    _, score = particles(n=9, dim=3)
    damping = 0.01
    kernel = PreconditionedKernel(IMQKernel(), damping=damping)
    outer = sum(torch.outer(s, s) for s in score) / score.shape[0]
    ridge = damping * outer.diagonal().mean() + torch.finfo(D64).eps
    expected = outer + ridge * torch.eye(3, dtype=D64)
    torch.testing.assert_close(kernel.metric_at(score), expected, rtol=1e-12, atol=1e-14)


def test_fisher_direction_equals_fixed_metric_direction_at_that_metric():
    x, score = particles(n=9, dim=3)
    fisher = PreconditionedKernel(IMQKernel(), metric="fisher", damping=1e-2)
    fixed = PreconditionedKernel(IMQKernel(), metric=fisher.metric_at(score))
    phi, h = fisher.stein_direction(x, score)
    expected, expected_h = fixed.stein_direction(x, score)
    torch.testing.assert_close(phi, expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(h, expected_h)


def test_fixed_metric_is_cast_to_the_particles_dtype():
    x, score = particles()
    metric32 = spd_matrix().float()
    phi, _ = PreconditionedKernel(RBFKernel(), metric=metric32).stein_direction(x, score)
    assert phi.dtype == D64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metric": "euclidean"}, "metric must be 'fisher' or a matrix"),
        ({"metric": torch.ones(2, 3)}, r"square \(D, D\) matrix, got \(2, 3\)"),
        ({"metric": torch.ones(3)}, r"square \(D, D\) matrix, got \(3,\)"),
        ({"damping": -0.1}, "damping must be >= 0"),
    ],
)
def test_invalid_preconditioner_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreconditionedKernel(RBFKernel(), **kwargs)
