"""Tests of the mirror maps (``pplx.inference.mirror``) used by MSVGD and SVMD.

Each map's potential psi is written out again here, and the library's closed forms are checked
against ``torch.autograd`` on it: ``to_dual`` = grad psi, ``hess_matvec`` = (Hessian of psi) v,
``hess_inv_matvec`` its inverse, ``div_hess_inv`` = sum_a d_a (H^{-1})_{ab}. All float64, so
the comparisons are to rounding error.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import hessian, jacobian
from torch.distributions import constraints

from pplx.inference.mirror import (
    BoxEntropic,
    Euclidean,
    OrthantEntropic,
    SimplexEntropic,
    mirror_map_for,
)

D64 = torch.float64
TOL = {"rtol": 1e-9, "atol": 1e-11}


# --------------------------------------------------------------------------- potentials psi


def psi_simplex(theta: torch.Tensor) -> torch.Tensor:
    """sum_{i <= K} theta_i log theta_i with theta_K = 1 - sum_{i < K} theta_i."""
    full = torch.cat([theta, 1 - theta.sum(-1, keepdim=True)], -1)
    return (full * full.log()).sum(-1)


def psi_orthant(lower: float):
    def psi(theta: torch.Tensor) -> torch.Tensor:
        t = theta - lower
        return (t * t.log() - t).sum(-1)

    return psi


def psi_box(lower: float, upper: float):
    def psi(theta: torch.Tensor) -> torch.Tensor:
        u = (theta - lower) / (upper - lower)
        return (upper - lower) * (u * u.log() + (1 - u) * (1 - u).log()).sum(-1)

    return psi


def psi_euclidean(theta: torch.Tensor) -> torch.Tensor:
    return 0.5 * (theta**2).sum(-1)


def interior_points(name: str, d: int = 3, seed: int = 0) -> torch.Tensor:
    """A single point theta of dimension d strictly inside each map's domain."""
    g = torch.Generator().manual_seed(seed)
    if name == "simplex":
        p = torch.distributions.Dirichlet(torch.full((d + 1,), 2.0, dtype=D64)).sample()
        return p[:-1]  # first K - 1 coordinates of a point of the K-simplex
    if name == "orthant":
        return 2.0 + torch.rand(d, generator=g, dtype=D64) * 3  # lower bound 2 below
    if name == "box":
        return -1.0 + 0.1 + torch.rand(d, generator=g, dtype=D64) * 3.8  # (-1, 3)
    return torch.randn(d, generator=g, dtype=D64)


MAPS = {
    "simplex": (SimplexEntropic(), psi_simplex),
    "orthant": (OrthantEntropic(2.0), psi_orthant(2.0)),
    "box": (BoxEntropic(-1.0, 3.0), psi_box(-1.0, 3.0)),
    "euclidean": (Euclidean(), psi_euclidean),
}
NAMES = sorted(MAPS)


