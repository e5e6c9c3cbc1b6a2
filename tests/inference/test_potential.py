"""Tests of ``pplx.inference.potential.Potential``: a Pyro model's log density over a flat
``(P, D)`` matrix of unconstrained particles.

Checked against quantities computed independently here: the model's log joint from a plain
``poutine.trace`` of one execution per particle, log|det J| of each bijection from an autograd
Jacobian (not from torch's ``log_abs_det_jacobian``), gradients from central finite
differences. Models are float64 so that these agree to rounding error.
"""

from __future__ import annotations

import math
import re
import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from helpers.models import lower_cholesky_model
from pyro.distributions import constraints
from torch.autograd.functional import jacobian
from torch.distributions import biject_to
from torch.distributions.transforms import SoftplusTransform

from pplx.inference import ModelError, Potential

D64 = torch.float64


def t(value) -> torch.Tensor:
    return torch.tensor(value, dtype=D64)


# --------------------------------------------------------------------------- models

Y_OBS = t([0.4, 1.3, 2.2])


def lognormal_model(y):
    """x ~ LogNormal(0.3, 0.8); y_i ~ Normal(x, 1)."""
    x = pyro.sample("x", dist.LogNormal(t(0.3), t(0.8)))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(x, 1.0), obs=y)


def composite_model():
    """One site per kind of support: positive, interval (in a plate), simplex, correlation."""
    a = pyro.sample("a", dist.LogNormal(t(0.0), t(1.0)))
    p = pyro.sample("p", dist.Dirichlet(t([1.5, 2.0, 2.5, 3.0])))
    corr = pyro.sample("corr", dist.LKJCholesky(3, t(2.0)))
    with pyro.plate("pair", 2):
        b = pyro.sample("b", dist.Uniform(t(-1.0), t(3.0)))
        loc = a + b + p[..., 0] + corr[..., 2, 0]
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=t([0.7, -0.2]))


COMPOSITE_BLOCKS = [  # name, site shape, unconstrained shape, offset, size
    ("a", (), (), 0, 1),
    ("p", (4,), (3,), 1, 3),
    ("corr", (3, 3), (3,), 4, 3),
    ("b", (2,), (2,), 7, 2),
]


def log_joint_one(model, values: dict, *args) -> torch.Tensor:
    """log p(x, values) of a single (non-vectorized) execution of the model."""
    trace = poutine.trace(poutine.condition(model, values)).get_trace(*args)
    return trace.log_prob_sum()


def free_coordinates(name: str, value: torch.Tensor) -> torch.Tensor:
    """The coordinates in which each site's log_prob is a Lebesgue density."""
    if name == "p":  # Dirichlet: density of the first K - 1 coordinates
        return value[:-1]
    if name == "corr":  # LKJCholesky: density of the strictly lower triangle
        rows, cols = torch.tril_indices(3, 3, offset=-1)
        return value[rows, cols]
    return value.reshape(-1)


def log_abs_det_by_autograd(name: str, transform, u: torch.Tensor) -> torch.Tensor:
    """log|det d(free coordinates)/du| of one site's bijection, from an autograd Jacobian."""
    jac = jacobian(lambda v: free_coordinates(name, transform(v)), u)
    jac = jac.reshape(jac.shape[0], -1)
    return torch.linalg.slogdet(jac).logabsdet


# --------------------------------------------------------------------------- layout


def test_dim_and_blocks():
    potential = Potential(composite_model)
    assert potential.dim == 9
    assert potential.dtype == D64
    assert potential.plate_nesting == 1
    got = [
        (b.name, tuple(b.info.shape), tuple(b.unconstrained_shape), b.offset, b.size)
        for b in potential.blocks
    ]
    assert got == COMPOSITE_BLOCKS
    for block in potential.blocks:
        expected = type(biject_to(block.info.support))
        assert isinstance(block.transform, expected)


