"""Markov-approximate fractional Brownian motion (pplx.processes.fbm).

Statistical tests compare empirical covariances of sampled paths with analytic ones. For a
centred Gaussian vector X the estimator C_hat_ij = mean_p X_i^(p) X_j^(p) over N independent
paths is unbiased with Var(X_i X_j) = C_ii C_jj + C_ij^2, so its standard error is
se_ij = sqrt((C_ii C_jj + C_ij^2) / N). Each test checks max_ij |C_hat_ij - C_ij| / se_ij < 4.5:
with at most 78 distinct entries per test and P(|Z| > 4.5) = 6.8e-6 per entry, a correct
sampler fails with probability below 6e-4 (union bound), while a wrong covariance of the size
of the effects tested (weights, normalisation, time step) gives z-scores in the tens.
Seeds are fixed, so the outcome is deterministic anyway.
"""

import math

import pytest
import torch
from scipy import integrate
from scipy import special as sp

from pplx.processes import fbm as fbm_module
from pplx.processes import (
    fbm_covariance,
    fbm_weights,
    geometric_gammas,
    ma_fbm_covariance,
    mvn_variance,
    sample_fbm,
    sample_ma_fbm,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64
Z_MAX = 4.5


def _rel_err(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


def _max_z(paths: torch.Tensor, cov: torch.Tensor) -> float:
    """Largest |C_hat - C| / se over the entries (see the module docstring)."""
    paths = paths.double()
    cov = cov.double()
    n = paths.shape[0]
    emp = paths.T @ paths / n
    var = cov.diagonal()
    se = torch.sqrt((var.unsqueeze(-1) * var + cov**2) / n)
    return float(((emp - cov).abs() / se).max())


def _ratio_grid(num: int, ratio: float) -> torch.Tensor:
    """gamma_k = r^(k - (K+1)/2), the grid of Daems et al. with a fixed ratio r."""
    k = torch.arange(1, num + 1, dtype=F64)
    return ratio ** (k - (num + 1) / 2)


TIMES = torch.linspace(0.0, 1.0, 101, dtype=F64)[1:]


# --------------------------------------------------------------------------- constants, grids


def test_mvn_variance_matches_quadrature_and_paper_values():
    for h in [0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9]:
        a = h - 0.5
        # (1 + s)^a - s^a = s^a expm1(a log1p(1/s)), without cancellation for large s
        integrand = lambda s, a=a: (s**a * math.expm1(a * math.log1p(1 / s))) ** 2  # noqa: E731
        integral = sum(
            integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-10, limit=200)[0]
            for lo, hi in [(0, 1), (1, math.inf)]
        )
        expected = (integral + 1 / (2 * h)) / math.gamma(h + 0.5) ** 2
        value = mvn_variance(torch.tensor(h, dtype=F64))
        assert math.isclose(float(value), expected, rel_tol=1e-8)
    # 1 / sqrt(V_H) as quoted in PAPERS.md (two decimals)
    for h, quoted in [(0.2, 0.72), (0.3, 0.85), (0.7, 1.00), (0.8, 0.92)]:
        assert round(float(mvn_variance(h)) ** -0.5, 2) == quoted
    assert float(mvn_variance(0.5)) == pytest.approx(1.0, abs=1e-15)


def test_geometric_gammas_is_the_paper_grid():
    g = geometric_gammas(5, 20.0, dtype=F64)
    torch.testing.assert_close(g, _ratio_grid(5, math.sqrt(20.0)))
    assert float(g[-1]) == pytest.approx(20.0) and float(g[0]) == pytest.approx(1 / 20.0)
    g = geometric_gammas(4, 100.0, 1e-3, dtype=F64)
    torch.testing.assert_close(g, torch.logspace(-3, 2, 4, dtype=F64))
    assert geometric_gammas(1, 4.0).tolist() == [1.0]
    assert geometric_gammas(3, dtype=torch.float32).dtype == torch.float32


# --------------------------------------------------------------------------- exact covariances


def test_exact_covariances():
    t = torch.tensor([0.0, 1e-6, 0.1, 0.5, 0.5000001, 0.9, 1.0, 3.0], dtype=F64)
    tt, ss = torch.meshgrid(t, t, indexing="ij")
    # Standard fBM: Var = t^2H, and Brownian motion at H = 1/2.
    for h in [0.2, 0.8]:
        torch.testing.assert_close(fbm_covariance(t, h).diagonal(), t ** (2 * h))
    torch.testing.assert_close(fbm_covariance(t, 0.5), torch.minimum(tt, ss))
    torch.testing.assert_close(fbm_covariance(t, 0.5, "II"), torch.minimum(tt, ss))
    # Riemann-Liouville: closed form C(t, s) = s^(a+1) t^a / (a+1) 2F1(-a, 1; a+2; s/t) / G^2
    # for s <= t, a = H - 1/2, G = Gamma(H + 1/2).
    for h in [0.05, 0.2, 0.8, 0.95]:
        a = h - 0.5
        ref = torch.zeros(len(t), len(t), dtype=F64)
        for i, ti in enumerate(t.tolist()):
            for j, tj in enumerate(t.tolist()):
                m, big = min(ti, tj), max(ti, tj)
                if m > 0:
                    ref[i, j] = (
                        m ** (a + 1) * big**a / (a + 1) * sp.hyp2f1(-a, 1, a + 2, m / big)
                    ) / sp.gamma(h + 0.5) ** 2
        torch.testing.assert_close(fbm_covariance(t, h, "II"), ref, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- weights


def _mp_weights(h: float, gammas: list[float], horizon: float, kind: str) -> list[float]:
    """The weights' linear system of the docstring, solved with 50 significant digits."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    h, horizon = mp.mpf(h), mp.mpf(horizon)
    a = h + mp.mpf(1) / 2
    g = [mp.mpf(v) for v in gammas]
    size = len(g)
    matrix, rhs = mp.matrix(size, size), mp.matrix(size, 1)
    for i in range(size):
        for j in range(size):
            s = g[i] + g[j]
            if kind == "II":
                matrix[i, j] = (horizon + (mp.exp(-s * horizon) - 1) / s) / s
            else:
                matrix[i, j] = (
                    2 * horizon
                    + (mp.exp(-g[i] * horizon) - 1) / g[i]
                    + (mp.exp(-g[j] * horizon) - 1) / g[j]
                ) / s
        x = g[i] * horizon
        if kind == "II":
            rhs[i] = horizon * g[i] ** (-a) * mp.gammainc(a, 0, x, regularized=True) - a * g[
                i
            ] ** (-a - 1) * mp.gammainc(a + 1, 0, x, regularized=True)
        else:
            q = mp.gammainc(a, x, mp.inf, regularized=True)
            rhs[i] = (
                2 * horizon / g[i] ** a
                - horizon**a / (g[i] * mp.gamma(a + 1))
                + (mp.exp(-x) - q * mp.exp(x)) / g[i] ** (a + 1)
            ) * mp.sqrt(mp.gamma(2 * h + 1) * mp.sin(mp.pi * h))
    return [float(v) for v in mp.lu_solve(matrix, rhs)]


@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("h", [0.2, 0.5, 0.8])
def test_weights_match_high_precision_solve(kind, h):
    for gammas, horizon in [(geometric_gammas(5, 20.0, dtype=F64), 1.0), (_ratio_grid(3, 8.0), 7)]:
        weights = fbm_weights(h, gammas, horizon, kind)
        expected = torch.tensor(_mp_weights(h, gammas.tolist(), horizon, kind), dtype=F64)
        # the system's condition number is ~1e7, so ~1e-9 relative accuracy is what float64 gives
        torch.testing.assert_close(weights, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ["I", "II"])
def test_weights_gradient_matches_finite_differences(kind):
    # speeds with g*T from 2e-3 to 2e3: both sides of every series / continued-fraction split
    gammas = geometric_gammas(6, 1e3, 1e-3, dtype=F64)

    def central(h, step):
        up, down = (
            fbm_weights(h + step, gammas, 2.0, kind),
            fbm_weights(h - step, gammas, 2.0, kind),
        )
        return (up - down) / (2 * step)

    for h in [0.2, 0.5, 0.8]:
        hurst = torch.tensor(h, dtype=F64, requires_grad=True)
        weights = fbm_weights(hurst, gammas, 2.0, kind)
        jac = torch.stack([torch.autograd.grad(w, hurst, retain_graph=True)[0] for w in weights])
        # Richardson-extrapolated central differences, step 1e-3: truncation O(step^4) ~ 1e-12;
        # rounding noise ~ 1e-9 |w| / step, since the ill-conditioned system (type II, wide
        # grid) gives the weights only ~9 correct digits. Smaller steps amplify that noise.
        fd = (4 * central(h, 1e-3) - central(h, 2e-3)) / 3
        torch.testing.assert_close(jac, fd, rtol=0, atol=1e-5 * float(jac.abs().max()))
    hurst = torch.tensor(0.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda hh: fbm_weights(hh, gammas, 2.0, kind), (hurst,))


def test_weights_follow_dtype_and_accept_float32_hurst():
    gammas = geometric_gammas(5, 20.0)
    hurst = torch.tensor(0.3, requires_grad=True)
    weights = fbm_weights(hurst, gammas, 1.0)
    assert weights.dtype == torch.float32 and weights.shape == (5,)
    weights.sum().backward()
    assert torch.isfinite(hurst.grad)
    expected = fbm_weights(0.3, gammas.double(), 1.0)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------- approximation error


@pytest.mark.parametrize("h", [0.2, 0.5, 0.8])
def test_covariance_error_decreases_in_k(h):
    # Paper grid gamma_k = r^(k - (K+1)/2), r = sqrt(20) (gamma_max = 20 at K = 5): the speed
    # range widens with K, and the error against the exact covariance shrinks monotonically.
    for kind, ks in [("I", [1, 2, 3, 4, 5, 6, 8, 10, 12]), ("II", [1, 2, 3, 4, 5, 6, 8, 10])]:
        exact = fbm_covariance(TIMES, h, kind)
        errors = [
            _rel_err(ma_fbm_covariance(TIMES, h, _ratio_grid(k, math.sqrt(20)), kind), exact)
            for k in ks
        ]
        assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), (kind, errors)
        assert errors[-1] < errors[0] / 10, (kind, errors)


@pytest.mark.parametrize("h", [0.2, 0.5, 0.8])
def test_covariance_error_small_from_k5_on_a_wide_grid(h):
    # Speeds from 1e-4 to 1e2 (units 1/T): relative Frobenius error on 100 times in (0, 1].
    # Measured at K = 5: type I 0.038 / 3e-5 / 0.033, type II 0.014 / 5e-7 / 0.005 for
    # H = 0.2 / 0.5 / 0.8; the bounds leave room for rounding only.
    for kind, bound in [("I", 0.05), ("II", 0.02)]:
        exact = fbm_covariance(TIMES, h, kind)
        for k in [5, 6, 8, 10]:
            gammas = geometric_gammas(k, 1e2, 1e-4, dtype=F64)
            err = _rel_err(ma_fbm_covariance(TIMES, h, gammas, kind), exact)
            assert err < bound, (k, kind, err)


def test_half_gives_brownian_covariance():
    tt, ss = torch.meshgrid(TIMES, TIMES, indexing="ij")
    brownian = torch.minimum(tt, ss)
    wide = geometric_gammas(5, 1e2, 1e-4, dtype=F64)
    assert _rel_err(ma_fbm_covariance(TIMES, 0.5, wide, "I"), brownian) < 1e-4
    assert _rel_err(ma_fbm_covariance(TIMES, 0.5, wide, "II"), brownian) < 1e-5
    # The paper's grid (gamma in [0.05, 20]) cannot represent the flat kernel as well.
    paper = geometric_gammas(5, 20.0, dtype=F64)
    assert _rel_err(ma_fbm_covariance(TIMES, 0.5, paper, "I"), brownian) < 0.02
    assert _rel_err(ma_fbm_covariance(TIMES, 0.5, paper, "II"), brownian) < 1e-5


def test_ma_covariance_against_direct_ou_formula():
    # Expand Cov(Y_i(t), Y_j(s)) term by term (fine for moderate speeds) and compare.
    g = torch.tensor([0.5, 2.0, 7.0], dtype=F64)
    w = torch.tensor([0.3, -0.2, 0.9], dtype=F64)
    t = torch.tensor([0.1, 0.4, 1.3], dtype=F64)
    d = 1 / (g.unsqueeze(-1) + g)

    def stationary(ti, si):  # Cov(Y_i(ti), Y_j(si)), stationary start
        lag_i, lag_j = max(ti - si, 0.0), max(si - ti, 0.0)
        return d * torch.exp(-g.unsqueeze(-1) * lag_i - g * lag_j)

    def zero_start(ti, si):
        m = min(ti, si)
        return (
            torch.exp(-g.unsqueeze(-1) * (ti - m) - g * (si - m))
            * -torch.expm1(-(g.unsqueeze(-1) + g) * m)
            * d
        )

    for kind in ["I", "II"]:
        expected = torch.zeros(3, 3, dtype=F64)
        for i, ti in enumerate(t.tolist()):
            for j, si in enumerate(t.tolist()):
                if kind == "I":
                    block = (
                        stationary(ti, si)
                        - stationary(ti, 0.0)
                        - stationary(0.0, si)
                        + stationary(0.0, 0.0)
                    )
                else:
                    block = zero_start(ti, si)
                expected[i, j] = w @ block @ w
        torch.testing.assert_close(ma_fbm_covariance(t, None, g, kind, weights=w), expected)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("h", [0.3, 0.7])
def test_sampled_covariance_matches_analytic(device, kind, h):
    gen = torch.Generator(device=device).manual_seed(1234)
    gammas = geometric_gammas(5, 20.0, dtype=F64)
    irregular = torch.tensor([0.05, 0.1, 0.3, 0.31, 0.7, 1.0], dtype=F64)
    for times in [(1.0, 11), irregular]:  # uniform grid (FFT path) and irregular (loop path)
        paths = sample_ma_fbm(
            times if isinstance(times, tuple) else times.to(device),
            h,
            kind=kind,
            num_paths=20000,
            generator=gen,
            device=device,
            dtype=F64,
        )
        grid = fbm_module._check_times(times, None, F64)
        assert paths.shape == (20000, grid.numel()) and paths.device.type == device
        cov = ma_fbm_covariance(grid, h, gammas, kind)
        keep = grid > 0  # the path is exactly 0 at t = 0
        z = _max_z(paths[:, keep].cpu(), cov[keep][:, keep])
        assert z < Z_MAX, z


def test_fft_and_loop_give_the_same_paths():
    gammas = geometric_gammas(5, 20.0, dtype=F64)
    n, paths = 40, 3
    gen = torch.Generator().manual_seed(0)
    for kind in ["I", "II"]:
        w = fbm_weights(0.3, gammas, 1.0, kind)
        for method, shape in [("exact", (paths, n, 5)), ("euler", (paths, n))]:
            noise = torch.randn(shape, generator=gen, dtype=F64)
            noise0 = torch.randn(paths, 5, generator=gen, dtype=F64)
            fft = fbm_module._ma_paths_uniform(w, gammas, 1 / n, n, kind, method, noise, noise0)
            steps = torch.full((n,), 1 / n, dtype=F64)
            loop = fbm_module._ma_paths_loop(w, gammas, steps, kind, method, noise, noise0)
            torch.testing.assert_close(fft, loop, rtol=0, atol=1e-10)


def _euler_chain_covariance(w, g, dt, n, kind, idx):
    """Covariance of B_n = c^T Z_n at steps ``idx``, Z = (Y_n, Y_0), Z_{n+1} = F Z_n + (dW 1, 0).

    This is the exact covariance of the Euler-Maruyama recursion (not of the OU system)."""
    k = g.numel()
    f = torch.cat([1 - g * dt, torch.ones(k, dtype=F64)])
    s = torch.zeros(2 * k, 2 * k, dtype=F64)
    if kind == "I":
        s = (1 / (g.unsqueeze(-1) + g)).repeat(2, 2)
    c = torch.cat([w, -w]) if kind == "I" else torch.cat([w, torch.zeros(k, dtype=F64)])
    noise = torch.zeros(2 * k, 2 * k, dtype=F64)
    noise[:k, :k] = dt
    states = [s]
    for _ in range(n):
        s = f.unsqueeze(-1) * s * f + noise
        states.append(s)
    idx = [int(i) for i in idx]
    cov = torch.zeros(len(idx), len(idx), dtype=F64)
    for a, i in enumerate(idx):
        for b, j in enumerate(idx[: a + 1]):
            cov[a, b] = cov[b, a] = c @ ((f ** (i - j)).unsqueeze(-1) * states[j]) @ c
    return cov


@pytest.mark.parametrize("kind", ["I", "II"])
def test_euler_paths_match_the_euler_chain(kind):
    gammas = geometric_gammas(5, 20.0, dtype=F64)
    n = 50  # gamma_max * dt = 0.4 < 0.5
    w = fbm_weights(0.3, gammas, 1.0, kind)
    gen = torch.Generator().manual_seed(7)
    paths = sample_ma_fbm((1.0, n), 0.3, kind=kind, num_paths=20000, method="euler", generator=gen)
    idx = torch.arange(5, n + 1, 5)
    chain = _euler_chain_covariance(w, gammas, 1 / n, n, kind, idx)
    assert _max_z(paths[:, idx], chain) < Z_MAX
    # The Euler chain is biased relative to the continuous-time approximation by O(dt):
    # 8x more steps shrink the (analytic) covariance error about 8x.
    exact = ma_fbm_covariance((1.0, n), 0.3, gammas, kind)[idx][:, idx]
    fine = _euler_chain_covariance(w, gammas, 1 / (8 * n), 8 * n, kind, 8 * idx)
    coarse_err, fine_err = _rel_err(chain, exact), _rel_err(fine, exact)
    assert 4 < coarse_err / fine_err < 16, (coarse_err, fine_err)


@pytest.mark.parametrize("device", DEVICES)
def test_davies_harte_matches_exact_fbm(device):
    gen = torch.Generator(device=device).manual_seed(99)
    for h in [0.2, 0.8]:
        paths = sample_fbm((2.0, 12), h, 20001, generator=gen, device=device, dtype=F64)
        assert paths.shape == (20001, 13)
        cov = fbm_covariance((2.0, 12), h)
        assert _max_z(paths[:, 1:].cpu(), cov[1:, 1:]) < Z_MAX


def test_ma_fbm_increments_match_exact_fbm_samples():
    # Two-sample check against Davies-Harte paths on a wide grid (covariance error < 1e-3 at
    # H = 0.35): increment variances at lags 1, 4, 16 steps agree within Monte Carlo error.
    # Var of a sample variance of N Gaussians is 2 sigma^4 / N; the difference of two
    # independent estimates has se = sigma^2 sqrt(2/N + 2/N).
    h, n, num = 0.35, 64, 20000
    gen = torch.Generator().manual_seed(3)
    gammas = geometric_gammas(10, 1e3, 1e-3, dtype=F64)
    approx = sample_ma_fbm((1.0, n), h, gammas=gammas, num_paths=num, generator=gen, dtype=F64)
    exact = sample_fbm((1.0, n), h, num, generator=gen, dtype=F64)
    for lag in [1, 4, 16]:
        sigma2 = (lag / n) ** (2 * h)
        va = (approx[:, lag:] - approx[:, :-lag])[:, ::lag].var(0).mean()
        ve = (exact[:, lag:] - exact[:, :-lag])[:, ::lag].var(0).mean()
        # averaging over n/lag correlated increments does not increase the se beyond this
        se = sigma2 * math.sqrt(4 / num)
        assert abs(float(va - ve)) < Z_MAX * se, (lag, float(va), float(ve), sigma2)
        assert abs(float(va) - sigma2) < Z_MAX * se + 2e-3 * sigma2


def test_paths_are_differentiable_in_hurst():
    # Paths are linear in the weights and the noise does not depend on H, so with one seed
    # d(path)/dH is the finite difference of paths sampled with that seed.
    def draw(hurst):
        gen = torch.Generator().manual_seed(5)
        return sample_ma_fbm((1.0, 16), hurst, num_paths=4, generator=gen, dtype=F64)

    hurst = torch.tensor(0.4, dtype=F64, requires_grad=True)
    paths = draw(hurst)
    (grad,) = torch.autograd.grad(paths.sum(), hurst)
    step = 1e-6
    fd = (draw(0.4 + step).sum() - draw(0.4 - step).sum()) / (2 * step)
    assert float(grad) == pytest.approx(float(fd), rel=1e-6)


def test_dtype_device_generator_and_shapes():
    gen = torch.Generator().manual_seed(0)
    a = sample_ma_fbm((1.0, 8), 0.3, num_paths=3, generator=gen)
    assert a.shape == (3, 9) and a.dtype == torch.get_default_dtype()
    assert torch.all(a[:, 0] == 0)
    gen.manual_seed(0)
    b = sample_ma_fbm((1.0, 8), 0.3, num_paths=3, generator=gen)
    assert torch.equal(a, b)
    t = torch.tensor([0.25, 0.5, 1.0], dtype=F64)
    out = sample_ma_fbm(t, torch.tensor(0.7), num_paths=2, dtype=torch.float32)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    assert sample_ma_fbm(t, 0.7, num_paths=2).dtype == F64  # follows times
    assert sample_fbm(t.new_tensor([0.0, 0.5, 1.0]), 0.7, 3).shape == (3, 3)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_hurst_outside_unit_interval(bad):
    gammas = geometric_gammas(3, 20.0)
    with pytest.raises(ValueError, match=r"hurst must lie strictly between 0 and 1"):
        fbm_weights(bad, gammas)
    with pytest.raises(ValueError, match=r"hurst must lie strictly between 0 and 1"):
        sample_ma_fbm((1.0, 10), bad)
    with pytest.raises(ValueError, match=r"hurst must lie strictly between 0 and 1"):
        fbm_covariance((1.0, 10), bad)
    with pytest.raises(ValueError, match=r"hurst must lie strictly between 0 and 1"):
        sample_fbm((1.0, 10), torch.tensor(bad))


def test_too_few_processes():
    with pytest.raises(ValueError, match=r"num_processes \(K\) must be >= 1"):
        geometric_gammas(0)
    with pytest.raises(ValueError, match=r"num_processes \(K\) must be >= 1"):
        sample_ma_fbm((1.0, 10), 0.3, num_processes=0)
    with pytest.raises(ValueError, match=r"needs K >= 1"):
        fbm_weights(0.3, torch.tensor([]))
    with pytest.raises(ValueError, match=r"gammas must be distinct"):
        fbm_weights(0.3, [1.0, 1.0])
    with pytest.raises(ValueError, match=r"gammas must be finite and > 0"):
        fbm_weights(0.3, [1.0, -2.0])


def test_unstable_euler_step():
    # gamma_max = 20 with 30 steps on [0, 1]: gamma_max * dt = 0.67
    with pytest.raises(ValueError, match=r"gamma_max \* dt = 0.667 >= 0.5.*more than 40"):
        sample_ma_fbm((1.0, 30), 0.3, method="euler")
    sample_ma_fbm((1.0, 30), 0.3, method="exact")  # the exact step has no such limit
    with pytest.raises(ValueError, match=r"gamma_max \* dt"):
        sample_ma_fbm(torch.tensor([0.01, 0.5]), 0.3, method="euler")


def test_times_outside_the_grid():
    with pytest.raises(ValueError, match=r"observation times outside the grid \[0, horizon\]"):
        sample_ma_fbm(torch.tensor([0.5, 1.5]), 0.3, horizon=1.0)
    with pytest.raises(ValueError, match=r"observation times outside the grid \[0, horizon\]"):
        ma_fbm_covariance(torch.tensor([0.5, 2.0]), 0.3, geometric_gammas(3), horizon=1.0)
    with pytest.raises(ValueError, match=r"times must be finite and >= 0"):
        sample_ma_fbm(torch.tensor([-0.5, 1.0]), 0.3)
    with pytest.raises(ValueError, match=r"strictly increasing"):
        sample_ma_fbm(torch.tensor([0.5, 0.2]), 0.3)
    with pytest.raises(ValueError, match=r"uniform grid"):
        sample_fbm(torch.tensor([0.1, 0.5]), 0.3)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match=r"kind must be 'I' .* or 'II'"):
        fbm_weights(0.3, [1.0, 2.0], kind="III")
    assert torch.equal(
        fbm_weights(0.3, [1.0, 2.0], kind="type ii"), fbm_weights(0.3, [1, 2], 1, "II")
    )
    with pytest.raises(ValueError, match=r"method must be one of"):
        sample_ma_fbm((1.0, 10), 0.3, method="milstein")
    with pytest.raises(ValueError, match=r"num_paths must be an int >= 1"):
        sample_ma_fbm((1.0, 10), 0.3, num_paths=0)
    with pytest.raises(ValueError, match=r"horizon must be a finite number > 0"):
        fbm_weights(0.3, [1.0, 2.0], horizon=0.0)
    with pytest.raises(ValueError, match=r"weights must be a tensor of shape \(3,\)"):
        sample_ma_fbm((1.0, 10), 0.3, num_processes=3, weights=torch.ones(2))