@pytest.mark.parametrize("name", NAMES)
def test_to_primal_inverts_to_dual(name):
    mirror, _ = MAPS[name]
    theta = interior_points(name)
    torch.testing.assert_close(mirror.to_primal(mirror.to_dual(theta)), theta, **TOL)
    eta = torch.randn(3, dtype=D64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(mirror.to_dual(mirror.to_primal(eta)), eta, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_to_dual_is_gradient_of_psi(name):
    mirror, psi = MAPS[name]
    theta = interior_points(name).requires_grad_(True)
    (grad,) = torch.autograd.grad(psi(theta), theta)
    torch.testing.assert_close(mirror.to_dual(theta.detach()), grad, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_hessian_products_match_autograd(name):
    mirror, psi = MAPS[name]
    theta = interior_points(name)
    v = torch.randn(3, dtype=D64, generator=torch.Generator().manual_seed(7))
    hess = hessian(psi, theta)
    torch.testing.assert_close(mirror.hess_matvec(theta, v), hess @ v, **TOL)
    torch.testing.assert_close(
        mirror.hess_inv_matvec(theta, v), torch.linalg.solve(hess, v), **TOL
    )
    # and they are inverse to each other
    torch.testing.assert_close(
        mirror.hess_inv_matvec(theta, mirror.hess_matvec(theta, v)), v, **TOL
    )


@pytest.mark.parametrize("name", NAMES)
def test_div_hess_inv_matches_autograd(name):
    mirror, psi = MAPS[name]
    theta = interior_points(name)

    def hess_inv(t: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(hessian(psi, t, create_graph=True))

    jac = jacobian(hess_inv, theta)  # jac[a, b, c] = d_c (H^{-1})_{ab}
    expected = torch.einsum("aba->b", jac)  # sum_a d_a (H^{-1})_{ab}
    torch.testing.assert_close(mirror.div_hess_inv(theta), expected, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_maps_broadcast_over_leading_dimensions(name):
    mirror, _ = MAPS[name]
    batch = torch.stack([interior_points(name, seed=s) for s in range(6)]).reshape(2, 3, 3)
    v = torch.randn(2, 3, 3, dtype=D64, generator=torch.Generator().manual_seed(3))
    for method, args in [
        ("to_dual", (batch,)),
        ("div_hess_inv", (batch,)),
        ("hess_matvec", (batch, v)),
        ("hess_inv_matvec", (batch, v)),
    ]:
        out = getattr(mirror, method)(*args)
        assert out.shape == (2, 3, 3)
        for i in range(2):
            for j in range(3):
                single = getattr(mirror, method)(*(a[i, j] for a in args))
                torch.testing.assert_close(out[i, j], single, rtol=1e-12, atol=0)


def test_simplex_site_coordinates():
    mirror = SimplexEntropic()
    assert mirror.primal_dim(torch.Size([5])) == 4
    value = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D64)
    theta = mirror.from_site(value, torch.Size([4]))
    torch.testing.assert_close(theta, value[:3])
    torch.testing.assert_close(mirror.to_site(theta, torch.Size([4])), value, rtol=0, atol=1e-15)
    # any dual point maps to the interior of the simplex
    eta = 30 * torch.randn(100, 3, dtype=D64, generator=torch.Generator().manual_seed(0))
    site = mirror.to_site(mirror.to_primal(eta), torch.Size([4]))
    assert (site > 0).all()
    torch.testing.assert_close(site.sum(-1), torch.ones(100, dtype=D64))
    with pytest.raises(ValueError, match=r"one simplex per site.*\(3, 4\)"):
        mirror.primal_dim(torch.Size([3, 4]))


def test_elementwise_maps_flatten_site_shapes():
    mirror = OrthantEntropic()
    assert mirror.primal_dim(torch.Size([2, 3])) == 6
    value = torch.rand(5, 2, 3, dtype=D64) + 0.5
    theta = mirror.from_site(value, torch.Size([2, 3]))
    assert theta.shape == (5, 6)
    torch.testing.assert_close(mirror.to_site(theta, torch.Size([2, 3])), value, rtol=0, atol=0)


@pytest.mark.parametrize(
    "mirror, lower, upper",
    [(OrthantEntropic(2.0), 2.0, float("inf")), (BoxEntropic(-1.0, 3.0), -1.0, 3.0)],
)
def test_to_primal_stays_inside_the_domain(mirror, lower, upper):
    eta = torch.linspace(-30, 30, 101, dtype=D64)
    theta = mirror.to_primal(eta)
    assert (theta > lower).all() and (theta < upper).all()


def test_box_requires_lower_below_upper():
    with pytest.raises(ValueError, match=r"lower < upper, got \(1.0, 1.0\)"):
        BoxEntropic(1.0, 1.0)
    with pytest.raises(ValueError, match="lower < upper"):
        BoxEntropic(2.0, -1.0)


# --------------------------------------------------------------------------- choosing a map


@pytest.mark.parametrize(
    "support, cls, bounds",
    [
        (constraints.simplex, SimplexEntropic, None),
        (constraints.positive, OrthantEntropic, (0.0,)),
        (constraints.greater_than(2.0), OrthantEntropic, (2.0,)),
        (constraints.independent(constraints.positive, 1), OrthantEntropic, (0.0,)),
        (constraints.interval(-1.0, 3.0), BoxEntropic, (-1.0, 3.0)),
        (constraints.unit_interval, BoxEntropic, (0.0, 1.0)),
        (constraints.half_open_interval(0.0, 2.0), BoxEntropic, (0.0, 2.0)),
        (constraints.real, Euclidean, None),
        (constraints.real_vector, Euclidean, None),
    ],
)
def test_mirror_map_for_picks_the_map_of_the_support(support, cls, bounds):
    mirror = mirror_map_for(support, "x")
    assert type(mirror) is cls
    if cls is OrthantEntropic:
        assert (mirror.lower,) == bounds
    if cls is BoxEntropic:
        assert (mirror.lower, mirror.upper) == bounds
    mirror.check(support, "x")  # the chosen map accepts its support


@pytest.mark.parametrize(
    "support",
    [
        constraints.lower_cholesky,
        constraints.corr_cholesky,
        constraints.positive_definite,
        constraints.less_than(1.0),
        constraints.boolean,
    ],
)
def test_mirror_map_for_unsupported_support_names_the_site(support):
    with pytest.raises(ValueError, match=r"no mirror map for site 'scale_tril'.*Use SVGD"):
        mirror_map_for(support, "scale_tril")


@pytest.mark.parametrize(
    "support, lower",
    [(constraints.nonnegative, 0.0), (constraints.greater_than_eq(1.0), 1.0)],
)
def test_mirror_map_for_nonnegative_support(support, lower):
    # torch gives Gamma, Exponential, HalfNormal, HalfCauchy and Chi2 the support
    # constraints.nonnegative (greater_than_eq(0)); the entropic orthant map is defined on the
    # open orthant, which has the same Lebesgue density, so these sites should get it.
    mirror = mirror_map_for(support, "rate")
    assert isinstance(mirror, OrthantEntropic) and mirror.lower == lower
    mirror.check(support, "rate")


@pytest.mark.parametrize(
    "mirror, support",
    [
        (SimplexEntropic(), constraints.positive),
        (SimplexEntropic(), constraints.real_vector),
        (OrthantEntropic(), constraints.unit_interval),
        (OrthantEntropic(), constraints.simplex),
        (BoxEntropic(), constraints.positive),
        (BoxEntropic(), constraints.real),
        (Euclidean(), constraints.positive),
        (Euclidean(), constraints.simplex),
    ],
)
def test_check_raises_for_a_mismatched_support(mirror, support):
    with pytest.raises(ValueError, match=r"site 'x' has support"):
        mirror.check(support, "x")


@pytest.mark.parametrize(
    "mirror, support",
    [
        (OrthantEntropic(0.0), constraints.greater_than(2.0)),
        (BoxEntropic(0.0, 1.0), constraints.interval(-1.0, 3.0)),
    ],
)
def test_check_raises_for_mismatched_bounds(mirror, support):
    # The map's domain must equal the support: particles of OrthantEntropic(0) move in (0, inf),
    # so half of them could sit where a greater_than(2) site has no density.
    with pytest.raises(ValueError, match="site 'x'"):
        mirror.check(support, "x")