def test_unpack_shapes_and_supports():
    potential = Potential(composite_model)
    z = 1.5 * torch.randn(6, potential.dim, dtype=D64)
    values, log_jac = potential.unpack(z)
    assert log_jac.shape == (6,)
    assert {k: tuple(v.shape) for k, v in values.items()} == {
        "a": (6,),
        "b": (6, 2),
        "p": (6, 4),
        "corr": (6, 3, 3),
    }
    assert (values["a"] > 0).all()
    assert ((values["b"] > -1) & (values["b"] < 3)).all()
    torch.testing.assert_close(values["p"].sum(-1), torch.ones(6, dtype=D64))
    assert constraints.corr_cholesky.check(values["corr"]).all()


def test_pack_unpack_round_trip():
    potential = Potential(composite_model)
    z = torch.randn(5, potential.dim, dtype=D64)
    values, _ = potential.unpack(z)
    torch.testing.assert_close(potential.pack(values), z, rtol=1e-9, atol=1e-10)
    # and from the constrained side, starting at prior draws
    draws = potential.to_samples(potential.init_particles(5))
    again, _ = potential.unpack(potential.pack(draws))
    for name in draws:
        torch.testing.assert_close(again[name], draws[name], rtol=1e-9, atol=1e-10)


def test_to_samples_is_detached():
    potential = Potential(composite_model)
    z = torch.randn(3, potential.dim, dtype=D64, requires_grad=True)
    samples = potential.to_samples(z)
    assert not any(v.requires_grad for v in samples.values())


