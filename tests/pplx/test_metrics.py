"""Tests of ``pplx.metrics``: energy distance, MMD and the IMQ kernel Stein discrepancy.

Statistical checks compare the mean of R independent replicates (fixed seeds) with a closed-form
expectation; the tolerance is 4 Monte Carlo standard errors, the standard error being the sample
standard deviation of the replicates over sqrt(R). The U-statistics are unbiased, so their
replicate mean has the population value as expectation exactly.
"""

import math

import numpy as np
import pytest
import torch

from pplx import metrics
from pplx.metrics import (
    _imq_pieces,
    _imq_stein_kernel,
    energy_distance,
    kernel_stein_discrepancy,
    mmd,
)

F64 = torch.float64
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def replicate_mean_and_se(statistic, replicates):
    """Mean of ``statistic(seed)`` over seeds and its Monte Carlo standard error."""
    values = torch.stack([statistic(seed) for seed in range(replicates)])
    return values.mean().item(), (values.std() / math.sqrt(replicates)).item()


def folded_normal_mean(mu, sigma):
    """E|Z| for Z ~ N(mu, sigma^2)."""
    phi = 0.5 * (1.0 + math.erf(-mu / sigma / math.sqrt(2.0)))  # Phi(-mu / sigma)
    return sigma * math.sqrt(2.0 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (
        1.0 - 2.0 * phi
    )


def gaussian_energy_distance(m1, s1, m2, s2):
    """Energy distance between N(m1, s1^2) and N(m2, s2^2) in one dimension."""
    xy = folded_normal_mean(m1 - m2, math.sqrt(s1**2 + s2**2))
    xx = folded_normal_mean(0.0, math.sqrt(2.0) * s1)
    yy = folded_normal_mean(0.0, math.sqrt(2.0) * s2)
    return 2.0 * xy - xx - yy


# --------------------------------------------------------------------------- energy distance


def test_energy_distance_brute_force():
    torch.manual_seed(0)
    x, y = torch.randn(5, 3, dtype=F64), torch.randn(4, 3, dtype=F64) + 0.5
    xs, ys = x.tolist(), y.tolist()
    xy = sum(math.dist(a, b) for a in xs for b in ys)
    xx = sum(math.dist(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if i != j)
    yy = sum(math.dist(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if i != j)
    u = 2 * xy / 20 - xx / 20 - yy / 12
    v = 2 * xy / 20 - xx / 25 - yy / 16
    assert energy_distance(x, y).item() == pytest.approx(u, rel=1e-12)
    assert energy_distance(x, y, unbiased=False).item() == pytest.approx(v, rel=1e-12)


def test_energy_distance_matches_gaussian_closed_form():
    # N(0, 1) vs N(1, 1): replicate mean of the unbiased statistic within 4 standard errors.
    truth = gaussian_energy_distance(0.0, 1.0, 1.0, 1.0)

    def stat(seed):
        torch.manual_seed(seed)
        return energy_distance(torch.randn(400, dtype=F64), 1.0 + torch.randn(300, dtype=F64))

    mean, se = replicate_mean_and_se(stat, 20)
    assert abs(mean - truth) < 4 * se
    assert mean > 10 * se  # clearly positive


def test_energy_distance_unequal_scales_closed_form():
    truth = gaussian_energy_distance(0.5, 1.0, 0.0, 2.0)

    def stat(seed):
        torch.manual_seed(100 + seed)
        return energy_distance(
            0.5 + torch.randn(300, dtype=F64), 2.0 * torch.randn(300, dtype=F64)
        )

    mean, se = replicate_mean_and_se(stat, 20)
    assert abs(mean - truth) < 4 * se


def test_energy_distance_same_distribution_is_near_zero():
    def stat(seed):
        torch.manual_seed(200 + seed)
        return energy_distance(torch.randn(300, 2, dtype=F64), torch.randn(250, 2, dtype=F64))

    mean, se = replicate_mean_and_se(stat, 20)
    assert abs(mean) < 4 * se


def test_energy_distance_v_statistic_nonnegative_and_bias_identity():
    torch.manual_seed(1)
    for _ in range(10):
        x, y = torch.randn(30, 2), torch.randn(40, 2)
        v = energy_distance(x, y, unbiased=False)
        assert v.item() >= 0.0
    # V - U = mean within-sample distance (U form) of x over n plus that of y over m.
    x, y = torch.randn(30, 2, dtype=F64), torch.randn(40, 2, dtype=F64)
    within_x = torch.cdist(x, x).sum() / (30 * 29)
    within_y = torch.cdist(y, y).sum() / (40 * 39)
    diff = energy_distance(x, y, unbiased=False) - energy_distance(x, y)
    assert diff.item() == pytest.approx((within_x / 30 + within_y / 40).item(), rel=1e-10)


def test_energy_distance_symmetric_and_block_invariant():
    torch.manual_seed(2)
    x, y = torch.randn(50, 3, dtype=F64), torch.randn(37, 3, dtype=F64) + 0.3
    for unbiased in (True, False):
        e = energy_distance(x, y, unbiased=unbiased)
        assert energy_distance(y, x, unbiased=unbiased).item() == pytest.approx(e.item(), 1e-12)
        small = energy_distance(x, y, unbiased=unbiased, block_size=7)
        assert small.item() == pytest.approx(e.item(), rel=1e-12)


def test_energy_distance_one_dimensional_input_is_d1():
    torch.manual_seed(3)
    x, y = torch.randn(20), torch.randn(25)
    assert energy_distance(x, y).item() == energy_distance(x[:, None], y[:, None]).item()


def test_energy_distance_is_differentiable():
    torch.manual_seed(4)
    x = torch.randn(10, 2, dtype=F64, requires_grad=True)
    y = torch.randn(8, 2, dtype=F64)
    for unbiased in (True, False):
        (grad,) = torch.autograd.grad(energy_distance(x, y, unbiased=unbiased), x)
        assert torch.isfinite(grad).all()


# --------------------------------------------------------------------------- MMD


def brute_force_mmd(x, y, kernel, h, unbiased):
    def k(a, b):
        r2 = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
        return math.exp(-r2 / (2 * h**2)) if kernel == "rbf" else (1 + r2 / h**2) ** -0.5

    xs, ys = x.tolist(), y.tolist()
    n, m = len(xs), len(ys)
    keep = (lambda i, j: i != j) if unbiased else (lambda i, j: True)
    xx = sum(k(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if keep(i, j))
    yy = sum(k(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if keep(i, j))
    xy = sum(k(a, b) for a in xs for b in ys)
    if unbiased:
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)
    return xx / n**2 + yy / m**2 - 2 * xy / (n * m)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_brute_force(kernel, unbiased):
    torch.manual_seed(5)
    x, y = torch.randn(6, 2, dtype=F64), torch.randn(5, 2, dtype=F64) + 0.7
    # Median heuristic: numpy's median of the distinct pairwise distances of the pooled sample.
    z = torch.cat([x, y]).numpy()
    i, j = np.triu_indices(len(z), k=1)
    h = float(np.median(np.linalg.norm(z[i] - z[j], axis=1)))
    expected = brute_force_mmd(x, y, kernel, h, unbiased)
    got = mmd(x, y, kernel=kernel, unbiased=unbiased)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    got = mmd(x, y, kernel=kernel, bandwidth=0.8, unbiased=unbiased)
    assert got.item() == pytest.approx(brute_force_mmd(x, y, kernel, 0.8, unbiased), rel=1e-12)


def test_mmd_rbf_matches_gaussian_closed_form():
    # N(0, I_2) vs N((1, 0), I_2), h = 1: E k(X, Y) = (h^2 / (h^2 + 2))^(d/2) exp(-|mu|^2 / 6).
    truth = 2.0 / 3.0 * (1.0 - math.exp(-1.0 / 6.0))
    shift = torch.tensor([1.0, 0.0], dtype=F64)

    def stat(seed):
        torch.manual_seed(300 + seed)
        x, y = torch.randn(200, 2, dtype=F64), shift + torch.randn(150, 2, dtype=F64)
        return mmd(x, y, bandwidth=1.0)

    mean, se = replicate_mean_and_se(stat, 20)
    assert abs(mean - truth) < 4 * se
    assert mean > 10 * se


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_same_distribution_is_near_zero(kernel):
    def stat(seed):
        torch.manual_seed(400 + seed)
        return mmd(torch.randn(120, 3, dtype=F64), torch.randn(150, 3, dtype=F64), kernel=kernel)

    mean, se = replicate_mean_and_se(stat, 20)
    assert abs(mean) < 4 * se


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_symmetric_block_invariant_and_v_nonnegative(kernel):
    torch.manual_seed(6)
    x, y = torch.randn(45, 3, dtype=F64), torch.randn(52, 3, dtype=F64)
    for unbiased in (True, False):
        value = mmd(x, y, kernel=kernel, unbiased=unbiased)
        assert mmd(y, x, kernel=kernel, unbiased=unbiased).item() == pytest.approx(
            value.item(), rel=1e-10, abs=1e-15
        )
        small = mmd(x, y, kernel=kernel, unbiased=unbiased, block_size=7)
        assert small.item() == pytest.approx(value.item(), rel=1e-10, abs=1e-15)
    for seed in range(10):
        torch.manual_seed(seed)
        assert mmd(torch.randn(20, 2), torch.randn(20, 2), kernel=kernel, unbiased=False) >= 0


def test_mmd_median_heuristic_thins_large_samples_deterministically(monkeypatch):
    monkeypatch.setattr(metrics, "MEDIAN_HEURISTIC_MAX_POINTS", 150)
    torch.manual_seed(7)
    x, y = torch.randn(400, dtype=F64), torch.randn(200, dtype=F64) + 2.0
    first, second = mmd(x, y), mmd(x, y)
    assert first.item() == second.item()
    # The median over 100 evenly spaced rows of x and 50 of y, as documented.
    z = torch.cat(
        [
            x[torch.linspace(0, 399, 100).round().long()],
            y[torch.linspace(0, 199, 50).round().long()],
        ]
    )
    i, j = np.triu_indices(150, k=1)
    h = float(np.median(np.abs(z.numpy()[i] - z.numpy()[j])))
    assert first.item() == pytest.approx(mmd(x, y, bandwidth=h).item(), rel=1e-12)
    # The thinned median is close to the full one, so the MMD is too (smooth in h).
    monkeypatch.setattr(metrics, "MEDIAN_HEURISTIC_MAX_POINTS", 10_000)
    assert first.item() == pytest.approx(mmd(x, y).item(), rel=0.05)


def test_mmd_bandwidth_tensor_carries_gradient():
    torch.manual_seed(8)
    h = torch.tensor(1.3, dtype=F64, requires_grad=True)
    value = mmd(torch.randn(20, 2, dtype=F64), torch.randn(20, 2, dtype=F64) + 1.0, bandwidth=h)
    (grad,) = torch.autograd.grad(value, h)
    assert torch.isfinite(grad)


# --------------------------------------------------------------------------- KSD


def imq(x, y, c, beta):
    return (c**2 + ((x - y) ** 2).sum()) ** beta


def autograd_pieces(x, y, c, beta):
    """k, grad_x k, grad_y k and tr(grad_x grad_y k) at one pair, by autograd."""
    d = x.shape[0]
    z = torch.cat([x, y])
    f = lambda z: imq(z[:d], z[d:], c, beta)  # noqa: E731
    grad = torch.autograd.functional.jacobian(f, z)
    hess = torch.autograd.functional.hessian(f, z)
    return f(z), grad[:d], grad[d:], torch.diagonal(hess[:d, d:]).sum()


@pytest.mark.parametrize("c, beta", [(1.0, -0.5), (0.5, -0.25), (2.0, -0.9)])
def test_imq_gradient_and_trace_terms_match_autograd(c, beta):
    torch.manual_seed(9)
    d = 3
    xs, ys = torch.randn(4, d, dtype=F64), 1.5 * torch.randn(5, d, dtype=F64)
    ys[0] = xs[0]  # include r = 0
    for x in xs:
        for y in ys:
            k_ref, gx_ref, gy_ref, tr_ref = autograd_pieces(x, y, c, beta)
            k, g, t = _imq_pieces(((x - y) ** 2).sum(), d, c, beta)
            torch.testing.assert_close(k, k_ref, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(g * (x - y), gx_ref, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(-g * (x - y), gy_ref, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(t, tr_ref, rtol=1e-12, atol=1e-14)


def autograd_stein_kernel(xs, ys, sxs, sys_, c, beta):
    """k_p(x_i, y_j) from its definition, the derivatives by autograd, as an (n, m) matrix."""
    out = torch.empty(len(xs), len(ys), dtype=xs.dtype)
    for i, (x, sx) in enumerate(zip(xs, sxs)):
        for j, (y, sy) in enumerate(zip(ys, sys_)):
            k, gx, gy, tr = autograd_pieces(x, y, c, beta)
            out[i, j] = (sx @ sy) * k + sx @ gy + sy @ gx + tr
    return out


@pytest.mark.parametrize("c, beta", [(1.0, -0.5), (0.7, -0.3)])
def test_stein_kernel_matrix_matches_autograd(c, beta):
    torch.manual_seed(10)
    xs, ys = torch.randn(4, 2, dtype=F64) + 3.0, torch.randn(3, 2, dtype=F64) + 3.0
    sxs, sys_ = torch.randn(4, 2, dtype=F64), torch.randn(3, 2, dtype=F64)
    expected = autograd_stein_kernel(xs, ys, sxs, sys_, c, beta)
    torch.testing.assert_close(_imq_stein_kernel(xs, ys, sxs, sys_, c, beta), expected)


def test_ksd_brute_force_unweighted_and_weighted():
    torch.manual_seed(11)
    x = torch.randn(6, 2, dtype=F64)
    score = torch.randn(6, 2, dtype=F64)
    kp = autograd_stein_kernel(x, x, score, score, 1.3, -0.4)
    expected = kp.mean().sqrt()
    got = kernel_stein_discrepancy(x, score, c=1.3, beta=-0.4)
    torch.testing.assert_close(got, expected)
    w = torch.rand(6, dtype=F64)
    w = w / w.sum()
    got = kernel_stein_discrepancy(x, score, c=1.3, beta=-0.4, weights=w, block_size=4)
    torch.testing.assert_close(got, (w @ kp @ w).sqrt())


def test_ksd_expectation_for_samples_from_target():
    # For X_i ~ p = N(0, I_d), E[KSD^2] = E[k_p(X, X)] / n = (d c^(2 beta) - 2 d beta
    # c^(2 beta - 2)) / n, which is 2d / n for c = 1, beta = -1/2 (the off-diagonal terms have
    # mean zero by Stein's identity). n KSD^2 is right-skewed (skewness about 1.4), hence many
    # small replicates rather than a few large ones.
    n, d = 60, 2

    def stat(seed):
        torch.manual_seed(500 + seed)
        x = torch.randn(n, d, dtype=F64)
        return n * kernel_stein_discrepancy(x, -x) ** 2

    mean, se = replicate_mean_and_se(stat, 40)
    assert abs(mean - 2 * d) < 4 * se


def test_ksd_decreases_with_sample_size():
    torch.manual_seed(12)
    small, large = torch.randn(100, 2), torch.randn(2000, 2)
    ksd_small = kernel_stein_discrepancy(small, -small)
    ksd_large = kernel_stein_discrepancy(large, -large)
    # KSD ~ sqrt(4 / n): about 0.2 and 0.045; require at least a factor 2.
    assert ksd_large < ksd_small / 2


def test_ksd_detects_a_shifted_sample():
    torch.manual_seed(13)
    good = torch.randn(500, 2)
    bad = torch.randn(500, 2) + torch.tensor([1.0, 0.0])
    # About 0.09 against 0.7 (KSD of the shifted sample is bounded away from zero).
    assert kernel_stein_discrepancy(bad, -bad) > 4 * kernel_stein_discrepancy(good, -good)


def test_ksd_callable_score_equals_tensor_score_and_uniform_weights():
    torch.manual_seed(14)
    x = torch.randn(40, 3, dtype=F64) * 1.5

    def score(points):
        return -points / 2.0

    from_tensor = kernel_stein_discrepancy(x, -x / 2.0)
    torch.testing.assert_close(kernel_stein_discrepancy(x, score), from_tensor)
    uniform = torch.full((40,), 1.0 / 40, dtype=F64)
    torch.testing.assert_close(kernel_stein_discrepancy(x, score, weights=uniform), from_tensor)
    torch.testing.assert_close(kernel_stein_discrepancy(x, score, block_size=7), from_tensor)


def test_ksd_weights_equal_duplicated_points():
    torch.manual_seed(15)
    x = torch.randn(3, 2, dtype=F64)
    weighted = kernel_stein_discrepancy(x, -x, weights=torch.tensor([0.5, 0.25, 0.25], dtype=F64))
    dup = x[[0, 0, 1, 2]]
    torch.testing.assert_close(weighted, kernel_stein_discrepancy(dup, -dup))


def test_ksd_accepts_one_dimensional_input_and_single_point():
    torch.manual_seed(16)
    x = torch.randn(30, dtype=F64)
    torch.testing.assert_close(
        kernel_stein_discrepancy(x, -x), kernel_stein_discrepancy(x[:, None], -x[:, None])
    )
    # One point: k_p(x, x) = |s|^2 c^(2 beta) - 2 d beta c^(2 beta - 2).
    one = torch.tensor([[0.5, -1.0]], dtype=F64)
    expected = math.sqrt(1.25 * 1.0 + 2.0)
    assert kernel_stein_discrepancy(one, -one).item() == pytest.approx(expected, rel=1e-12)


def test_ksd_is_differentiable_in_x():
    torch.manual_seed(17)
    x = torch.randn(12, 2, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(kernel_stein_discrepancy(x, lambda p: -p), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# --------------------------------------------------------------------------- errors


TWO = torch.randn(10, 2)
THREE = torch.randn(10, 3)


@pytest.mark.parametrize("fn", [energy_distance, mmd])
def test_two_sample_errors(fn):
    with pytest.raises(ValueError, match=r"x and y must have the same dimension.*\(10, 3\)"):
        fn(TWO, THREE)
    with pytest.raises(ValueError, match=r"x needs at least 2 points.*\(1, 2\)"):
        fn(TWO[:1], TWO)
    with pytest.raises(ValueError, match=r"y needs at least 2 points.*\(1, 2\)"):
        fn(TWO, TWO[:1])
    bad = TWO.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"x contains non-finite.*\(10, 2\)"):
        fn(bad, TWO)
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"y contains non-finite.*\(10, 2\)"):
        fn(TWO, bad)
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\).*\(2, 5, 2\)"):
        fn(torch.randn(2, 5, 2), TWO)
    with pytest.raises(ValueError, match="block_size"):
        fn(TWO, TWO, block_size=0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fn([[0.0, 1.0], [1.0, 0.0]], TWO)


def test_mmd_argument_errors():
    with pytest.raises(ValueError, match="kernel"):
        mmd(TWO, TWO, kernel="laplace")
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(TWO, TWO, bandwidth="mean")
    for h in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="bandwidth"):
            mmd(TWO, TWO, bandwidth=h)
    with pytest.raises(ValueError, match="median"):
        mmd(torch.zeros(5, 2), torch.zeros(6, 2))


def test_ksd_errors():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match=r"score must have the shape of x, \(10, 2\).*\(10, 3\)"):
        kernel_stein_discrepancy(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"score\(x\) must have the shape of x"):
        kernel_stein_discrepancy(x, lambda p: p.sum(-1))
    with pytest.raises(ValueError, match=r"x needs at least 1 point.*\(0, 2\)"):
        kernel_stein_discrepancy(x[:0], x[:0])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x contains non-finite"):
        kernel_stein_discrepancy(bad, x)
    with pytest.raises(ValueError, match=r"score contains non-finite"):
        kernel_stein_discrepancy(x, bad)
    with pytest.raises(ValueError, match=r"weights must have shape \(10,\)"):
        kernel_stein_discrepancy(x, -x, weights=torch.full((9,), 1 / 9))
    with pytest.raises(ValueError, match="weights must sum to 1"):
        kernel_stein_discrepancy(x, -x, weights=torch.full((10,), 0.2))
    with pytest.raises(ValueError, match="nonnegative"):
        kernel_stein_discrepancy(x, -x, weights=torch.tensor([0.2] * 9 + [-0.8]))
    with pytest.raises(ValueError, match="c must be"):
        kernel_stein_discrepancy(x, -x, c=0.0)
    for beta in (0.0, -1.0, 0.5):
        with pytest.raises(ValueError, match="beta"):
            kernel_stein_discrepancy(x, -x, beta=beta)


# --------------------------------------------------------------------------- dtype and device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_inputs(device, dtype):
    torch.manual_seed(18)
    x = torch.randn(50, 2, dtype=dtype, device=device)
    y = torch.randn(40, 2, dtype=dtype, device=device) + 0.5
    results = [
        energy_distance(x, y),
        energy_distance(x, y, unbiased=False),
        mmd(x, y),
        mmd(x, y, kernel="imq", bandwidth=1.0, unbiased=False),
        kernel_stein_discrepancy(x, -x),
        kernel_stein_discrepancy(x, lambda p: -p, weights=torch.full((50,), 0.02, device=device)),
    ]
    for value in results:
        assert value.shape == () and value.dtype == dtype and value.device.type == device
        assert torch.isfinite(value)
    # float32 agrees with float64 to single precision.
    x64, y64 = x.double(), y.double()
    reference = [energy_distance(x64, y64), mmd(x64, y64), kernel_stein_discrepancy(x64, -x64)]
    for value, ref in zip([results[0], results[2], results[4]], reference):
        assert value.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-6)


def test_mixed_dtypes_promote_and_integers_are_cast():
    x32, y64 = torch.randn(10, 2), torch.randn(12, 2, dtype=F64)
    assert energy_distance(x32, y64).dtype == F64
    xi = torch.arange(10).reshape(5, 2)
    assert mmd(xi, xi + 1).dtype == torch.get_default_dtype()
    x = torch.randn(10, 2)
    assert kernel_stein_discrepancy(x, -x.double()).dtype == torch.float32  # dtype of x
