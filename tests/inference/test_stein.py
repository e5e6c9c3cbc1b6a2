"""Tests of the Stein variational engines ``SVGD``, ``SVNG``, ``MSVGD`` and ``SVMD``.

- Exact identities (float64, deterministic): MSVGD with the Euclidean map is SVGD; SVMD keeping
  every eigenpair with no jitter is SVGD; MSVGD's and SVMD's directions for entropic maps equal
  brute-force formulas built here from autograd (score, Hessian of psi, its divergence).
- Moments, following Pyro's own SVGD tests (tests/infer/test_svgd.py: 200 particles, means
  within 0.01 and sds within 0.02-0.05 on unit-scale targets). SVGD particles are not iid and
  their fixed point is nearly deterministic (seeds 0-3 agree to ~1e-4 here), so the tolerances
  bound the finite-particle bias of the fixed point (SVGD under-disperses), not Monte Carlo noise;
  each test states the measured error next to its tolerance. Seeds 0-4 all pass.
- The sparse Dirichlet of Shi, Liu & Mackey (2022): mirrored samplers beat SVGD through the
  stick-breaking bijection in energy distance to exact draws.
- Result layout, checkpoint/resume, minibatches, input validation, devices.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import scipy.linalg
import torch
from helpers.models import lower_cholesky_model
from pyro.distributions import constraints
from torch.autograd.functional import hessian, jacobian
from torch.distributions import transform_to

from pplx.inference import (
    MSVGD,
    SVGD,
    SVMD,
    SVNG,
    BoxEntropic,
    IMQKernel,
    ModelError,
    OrthantEntropic,
    PreconditionedKernel,
    RBFKernel,
    SimplexEntropic,
    SteinState,
    load_checkpoint,
)
from pplx.metrics import energy_distance

D64 = torch.float64
ENGINES = [SVGD, SVNG, MSVGD, SVMD]
ENGINE_IDS = [cls.__name__ for cls in ENGINES]


def t(value) -> torch.Tensor:
    return torch.tensor(value, dtype=D64)


# =========================================================================== exact identities

LOC2 = t([0.5, -1.0])
COV2 = t([[1.0, 0.6], [0.6, 2.0]])


def gaussian2d():
    pyro.sample("x", dist.MultivariateNormal(LOC2, COV2))


def spread_particles(n: int = 10, dim: int = 2, seed: int = 0) -> torch.Tensor:
    return 2.0 * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=D64)


def test_msvgd_with_euclidean_map_equals_svgd():
    z = spread_particles()
    svgd = SVGD(gaussian2d, kernel=IMQKernel(), num_particles=10)
    msvgd = MSVGD(gaussian2d, kernel=IMQKernel(), num_particles=10)
    potential_m = msvgd.potential()
    assert potential_m.blocks[0].transform.mirror.__class__.__name__ == "Euclidean"
    eta = msvgd.to_state_coordinates(potential_m, z)
    torch.testing.assert_close(eta, z, rtol=0, atol=0)
    phi_s, h_s = svgd.direction(svgd.potential(), z, 0)
    phi_m, h_m = msvgd.direction(potential_m, eta, 0)
    torch.testing.assert_close(h_m, h_s, rtol=1e-14, atol=0)
    torch.testing.assert_close(phi_m, phi_s, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel", [IMQKernel(), RBFKernel(bandwidth=3.0)], ids=["imq", "rbf"])
def test_svmd_with_all_eigenpairs_and_no_jitter_equals_svgd(kernel):
    z = spread_particles()
    gram, _, _ = kernel.gram(z)
    # A well-conditioned Gram matrix: SVMD divides by its eigenvalues, so rounding errors grow
    # like cond(G) * eps (~1e-11 here), well inside the 1e-6 tolerance.
    assert torch.linalg.cond(gram) < 1e5
    svgd = SVGD(gaussian2d, kernel=kernel, num_particles=10)
    svmd = SVMD(gaussian2d, kernel=kernel, num_particles=10, eigen_threshold=1.0, jitter=0.0)
    phi_s, _ = svgd.direction(svgd.potential(), z, 0)
    phi_v, _ = svmd.direction(svmd.potential(), z, 0)
    torch.testing.assert_close(phi_v, phi_s, rtol=1e-6, atol=1e-9)


def test_svng_direction_is_the_fisher_preconditioned_direction():
    z = spread_particles()
    svng = SVNG(gaussian2d, num_particles=10)
    assert isinstance(svng.kernel, PreconditionedKernel) and svng.kernel.metric == "fisher"
    potential = svng.potential()
    _, score = potential.value_and_grad(z)
    expected, _ = PreconditionedKernel(RBFKernel(), metric="fisher").stein_direction(z, score)
    phi, _ = svng.direction(potential, z, 0)
    torch.testing.assert_close(phi, expected, rtol=1e-12, atol=1e-14)
    # Q^{-1}-scaled: for this Gaussian target the Fisher metric is about COV2^{-1}, so SVNG's
    # direction is not SVGD's
    svgd_phi, _ = SVGD(gaussian2d, num_particles=10).direction(potential, z, 0)
    assert not torch.allclose(phi, svgd_phi, rtol=0.05)


# --------------------------------------------------------------------------- entropic maps

DIR_ALPHA = t([2.0, 3.0, 4.0])


def constrained_model():
    """One site for each entropic map: simplex (K = 3), orthant, box."""
    pyro.sample("p", dist.Dirichlet(DIR_ALPHA))
    pyro.sample("s", dist.LogNormal(t(0.0), t(0.5)))
    pyro.sample("u", dist.Uniform(t(-1.0), t(3.0)))


def constrained_theta(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Primal coordinates (p_1, p_2, s, u) of n prior draws."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    p = dist.Dirichlet(DIR_ALPHA).sample((n,))
    s = torch.exp(0.5 * torch.randn(n, generator=g, dtype=D64))
    u = -1.0 + 4.0 * torch.rand(n, generator=g, dtype=D64)
    return torch.cat([p[:, :2], s[:, None], u[:, None]], -1)


def log_target(theta: torch.Tensor) -> torch.Tensor:
    p = torch.cat([theta[:2], 1 - theta[:2].sum(-1, keepdim=True)])
    return (
        dist.Dirichlet(DIR_ALPHA).log_prob(p)
        + dist.LogNormal(t(0.0), t(0.5)).log_prob(theta[2])
        + dist.Uniform(t(-1.0), t(3.0)).log_prob(theta[3])
    )


def psi(theta: torch.Tensor) -> torch.Tensor:
    """The sum of the three entropic potentials, written out independently of the library."""
    p = torch.cat([theta[:2], 1 - theta[:2].sum(-1, keepdim=True)])
    s = theta[2]
    u = (theta[3] + 1.0) / 4.0
    return (p * p.log()).sum() + (s * s.log() - s) + 4.0 * (u * u.log() + (1 - u) * (1 - u).log())


def mirror_pieces(theta: torch.Tensor):
    """Per particle: score, H, H^{-1}, div H^{-1} (all by autograd)."""
    score, h, h_inv, div = [], [], [], []
    for th in theta:
        x = th.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(log_target(x), x)
        hh = hessian(psi, th)

        def inv_hess(v: torch.Tensor) -> torch.Tensor:
            return torch.linalg.inv(hessian(psi, v, create_graph=True))

        jac = jacobian(inv_hess, th)  # [a, b, c] = d_c (H^{-1})_{ab}
        score.append(g)
        h.append(hh)
        h_inv.append(torch.linalg.inv(hh))
        div.append(torch.einsum("aba->b", jac))
    return torch.stack(score), torch.stack(h), torch.stack(h_inv), torch.stack(div)


def imq(x: torch.Tensor, y: torch.Tensor, h: float) -> torch.Tensor:
    return (1.0 + ((x - y) ** 2).sum() / h) ** -0.5


def kernel_pieces(theta: torch.Tensor, h: float):
    """Gram matrix G[i, j] = k(theta_i, theta_j) and grad[i, j] = grad_{theta_i} k, by autograd."""
    n = theta.shape[0]
    gram = torch.zeros(n, n, dtype=D64)
    grad = torch.zeros(n, n, theta.shape[1], dtype=D64)
    for i in range(n):
        for j in range(n):
            x = theta[i].clone().requires_grad_(True)
            value = imq(x, theta[j], h)
            (grad[i, j],) = torch.autograd.grad(value, x)
            gram[i, j] = value.detach()
    return gram, grad


BANDWIDTH = 0.3


def test_msvgd_direction_equals_brute_force_for_entropic_maps():
    theta = constrained_theta()
    n = theta.shape[0]
    engine = MSVGD(constrained_model, kernel=IMQKernel(bandwidth=BANDWIDTH), num_particles=n)
    potential = engine.potential()
    assert [type(b.transform.mirror) for b in potential.blocks] == [
        SimplexEntropic,
        OrthantEntropic,
        BoxEntropic,
    ]
    eta = engine.to_state_coordinates(potential, theta)
    torch.testing.assert_close(engine.to_potential_coordinates(potential, eta), theta)
    phi, _ = engine.direction(potential, eta, 0)

    score, _, h_inv, div = mirror_pieces(theta)
    gram, grad = kernel_pieces(theta, BANDWIDTH)
    # phi_j = (1/n) sum_i [k_ij (H_i^{-1} score_i + div_i) + H_i^{-1} grad_{theta_i} k_ij]
    w = torch.einsum("iab,ib->ia", h_inv, score) + div
    expected = torch.zeros_like(theta)
    for j in range(n):
        for i in range(n):
            expected[j] += gram[i, j] * w[i] + h_inv[i] @ grad[i, j]
    expected /= n
    torch.testing.assert_close(phi, expected, rtol=1e-8, atol=1e-10)


def test_svmd_direction_with_all_eigenpairs_equals_closed_form():
    """Full-rank SVMD: phi = (1/n) G^{1/2} [H_m (G^{1/2} W + G^{-1/2} R)_m]_m.

    With every eigenpair kept, the Nystrom square-root kernel at the particles is
    sqrt(n) G^{1/2}, and k_psi(theta_k, theta_l) = (1/n) sum_m (sqrt(n) G^{1/2})_{km} H(theta_m)
    (sqrt(n) G^{1/2})_{ml}. Its Stein direction, with the eigenfunction gradients summed over
    all eigenpairs, collapses to the matrix formula above, where W_l = H_l^{-1} score_l + div_l
    and R_m = sum_l H_l^{-1} grad_{theta_l} k(theta_l, theta_m). G^{1/2} comes from scipy here.
    """
    theta = constrained_theta()
    n = theta.shape[0]
    engine = SVMD(
        constrained_model,
        kernel=IMQKernel(bandwidth=BANDWIDTH),
        num_particles=n,
        eigen_threshold=1.0,
        jitter=0.0,
    )
    potential = engine.potential()
    phi, _ = engine.direction(potential, engine.to_state_coordinates(potential, theta), 0)

    score, h, h_inv, div = mirror_pieces(theta)
    gram, grad = kernel_pieces(theta, BANDWIDTH)
    assert torch.linalg.cond(gram) < 1e4
    root = torch.from_numpy(scipy.linalg.sqrtm(gram.numpy()).real)
    root_inv = torch.linalg.inv(root)
    w = torch.einsum("iab,ib->ia", h_inv, score) + div
    r = torch.einsum("lab,lmb->ma", h_inv, grad)
    inner = root @ w + root_inv @ r
    expected = root @ torch.einsum("mab,mb->ma", h, inner) / n
    torch.testing.assert_close(phi, expected, rtol=1e-6, atol=1e-8)


def test_svmd_truncated_spectrum_runs_and_differs_from_full():
    theta = constrained_theta()
    n = theta.shape[0]
    kernel = IMQKernel(bandwidth=BANDWIDTH)
    full = SVMD(constrained_model, kernel=kernel, num_particles=n, eigen_threshold=1.0, jitter=0)
    low = SVMD(constrained_model, kernel=kernel, num_particles=n, eigen_threshold=0.5)
    p_full, p_low = full.potential(), low.potential()
    phi_full, _ = full.direction(p_full, full.to_state_coordinates(p_full, theta), 0)
    phi_low, _ = low.direction(p_low, low.to_state_coordinates(p_low, theta), 0)
    assert torch.isfinite(phi_low).all()
    assert not torch.allclose(phi_low, phi_full, rtol=1e-3)


# =========================================================================== moments

NUM_PARTICLES = 200
NUM_STEPS = 1000

# Tolerances, in units of the target's standard deviation sigma (Pyro's tests use absolute 0.01
# for means and 0.02-0.05 for sds on targets with sigma ~ 1):
MEAN_TOL = 0.02  # |mean - mu| <= 0.02 sigma
SD_TOL = 0.05  # |sd - sigma| <= 0.05 sigma


def assert_moments(x: torch.Tensor, target) -> None:
    mean, sd = float(target.mean), float(target.stddev)
    assert abs(float(x.mean()) - mean) <= MEAN_TOL * sd, (float(x.mean()), mean)
    assert abs(float(x.std()) - sd) <= SD_TOL * sd, (float(x.std()), sd)


# Measured errors (mean / sd, both relative to sigma) after 1000 steps with the default seed;
# seeds 1-4 also pass:
#   normal      SVGD -0.0001 / -0.008
#   lognormal   SVGD -0.006 / -0.025    MSVGD -0.007 / -0.026
#   beta        SVGD +0.001 / -0.005    MSVGD -0.0003 / +0.002
TARGETS = {
    "normal": lambda: dist.Normal(t(1.0), t(2.0)),
    "lognormal": lambda: dist.LogNormal(t(0.0), t(0.5)),
    "beta": lambda: dist.Beta(t(2.0), t(5.0)),
}


def fit_1d(cls, target, **kwargs):
    def model():
        pyro.sample("x", target)

    engine = cls(model, num_particles=NUM_PARTICLES, optim_args={"lr": 0.05}, **kwargs)
    return engine, engine.run(num_steps=NUM_STEPS)


@pytest.mark.parametrize("name", ["normal", "lognormal", "beta"])
def test_svgd_moments(name):
    target = TARGETS[name]()
    _, result = fit_1d(SVGD, target)  # default RBF kernel; moves through exp / sigmoid bijections
    assert_moments(result.get_samples()["x"], target)


@pytest.mark.parametrize("name, mirror", [("lognormal", OrthantEntropic), ("beta", BoxEntropic)])
def test_msvgd_moments(name, mirror):
    target = TARGETS[name]()
    engine, result = fit_1d(MSVGD, target)  # default IMQ kernel
    assert isinstance(engine.kernel, IMQKernel)
    assert type(engine.potential().blocks[0].transform.mirror) is mirror
    assert_moments(result.get_samples()["x"], target)


COUNTS = t([2, 4, 3, 1, 5, 3, 2, 4, 3, 3, 6, 2, 1, 3, 4, 2, 3, 5, 2, 3])
GAMMA_A, GAMMA_B = 2.0, 1.0


def gamma_poisson(counts):
    rate = pyro.sample("rate", dist.Gamma(t(GAMMA_A), t(GAMMA_B)))
    with pyro.plate("data", len(counts)):
        pyro.sample("obs", dist.Poisson(rate), obs=counts)


GAMMA_POSTERIOR = dist.Gamma(GAMMA_A + COUNTS.sum(), GAMMA_B + len(COUNTS))


def test_svgd_gamma_poisson_posterior():
    # lr 0.1: the posterior (sd 0.37 around 3.0) is 10x narrower than the Gamma(2, 1) prior the
    # particles start from; Adagrad at lr 0.05 had not contracted them after 1000 steps.
    # Measured: mean +0.0003 sigma, sd -0.8%.
    engine = SVGD(gamma_poisson, num_particles=NUM_PARTICLES, optim_args={"lr": 0.1})
    result = engine.run(COUNTS, num_steps=NUM_STEPS)
    assert_moments(result.get_samples()["rate"], GAMMA_POSTERIOR)


def test_msvgd_gamma_poisson_posterior():
    # lr 0.5: measured with the fix applied to a scratch copy (greater_than_eq accepted by
    # mirror_map_for and OrthantEntropic.check): mean -0.0004 sigma, sd -0.01%, converged (at
    # lr 0.1 the particles were still contracting after 1000 steps: mean -0.05 sigma, sd +16%).
    engine = MSVGD(gamma_poisson, num_particles=NUM_PARTICLES, optim_args={"lr": 0.5})
    result = engine.run(COUNTS, num_steps=NUM_STEPS)
    assert_moments(result.get_samples()["rate"], GAMMA_POSTERIOR)


MVN_LOC = t([1.0, -1.0])
MVN_COV = t([[1.0, 1.6], [1.6, 4.0]])  # sds 1 and 2, correlation 0.8


def correlated_gaussian():
    pyro.sample("x", dist.MultivariateNormal(MVN_LOC, MVN_COV))


@pytest.mark.parametrize("cls", [SVGD, SVNG], ids=["SVGD", "SVNG"])
def test_correlated_gaussian_covariance(cls):
    result = cls(correlated_gaussian, num_particles=NUM_PARTICLES, optim_args={"lr": 0.05}).run(
        num_steps=NUM_STEPS
    )
    x = result.get_samples()["x"]
    sd = MVN_COV.diagonal().sqrt()
    cov = torch.cov(x.T)
    # Measured: means within 0.002 sigma; sds -1.7% (SVGD) and -2.8% (SVNG); correlation 0.799;
    # covariance entries / (sigma_i sigma_j) within -0.035 (SVGD) and -0.056 (SVNG): SVGD
    # under-disperses, and a 5% error in an sd is a ~10% error in a variance.
    assert ((x.mean(0) - MVN_LOC).abs() <= MEAN_TOL * sd).all()
    assert ((cov.diagonal().sqrt() - sd).abs() <= SD_TOL * sd).all()
    corr = cov[0, 1] / cov.diagonal().prod().sqrt()
    assert abs(float(corr) - 0.8) < 0.01
    assert ((cov - MVN_COV).abs() <= 2 * SD_TOL * torch.outer(sd, sd)).all()


# =========================================================================== sparse Dirichlet

SPARSE_ALPHA = 0.1 * torch.ones(20, dtype=D64)
SPARSE_ALPHA[:3] += t([90.0, 5.0, 5.0])


def sparse_dirichlet():
    pyro.sample("p", dist.Dirichlet(SPARSE_ALPHA))


def test_sparse_dirichlet_mirrored_samplers_beat_svgd():
    """Shi, Liu & Mackey (2022), section 5.1: a Dirichlet on the 20-simplex with most mass near
    a face. SVGD through the stick-breaking bijection piles particles against the boundary;
    MSVGD and SVMD move in the mirror map's dual space and do not.

    Same kernel (RBF, median heuristic), optimizer (Adagrad, lr 0.5), 500 steps and initial
    particles for all three. Energy distance to 1000 exact draws (U-statistic): 50 iid exact
    draws score 0.0001 +- 0.0006 (99% quantile 0.0024, 300 replications); measured over seeds
    0-2: SVGD 0.019-0.020, MSVGD 0.0002-0.0004, SVMD 0.0013-0.0074.
    """
    init = dist.Dirichlet(5 * torch.ones(20, dtype=D64)).sample((50,))
    exact = dist.Dirichlet(SPARSE_ALPHA).sample((1000,))
    scores = {}
    for cls in (SVGD, MSVGD, SVMD):
        engine = cls(
            sparse_dirichlet,
            kernel=RBFKernel(),
            num_particles=50,
            optim_args={"lr": 0.5},
            init={"p": init},
        )
        p = engine.run(num_steps=500).get_samples()["p"]
        assert p.shape == (50, 20) and (p > 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(50, dtype=D64))
        scores[cls.__name__] = float(energy_distance(p, exact))
    # SVGD's bias is far outside the iid noise (0.0006 sd), so the comparison is meaningful
    assert scores["SVGD"] > 0.01, scores
    assert scores["MSVGD"] < scores["SVGD"] / 2, scores
    assert scores["SVMD"] < scores["SVGD"] / 2, scores


# =========================================================================== results


def mixed_model():
    """Real vector, positive, interval and simplex sites."""
    pyro.sample("loc", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
    pyro.sample("scale", dist.LogNormal(t(0.0), t(1.0)))
    pyro.sample("frac", dist.Beta(t(2.0), t(2.0)))
    pyro.sample("probs", dist.Dirichlet(t([1.0, 2.0, 3.0])))


@pytest.mark.parametrize("cls", ENGINES, ids=ENGINE_IDS)
def test_result_layout(cls):
    num, steps = 6, 5
    result = cls(mixed_model, num_particles=num).run(num_steps=steps)
    samples = result.get_samples()
    assert {k: tuple(v.shape) for k, v in samples.items()} == {
        "loc": (num, 2),
        "scale": (num,),
        "frac": (num,),
        "probs": (num, 3),
    }
    grouped = result.get_samples(group_by_chain=True)
    assert {k: tuple(v.shape) for k, v in grouped.items()} == {
        "loc": (1, num, 2),
        "scale": (1, num),
        "frac": (1, num),
        "probs": (1, num, 3),
    }
    assert set(result.sample_stats) == {"step_norm", "bandwidth"}
    for value in result.sample_stats.values():
        assert value.shape == (1, num)
    assert (result.sample_stats["step_norm"] >= 0).all()
    assert set(result.trace) == {"bandwidth", "step_norm"}
    for curve in result.trace.values():
        assert curve.shape == (steps,)
    torch.testing.assert_close(
        result.sample_stats["bandwidth"][0], result.trace["bandwidth"][-1].expand(num)
    )
    assert result.info["num_steps"] == steps and result.info["num_particles"] == num
    assert isinstance(result.state, SteinState) and result.state.step == steps
    # supports
    assert (samples["scale"] > 0).all()
    assert ((samples["frac"] > 0) & (samples["frac"] < 1)).all()
    assert (samples["probs"] > 0).all()
    torch.testing.assert_close(samples["probs"].sum(-1), torch.ones(num, dtype=D64))
    # ArviZ
    data = result.to_arviz()
    posterior = data["posterior"]
    assert posterior["probs"].shape == (1, num, 3)
    assert posterior.attrs["engine"] == cls.default_name
    assert data["sample_stats"]["step_norm"].shape == (1, num)


def test_callback_sees_every_step():
    seen = []
    SVGD(mixed_model, num_particles=4).run(num_steps=3, callback=lambda s: seen.append(s.step))
    assert seen == [1, 2, 3]


def test_continuing_from_a_state_equals_one_long_run():
    pyro.set_rng_seed(0)
    long = SVGD(mixed_model, num_particles=5).run(num_steps=10)
    pyro.set_rng_seed(0)
    engine = SVGD(mixed_model, num_particles=5)
    first = engine.run(num_steps=4)
    second = engine.run(num_steps=10, state=first.state)
    for name, value in long.get_samples().items():
        assert torch.equal(second.get_samples()[name], value)
    assert torch.equal(second.trace["step_norm"], long.trace["step_norm"])


def test_jit_engine_matches_eager():
    pyro.set_rng_seed(0)
    eager = SVGD(mixed_model, num_particles=8).run(num_steps=20)
    pyro.set_rng_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jitted = SVGD(mixed_model, num_particles=8, jit=True).run(num_steps=20)
    for name, value in eager.get_samples().items():
        torch.testing.assert_close(jitted.get_samples()[name], value, rtol=1e-10, atol=1e-12)


# =========================================================================== checkpoints

DATA = dist.Poisson(3.0).sample((30,)).to(D64)  # drawn at import; the seed does not matter


def subsampled_rate_model(counts):
    # LogNormal prior (support positive) so that every engine, mirrored ones included, fits it.
    rate = pyro.sample("rate", dist.LogNormal(t(0.0), t(1.0)))
    with pyro.plate("data", len(counts), subsample_size=6) as idx:
        pyro.sample("obs", dist.Poisson(rate), obs=counts[idx])


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("cls", ENGINES, ids=ENGINE_IDS)
def test_interrupted_and_resumed_run_equals_uninterrupted(cls, tmp_path):
    # The model draws a minibatch per step, so equality also needs the random state restored.
    def make(path):
        return cls(subsampled_rate_model, num_particles=5, checkpoint=path, checkpoint_every=4)

    pyro.set_rng_seed(0)
    full = make(tmp_path / "full.ckpt").run(DATA, num_steps=12)

    def stop_at_7(state):
        if state.step == 7:
            raise Interrupt

    pyro.set_rng_seed(0)
    path = tmp_path / "cut.ckpt"
    with pytest.raises(Interrupt):
        make(path).run(DATA, num_steps=12, callback=stop_at_7)
    assert load_checkpoint(path, cls.default_name)["step"] == 4  # last multiple of 4

    pyro.set_rng_seed(123)  # resuming must not depend on the current random state
    resumed = make(path).run(DATA, num_steps=12, resume=True)
    assert resumed.state.step == 12
    for name, value in full.get_samples().items():
        assert torch.equal(resumed.get_samples()[name], value)
    for name, curve in full.trace.items():
        assert torch.equal(resumed.trace[name], curve)
    assert load_checkpoint(path, cls.default_name)["step"] == 12


def test_jit_engine_with_minibatches_matches_eager():
    # jit=True compiles the log density with the minibatch indices as inputs, so a compiled run
    # sees the same fresh minibatches as an eager one from the same random state.
    pyro.set_rng_seed(0)
    eager = SVGD(subsampled_rate_model, num_particles=6).run(DATA, num_steps=20)
    pyro.set_rng_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jitted = SVGD(subsampled_rate_model, num_particles=6, jit=True).run(DATA, num_steps=20)
    rate_e, rate_j = eager.get_samples()["rate"], jitted.get_samples()["rate"]
    torch.testing.assert_close(rate_j, rate_e, rtol=1e-10, atol=1e-12)


def test_resume_without_a_checkpoint_file_starts_fresh(tmp_path):
    pyro.set_rng_seed(0)
    fresh = SVGD(mixed_model, num_particles=4).run(num_steps=3)
    pyro.set_rng_seed(0)
    engine = SVGD(mixed_model, num_particles=4, checkpoint=tmp_path / "none.ckpt")
    resumed = engine.run(num_steps=3, resume=True)
    assert torch.equal(resumed.get_samples()["loc"], fresh.get_samples()["loc"])
    assert (tmp_path / "none.ckpt").exists()


def test_checkpoint_of_another_engine_raises(tmp_path):
    path = tmp_path / "svgd.ckpt"
    SVGD(mixed_model, num_particles=4, checkpoint=path).run(num_steps=2)
    with pytest.raises(ValueError, match="written by engine 'svgd', not 'msvgd'"):
        MSVGD(mixed_model, num_particles=4, checkpoint=path).run(num_steps=4, resume=True)


def test_checkpoint_with_other_particle_count_raises(tmp_path):
    path = tmp_path / "svgd.ckpt"
    SVGD(mixed_model, num_particles=4, checkpoint=path).run(num_steps=2)
    with pytest.raises(ValueError, match=r"holds particles of shape \(4, 6\).*\(5, 6\)"):
        SVGD(mixed_model, num_particles=5, checkpoint=path).run(num_steps=4, resume=True)


# =========================================================================== minibatches

N_REG, B_REG, SIGMA_REG = 200, 20, 1.0
_g = torch.Generator().manual_seed(123)
X_REG = torch.randn(N_REG, 2, generator=_g, dtype=D64)
Y_REG = X_REG @ t([1.0, -0.5]) + SIGMA_REG * torch.randn(N_REG, generator=_g, dtype=D64)


def minibatch_regression(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
    with pyro.plate("data", len(y), subsample_size=B_REG) as idx:
        # w has shape (P, 1, 2) inside the particle plate: elementwise product, not x @ w
        pyro.sample("y", dist.Normal((x[idx] * w).sum(-1), SIGMA_REG), obs=y[idx])


def test_minibatch_regression_lands_near_the_full_data_posterior():
    # Conjugate posterior of the full data: N(m, S), S = (I + X^T X / s^2)^{-1}.
    post_cov = torch.linalg.inv(torch.eye(2, dtype=D64) + X_REG.T @ X_REG / SIGMA_REG**2)
    post_mean = post_cov @ X_REG.T @ Y_REG / SIGMA_REG**2
    post_sd = post_cov.diagonal().sqrt()  # ~0.074
    engine = SVGD(minibatch_regression, num_particles=50, optim_args={"lr": 0.5})
    w = engine.run(X_REG, Y_REG, num_steps=500).get_samples()["w"]
    # Each step's minibatch gradient (N/B = 10 times a batch of 20) moves all particles
    # together, so the cloud's centre keeps jittering by about a posterior sd (measured
    # 0.1-1.0 sd over seeds 0-2; the full-data run is within 0.03 sd). 3 sds is still 5x closer
    # than the prior mean 0 is to w_1 = 1.01 (14 sds away).
    assert ((w.mean(0) - post_mean).abs() < 3 * post_sd).all(), (w.mean(0), post_mean)
    # Without the N/B scaling the spread would be that of a 20-point posterior, ~3x wider.
    # Measured ratios 0.87-0.96 (SVGD under-disperses, and 50 particles); bounds 0.6-1.5.
    ratio = w.std(0) / post_sd
    assert ((ratio > 0.6) & (ratio < 1.5)).all(), ratio


# =========================================================================== errors


def discrete_model():
    pyro.sample("mu", dist.Normal(t(0.0), 1.0))
    pyro.sample("k", dist.Bernoulli(t(0.3)))


@pytest.mark.parametrize("cls", ENGINES, ids=ENGINE_IDS)
def test_discrete_latent_raises_naming_the_site(cls):
    with pytest.raises(ModelError, match=r"\['k'\] are discrete"):
        cls(discrete_model, num_particles=4).run(num_steps=1)


@pytest.mark.parametrize("cls", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("num", [1, 0, -3, 2.5])
def test_num_particles_below_two_raises(cls, num):
    with pytest.raises(ValueError, match=r"num_particles must be an integer >= 2"):
        cls(gaussian2d, num_particles=num)


def positive_model():
    pyro.sample("x", dist.LogNormal(t(0.0), t(1.0)))


@pytest.mark.parametrize("cls", [MSVGD, SVMD], ids=["MSVGD", "SVMD"])
def test_mirror_map_not_fitting_the_support_raises(cls):
    engine = cls(positive_model, num_particles=4, mirror_maps={"x": SimplexEntropic()})
    with pytest.raises(ModelError, match=r"site 'x' has support .*SimplexEntropic"):
        engine.run(num_steps=1)


def lkj_model():
    pyro.sample("corr", dist.LKJCholesky(3, t(1.0)))


@pytest.mark.parametrize("cls", [MSVGD, SVMD], ids=["MSVGD", "SVMD"])
@pytest.mark.parametrize(
    "model, site", [(lower_cholesky_model, "scale_tril"), (lkj_model, "corr")]
)
def test_site_without_mirror_map_raises_naming_it(cls, model, site):
    with pytest.raises(ModelError, match=rf"no mirror map for site '{site}'"):
        cls(model, num_particles=4).run(num_steps=1)


def non_vectorizable_model():
    z = pyro.sample("z", dist.Normal(t(0.0), 1.0))
    pyro.sample("y", dist.Normal(float(z), 1.0), obs=t(0.5))


@pytest.mark.parametrize("cls", ENGINES, ids=ENGINE_IDS)
def test_non_vectorizable_model_raises(cls):
    with pytest.raises(ModelError, match="does not broadcast over particles"):
        cls(non_vectorizable_model, num_particles=4).run(num_steps=1)


def test_mirror_maps_naming_a_missing_site_raise():
    engine = MSVGD(positive_model, num_particles=4, mirror_maps={"q": OrthantEntropic()})
    with pytest.raises(
        ModelError, match=r"mirror_maps names site\(s\) \[.q.\] that are not latent"
    ):
        engine.run(num_steps=1)


def test_msvgd_refuses_transforms():
    with pytest.raises(ValueError, match="use mirror_maps=, not transforms="):
        MSVGD(positive_model, transforms={"x": transform_to(constraints.positive)})


@pytest.mark.parametrize("cls", ENGINES, ids=ENGINE_IDS)
def test_init_tensor_of_wrong_shape_raises(cls):
    engine = cls(mixed_model, num_particles=4, init=torch.zeros(3, 6, dtype=D64))
    with pytest.raises(
        ValueError, match=r"initial particles must have shape \(4, 6\), got \(3, 6\)"
    ):
        engine.run(num_steps=1)


def test_init_dict_with_wrong_particle_count_raises():
    init = {"x": torch.ones(3, dtype=D64)}
    with pytest.raises(ValueError, match=r"shape \(4, 1\), got \(3, 1\)"):
        MSVGD(positive_model, num_particles=4, init=init).run(num_steps=1)


def test_invalid_init_strategy_raises():
    with pytest.raises(ValueError, match="init must be 'prior' or 'uniform'"):
        SVGD(positive_model, num_particles=4, init="zeros").run(num_steps=1)


def test_other_invalid_arguments_raise():
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        SVGD(positive_model, checkpoint_every=0)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        SVGD(positive_model, num_particles=4).run(num_steps=-1)
    for threshold in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"eigen_threshold must be in \(0, 1\]"):
            SVMD(positive_model, eigen_threshold=threshold)


def test_nonfinite_direction_raises():
    # Plain SGD with an absurd step size multiplies the particles by about -1e6 per step; after
    # ~26 steps their squared distances overflow and the kernel gives NaN.
    def model():
        pyro.sample("x", dist.Normal(t(0.0), 1.0))

    engine = SVGD(model, num_particles=4, optimizer=torch.optim.SGD, optim_args={"lr": 1e6})
    with pytest.raises(FloatingPointError, match="non-finite at step"):
        engine.run(num_steps=100)


# --------------------------------------------------------------------------- known bugs


def deterministic_model():
    x = pyro.sample("x", dist.LogNormal(t(0.0), t(1.0)))
    pyro.deterministic("twice", 2 * x)


def test_svgd_handles_deterministic_sites():
    result = SVGD(deterministic_model, num_particles=4).run(num_steps=2)
    assert set(result.samples) == {"x"}


@pytest.mark.parametrize("cls", [MSVGD, SVMD], ids=["MSVGD", "SVMD"])
def test_mirrored_engines_handle_deterministic_sites(cls):
    result = cls(deterministic_model, num_particles=4).run(num_steps=2)
    assert set(result.samples) == {"x"}


@pytest.mark.parametrize("cls", [MSVGD, SVMD], ids=["MSVGD", "SVMD"])
def test_mirrored_uniform_init_lies_inside_the_support(cls):
    engine = cls(positive_model, num_particles=50, init="uniform")
    x = engine.samples(engine.init())["x"]
    assert (x > 1e-6).all(), x.min()
    assert torch.unique(x).numel() == 50


@pytest.mark.parametrize("cls", [MSVGD, SVMD], ids=["MSVGD", "SVMD"])
def test_mirrored_engines_with_a_matrix_kernel_raise_a_clear_error(cls):
    with pytest.raises(ValueError, match="kernel"):
        cls(positive_model, num_particles=4, kernel=PreconditionedKernel()).run(num_steps=1)


def uniform_2_5_model():
    pyro.sample("x", dist.Uniform(t(2.0), t(5.0)))


def test_mirror_map_with_the_wrong_bounds_raises():
    engine = MSVGD(uniform_2_5_model, num_particles=4, mirror_maps={"x": BoxEntropic()})
    with pytest.raises(ModelError, match="'x'"):
        engine.init()


def observed_model(y):
    x = pyro.sample("x", dist.LogNormal(t(0.0), t(1.0)))
    pyro.sample("y", dist.Normal(x, 1.0), obs=y)


def test_mirror_maps_naming_an_observed_site_raise():
    engine = MSVGD(observed_model, num_particles=4, mirror_maps={"y": OrthantEntropic()})
    with pytest.raises(ModelError, match="'y'"):
        engine.run(t(1.0), num_steps=1)


def plated_dirichlet_model():
    with pyro.plate("groups", 3):
        pyro.sample("p", dist.Dirichlet(t([1.0, 2.0, 3.0, 4.0])))


def test_mirrored_plated_dirichlet_runs_or_names_the_site():
    try:
        result = MSVGD(plated_dirichlet_model, num_particles=4).run(num_steps=2)
    except ModelError as error:  # a clear refusal is acceptable ...
        assert "'p'" in str(error)
    else:  # ... and so is support for one simplex per plate entry
        torch.testing.assert_close(result.get_samples()["p"].sum(-1), torch.ones(4, 3, dtype=D64))


# =========================================================================== devices

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def device_model(data):
    loc = pyro.sample("loc", dist.Normal(data.new_zeros(()), 1.0))
    scale = pyro.sample("scale", dist.LogNormal(data.new_zeros(()), 1.0))
    probs = pyro.sample("probs", dist.Dirichlet(data.new_ones(3)))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc + probs[..., 0], scale), obs=data)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ENGINES, ids=ENGINE_IDS)
def test_device_smoke(cls, device, tmp_path):
    data = torch.randn(10, dtype=D64, device=device) + 1.0
    engine = cls(device_model, num_particles=8, checkpoint=tmp_path / "c.ckpt")
    result = engine.run(data, num_steps=5)
    samples = result.get_samples()
    for value in samples.values():
        assert value.device.type == device and torch.isfinite(value).all()
    assert samples["probs"].shape == (8, 3) and (samples["scale"] > 0).all()
    assert result.state.particles.device.type == device
    result.to_arviz()
    resumed = cls(device_model, num_particles=8, checkpoint=tmp_path / "c.ckpt").run(
        data, num_steps=7, resume=True
    )
    assert resumed.state.step == 7
    assert math.isfinite(float(resumed.trace["step_norm"][-1]))