def test_transforms_override_the_bijection():
    potential = Potential(lognormal_model, (Y_OBS,), transforms={"x": SoftplusTransform()})
    assert isinstance(potential.blocks[0].transform, SoftplusTransform)
    z = torch.linspace(-2, 2, 5, dtype=D64).reshape(5, 1)
    x = torch.nn.functional.softplus(z[:, 0])
    expected = torch.stack(
        [log_joint_one(lognormal_model, {"x": xi}, Y_OBS) for xi in x]
    ) + torch.nn.functional.logsigmoid(z[:, 0])  # d softplus / dz = sigmoid(z)
    torch.testing.assert_close(potential.log_density(z), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- log density


def test_log_density_lognormal_by_hand():
    potential = Potential(lognormal_model, (Y_OBS,))
    z = torch.linspace(-1.5, 1.5, 7, dtype=D64).reshape(7, 1)
    x = z[:, 0].exp()
    # log p(x = exp z) + log p(y | x) + log|dx/dz| with dx/dz = exp z
    log_prior = (
        -((x.log() - 0.3) ** 2) / (2 * 0.8**2) - x.log() - math.log(0.8 * math.sqrt(2 * math.pi))
    )
    log_lik = (-((Y_OBS - x[:, None]) ** 2) / 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    expected = log_prior + log_lik + z[:, 0]
    torch.testing.assert_close(potential.log_density(z), expected, rtol=1e-12, atol=1e-12)


def test_log_density_equals_log_joint_plus_log_det_jacobian():
    potential = Potential(composite_model)
    z = torch.randn(4, potential.dim, dtype=D64)
    values, log_jac = potential.unpack(z)
    got = potential.log_density(z)
    for i in range(4):
        one = {k: v[i] for k, v in values.items()}
        expected_jac = sum(
            log_abs_det_by_autograd(
                b.name,
                b.transform,
                z[i, b.offset : b.offset + b.size].reshape(b.unconstrained_shape),
            )
            for b in potential.blocks
        )
        torch.testing.assert_close(log_jac[i], expected_jac, rtol=1e-9, atol=1e-10)
        expected = log_joint_one(composite_model, one) + expected_jac
        torch.testing.assert_close(got[i], expected, rtol=1e-9, atol=1e-10)


def test_value_and_grad_matches_finite_differences():
    potential = Potential(composite_model)
    z = 0.7 * torch.randn(3, potential.dim, dtype=D64)
    value, grad = potential.value_and_grad(z)
    assert not value.requires_grad and not grad.requires_grad
    torch.testing.assert_close(value, potential.log_density(z))
    eps = 1e-6  # central differences: error O(eps^2) ~ 1e-12 from truncation, ~1e-10 rounding
    fd = torch.zeros_like(z)
    for d in range(potential.dim):
        step = torch.zeros_like(z)
        step[:, d] = eps
        fd[:, d] = (potential.log_density(z + step) - potential.log_density(z - step)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7)


def test_value_and_grad_rows_are_independent():
    # The gradient of particle i must not depend on the other particles (no mixing across the
    # particle dimension): evaluating one row alone gives the same row.
    potential = Potential(composite_model)
    z = torch.randn(5, potential.dim, dtype=D64)
    value, grad = potential.value_and_grad(z)
    for i in range(5):
        v1, g1 = potential.value_and_grad(z[i : i + 1])
        torch.testing.assert_close(v1[0], value[i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g1[0], grad[i], rtol=1e-12, atol=1e-12)


def test_jit_matches_eager():
    eager = Potential(composite_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from Pyro's validation checks
        jitted = Potential(composite_model, jit=True)
        z = torch.randn(6, eager.dim, dtype=D64)
        for zz in (z, z + 0.3, z[:4]):  # same shape again (cached), then a new shape
            v_e, g_e = eager.value_and_grad(zz)
            v_j, g_j = jitted.value_and_grad(zz)
            torch.testing.assert_close(v_j, v_e, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_j, g_e, rtol=1e-12, atol=1e-12)
    assert len(jitted._compiled) == 2  # one compilation per particle count


N_DATA = 40
X_DATA = torch.randn(N_DATA, generator=torch.Generator().manual_seed(3), dtype=D64)


def subsampled_model(data):
    mu = pyro.sample("mu", dist.Normal(t(0.0), t(1.0)))
    with pyro.plate("data", len(data), subsample_size=5) as idx:
        pyro.sample("x", dist.Normal(mu, 1.0), obs=data[idx])


def test_subsampling_plates_are_detected():
    potential = Potential(subsampled_model, (X_DATA,))
    assert potential.subsamples and potential.subsample_plates == {"data": (N_DATA, 5)}

    def full_batch(data):  # subsample_size = size is no minibatch
        mu = pyro.sample("mu", dist.Normal(t(0.0), t(1.0)))
        with pyro.plate("data", len(data), subsample_size=len(data)) as idx:
            pyro.sample("x", dist.Normal(mu, 1.0), obs=data[idx])

    full = Potential(full_batch, (X_DATA,))
    assert not full.subsamples and full.subsample_plates == {}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_minibatch_log_density_is_what_pyro_computes_from_the_same_random_state(jit):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback warning, jit or not
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        potential = Potential(subsampled_model, (X_DATA,), jit=jit)
        z = t([[0.3], [-1.2], [2.0]])
        for seed in (5, 6, 7):  # the compiled function must not freeze the first minibatch
            pyro.set_rng_seed(seed)
            got = potential.log_density(z)
            for i in range(3):
                pyro.set_rng_seed(seed)  # one execution of the model draws its own minibatch
                conditioned = poutine.condition(subsampled_model, {"mu": z[i, 0]})
                expected = poutine.trace(conditioned).get_trace(X_DATA).log_prob_sum()
                torch.testing.assert_close(got[i], expected, rtol=1e-12, atol=1e-12)
    assert len(potential._compiled) == (1 if jit else 0)


def test_jit_with_subsampling_matches_eager_values_and_gradients():
    eager = Potential(subsampled_model, (X_DATA,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jitted = Potential(subsampled_model, (X_DATA,), jit=True)
        z = torch.randn(4, 1, dtype=D64)
        for seed in range(3):
            pyro.set_rng_seed(seed)
            v_e, g_e = eager.value_and_grad(z)
            pyro.set_rng_seed(seed)
            v_j, g_j = jitted.value_and_grad(z)
            torch.testing.assert_close(v_j, v_e, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_j, g_e, rtol=1e-12, atol=1e-12)
    # and successive calls see different minibatches
    assert not torch.equal(jitted.log_density(z), jitted.log_density(z))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_subsampled_log_likelihood_is_scaled_to_the_full_data(jit):
    # pyro.plate scales a minibatch's log-likelihood by N / B, so the average over minibatches is
    # the full-data log-likelihood: compare the mean of many evaluations with the exact value.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        potential = Potential(subsampled_model, (X_DATA,), jit=jit)
        z = t([[0.5]])
        draws = torch.cat([potential.log_density(z) for _ in range(400)])
    full = (
        dist.Normal(t(0.0), 1.0).log_prob(t(0.5)) + dist.Normal(t(0.5), 1.0).log_prob(X_DATA).sum()
    )
    # 400 draws of a minibatch estimate: the mean is within 4 standard errors of the truth
    # (sampling without replacement only makes the standard error smaller).
    assert abs(float(draws.mean() - full)) < 4 * float(draws.std()) / math.sqrt(400)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_per_row_minibatches_give_each_particle_its_own(jit):
    # log p(mu) + N/B sum_{i in batch_p} log N(x_i | mu, 1) with particle p's own batch, by hand
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # captured, not a fallback
        potential = Potential(subsampled_model, (X_DATA,), jit=jit)
        z = t([[0.3], [-1.2], [2.0], [0.5]])
        for _ in range(2):  # a captured graph takes new indices at every call
            (idx,) = potential.draw_minibatch(4)
            assert idx.shape == (4, 5)
            mu, x = z[:, 0], X_DATA[idx]
            expected = dist.Normal(t(0.0), 1.0).log_prob(mu) + N_DATA / 5 * dist.Normal(
                mu[:, None], 1.0
            ).log_prob(x).sum(-1)
            grad = -mu + N_DATA / 5 * (x - mu[:, None]).sum(-1)
            torch.testing.assert_close(potential.log_density(z, [idx]), expected)
            value, g = potential.value_and_grad(z, [idx])
            torch.testing.assert_close(value, expected)
            torch.testing.assert_close(g[:, 0], grad)
    assert len(potential._compiled) == (2 if jit else 0)
    potential.check_per_row_minibatches(z)  # passes


def test_minibatch_indices_of_the_wrong_shape_are_refused():
    potential = Potential(subsampled_model, (X_DATA,))
    z = torch.zeros(3, 1, dtype=D64)
    with pytest.raises(ValueError, match=r"subsampling plates \['data'\], got 2"):
        potential.value_and_grad(z, potential.draw_minibatch(3) * 2)
    with pytest.raises(ValueError, match=r"plate 'data' must have shape \(3, 5\).*got \(2, 5\)"):
        potential.value_and_grad(z, potential.draw_minibatch(2))
    with pytest.raises(ValueError, match=r"plate 'data' must have shape \(5,\).*got \(4,\)"):
        potential.log_density(z, [torch.arange(4)])


@pytest.mark.parametrize(("size", "batch"), [(6, 2), (9, 2), (12, 3)])
def test_per_row_minibatches_are_uniform_subsets(size, batch):
    # (6, 2) takes the top-k route, the others redraw repeated indices: either way every
    # batch-subset is equally likely (chi-square against uniform, 5 sd above its mean).
    rows = 30_000
    potential = Potential(subsampled_model, (X_DATA,))
    potential.subsample_plates = {"data": (size, batch)}  # the drawing alone
    torch.manual_seed(0)
    (idx,) = potential.draw_minibatch(rows)
    assert idx.shape == (rows, batch) and idx.dtype == torch.int64
    assert ((idx >= 0) & (idx < size)).all()
    ordered = idx.sort(-1).values
    assert (ordered[:, 1:] != ordered[:, :-1]).all()  # no index twice in a minibatch
    counts = torch.unique(ordered, dim=0, return_counts=True)[1].double()
    cells = math.comb(size, batch)
    assert len(counts) == cells
    chi2 = float(((counts - rows / cells) ** 2 / (rows / cells)).sum())
    assert chi2 < cells - 1 + 5 * math.sqrt(2 * (cells - 1)), chi2


# --------------------------------------------------------------------------- initialisation


def test_init_particles_prior():
    potential = Potential(composite_model)
    z = potential.init_particles(2000)
    assert z.shape == (2000, potential.dim) and z.dtype == D64
    values = potential.to_samples(z)
    # a ~ LogNormal(0, 1): log a ~ N(0, 1); 2000 draws give a standard error of 1/sqrt(2000)
    # ~ 0.022 for the mean of log a: 4 standard errors is 0.09.
    assert abs(float(values["a"].log().mean())) < 0.09
    # b ~ Uniform(-1, 3): mean 1, sd 4/sqrt(12) ~ 1.15, 4000 draws: 4 se ~ 0.073
    assert abs(float(values["b"].mean()) - 1.0) < 0.073
    # particles are distinct draws, not copies of one
    assert torch.unique(z[:, 0]).numel() == 2000


def test_init_particles_uniform():
    potential = Potential(composite_model)
    z = potential.init_particles(500, "uniform", radius=1.5)
    assert z.shape == (500, potential.dim) and z.dtype == D64
    assert z.abs().max() < 1.5
    assert z.abs().max() > 1.4  # it spans the box (500 * 9 draws)


def test_init_particles_invalid_strategy():
    potential = Potential(composite_model)
    with pytest.raises(ValueError, match="init must be 'prior' or 'uniform', got 'median'"):
        potential.init_particles(4, "median")


# --------------------------------------------------------------------------- errors


def test_unpack_wrong_shape_raises():
    potential = Potential(composite_model)
    with pytest.raises(ValueError, match=r"must have shape \(num_particles, 9\), got \(4, 8\)"):
        potential.unpack(torch.zeros(4, 8, dtype=D64))
    with pytest.raises(ValueError, match=r"got \(9,\)"):
        potential.unpack(torch.zeros(9, dtype=D64))
    with pytest.raises(ValueError, match=r"got \(2, 4, 9\)"):
        potential.log_density(torch.zeros(2, 4, 9, dtype=D64))


def test_pack_missing_site_raises():
    potential = Potential(composite_model)
    values = potential.to_samples(potential.init_particles(2))
    del values["p"]
    with pytest.raises(ValueError, match="no values for latent site 'p'"):
        potential.pack(values)


def test_no_latent_sites_raises():
    def model():
        pyro.sample("y", dist.Normal(t(0.0), 1.0), obs=t(0.3))

    with pytest.raises(ModelError, match=r"no latent sample sites.*\['y'\]"):
        Potential(model)


def test_discrete_latent_site_raises_naming_it():
    def model():
        pyro.sample("mu", dist.Normal(t(0.0), 1.0))
        pyro.sample("k", dist.Bernoulli(t(0.3)))

    with pytest.raises(ModelError, match=r"\['k'\] are discrete"):
        Potential(model, engine="svgd")


def test_enumerated_site_raises_naming_it():
    def model():
        pyro.sample("mu", dist.Normal(t(0.0), 1.0))
        pyro.sample("k", dist.Categorical(t([0.5, 0.5])), infer={"enumerate": "parallel"})

    with pytest.raises(ModelError, match=r"\['k'\]"):
        Potential(model)


def test_transforms_for_unknown_site_raise():
    with pytest.raises(ModelError, match=r"unknown latent site\(s\) \['z'\]"):
        Potential(lognormal_model, (Y_OBS,), transforms={"z": SoftplusTransform()})


def test_model_that_fails_to_run_raises():
    def model():
        pyro.sample("mu", dist.Normal(t(0.0), 1.0))
        raise KeyError("missing column")

    with pytest.raises(ModelError, match="running the model 'model'.*missing column"):
        Potential(model)


def test_python_float_of_a_latent_does_not_broadcast():
    def model():
        z = pyro.sample("z", dist.Normal(t(0.0), 1.0))
        pyro.sample("y", dist.Normal(float(z), 1.0), obs=t(0.5))

    with pytest.raises(ModelError, match="does not broadcast over particles"):
        Potential(model)


X3 = torch.randn(10, 3, generator=torch.Generator().manual_seed(1), dtype=D64)
Y10 = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=D64)


def test_matmul_with_a_latent_vector_does_not_broadcast():
    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=D64), 1.0).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)

    with pytest.raises(ModelError, match="does not broadcast over particles"):
        Potential(model, (X3, Y10))


def test_mixing_particles_is_caught_and_names_the_site():
    # z.mean() is the latent itself for one execution but averages the particles when the model
    # runs for several at once: no error is raised, the log-density is silently wrong.
    def model(y):
        z = pyro.sample("z", dist.Normal(t(0.0), 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(z.mean(), 1.0), obs=y)

    with pytest.raises(ModelError, match="site 'y' does not broadcast over particles"):
        Potential(model, (Y10,))


def regression_elementwise(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=D64), 1.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)


def test_vectorized_regression_matches_per_particle_log_joint():
    potential = Potential(regression_elementwise, (X3, Y10))
    z = torch.randn(4, 3, dtype=D64)
    expected = torch.stack([log_joint_one(regression_elementwise, {"w": w}, X3, Y10) for w in z])
    torch.testing.assert_close(potential.log_density(z), expected, rtol=1e-12, atol=1e-12)


def test_the_rewrite_the_broadcast_error_suggests_is_accepted():
    def mixing(y):
        z = pyro.sample("z", dist.Normal(t(0.0), 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(z.mean(), 1.0), obs=y)

    with pytest.raises(ModelError) as info:
        Potential(mixing, (Y10,))
    hint = re.search(r"x @ w -> (.+?), index with", str(info.value))
    if hint is None:
        return  # the message no longer suggests a rewrite of x @ w

    def model(x, y):  # x @ w rewritten as the message says
        w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=D64), 1.0).to_event(1))
        with pyro.plate("data", len(y)):
            loc = eval(hint.group(1), {}, {"x": x, "w": w})
            pyro.sample("y", dist.Normal(loc, 1.0), obs=y)

    potential = Potential(model, (X3, Y10))
    z = torch.randn(4, 3, dtype=D64)
    expected = torch.stack([log_joint_one(regression_elementwise, {"w": w}, X3, Y10) for w in z])
    torch.testing.assert_close(potential.log_density(z), expected, rtol=1e-12, atol=1e-12)


def test_support_without_bijection_raises_model_error_naming_the_site():
    with pytest.raises(ModelError, match="scale_tril"):
        Potential(lower_cholesky_model)


# --------------------------------------------------------------------------- captured graphs


def test_captured_log_density_and_gradient_match_eager():
    # jit=True replays an ATen graph of the evaluation (and of its gradient); both agree with
    # the eager model to rounding error, and the captured log density stays differentiable.
    pyro.set_rng_seed(0)
    eager = Potential(composite_model)
    captured = Potential(composite_model, jit=True)
    z = eager.init_particles(5)
    value, grad = captured.value_and_grad(z)
    expected_value, expected_grad = eager.value_and_grad(z)
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(grad, expected_grad)
    zz = z.clone().requires_grad_(True)
    captured.log_density(zz).sum().backward()
    torch.testing.assert_close(zz.grad, expected_grad)


def item_model(y):
    x = pyro.sample("x", dist.Normal(t(0.0), t(1.0)))
    scale = 1.0 if y.sum().item() > 0 else 2.0  # reads a tensor value in Python
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(x, scale), obs=y)


def test_jit_falls_back_to_eager_with_a_warning_when_capture_fails():
    potential = Potential(item_model, (Y_OBS,), jit=True)
    z = t([[0.1], [0.5]])
    message = r"could not capture the model: it reads a tensor's value in Python \(\.item\(\)"
    with pytest.warns(RuntimeWarning, match=message):
        value, grad = potential.value_and_grad(z)
    expected = Potential(item_model, (Y_OBS,)).value_and_grad(z)
    torch.testing.assert_close(value, expected[0])
    torch.testing.assert_close(grad, expected[1])
