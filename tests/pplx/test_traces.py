"""Tests of ``pplx.traces``: site inspection, plate nesting and the particle plate."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import constraints

from pplx import traces
from pplx.traces import (
    PARTICLE_PLATE,
    SiteInfo,
    from_particle_layout,
    max_plate_nesting,
    per_particle_sum,
    sample_sites,
    site_infos,
    to_particle_layout,
    trace_program,
    vectorized_trace,
    warn_fallback,
)


def mixed_model(y):
    """Global, auxiliary, discrete, event-shaped and subsampled-plate sites."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    pyro.sample("helper", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.sample("k", dist.Categorical(torch.ones(4) / 4))
    with pyro.plate("data", y.shape[0], subsample_size=2) as idx:
        pyro.sample("obs", dist.Normal(mu + w.sum(-1), 1.0), obs=y[idx])


def nested_model(y):
    """y has shape (rows, cols); a global, a row-level and an observed cell-level site."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("rows", y.shape[0], dim=-2):
        row = pyro.sample("row", dist.Normal(mu, 1.0))
        with pyro.plate("cols", y.shape[1], dim=-1):
            pyro.sample("cell", dist.Normal(row, 1.0), obs=y)


# --------------------------------------------------------------------------- sites


def test_sample_sites_excludes_subsample_and_auxiliary_sites():
    trace = trace_program(mixed_model, torch.randn(5))
    assert "data" in trace.nodes and "helper" in trace.nodes  # they are in the trace ...
    sites = sample_sites(trace)
    assert list(sites) == ["mu", "w", "k", "obs"]  # ... but not sample sites, in order
    assert all(site["type"] == "sample" for site in sites.values())


def test_sample_sites_excludes_do_not_trace_sites():
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0))

    trace = trace_program(model)
    # Pyro itself leaves such sites out of traces; a hand-edited trace checks the filter.
    trace.nodes["b"]["infer"]["_do_not_trace"] = True
    assert list(sample_sites(trace)) == ["a"]


def test_site_infos():
    y = torch.randn(5)
    infos = site_infos(trace_program(mixed_model, y))
    assert set(infos) == {"mu", "w", "k", "obs"}
    assert infos["mu"] == SiteInfo("mu", torch.Size(()), 0, False, False, constraints.real)
    assert infos["w"].shape == (3,) and infos["w"].event_dim == 1
    assert infos["w"].support is not None and not infos["w"].discrete
    assert infos["k"].discrete and infos["k"].shape == ()
    assert infos["obs"].observed and infos["obs"].shape == (2,)  # the subsample
    assert infos["obs"].event_dim == 0
    with pytest.raises(AttributeError):  # frozen
        infos["mu"].name = "other"


def test_trace_program_passes_arguments():
    def model(a, scale=1.0):
        return pyro.sample("x", dist.Normal(a, scale))

    trace = trace_program(model, torch.tensor(2.0), scale=0.01)
    assert trace.nodes["x"]["fn"].scale == 0.01
    assert trace.nodes["_RETURN"]["value"] is trace.nodes["x"]["value"]


# --------------------------------------------------------------------------- plate nesting


def test_max_plate_nesting():
    assert max_plate_nesting(trace_program(lambda: pyro.sample("x", dist.Normal(0.0, 1.0)))) == 0
    assert max_plate_nesting(trace_program(nested_model, torch.randn(3, 4))) == 2
    assert max_plate_nesting(trace_program(mixed_model, torch.randn(5))) == 1

    def explicit_dim():
        with pyro.plate("p", 2, dim=-3):
            pyro.sample("x", dist.Normal(0.0, 1.0))

    assert max_plate_nesting(trace_program(explicit_dim)) == 3

    def batch_without_plate():
        pyro.sample("x", dist.Normal(torch.zeros(4, 2), 1.0))  # undeclared batch dims

    assert max_plate_nesting(trace_program(batch_without_plate)) == 2

    def sequential_plate():
        for i in pyro.plate("seq", 3):
            pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0))

    assert max_plate_nesting(trace_program(sequential_plate)) == 0


def test_max_plate_nesting_of_several_traces():
    shallow = trace_program(mixed_model, torch.randn(5))
    deep = trace_program(nested_model, torch.randn(3, 4))
    assert max_plate_nesting(shallow, deep) == 2
    assert max_plate_nesting() == 0


# --------------------------------------------------------------------------- particle layout


def test_particle_plate():
    plate = traces.particle_plate(7, 2)
    assert plate.name == PARTICLE_PLATE
    assert plate.size == 7 and plate.dim == -3


@pytest.mark.parametrize(
    "site, nesting, layout_shape",
    [
        ("mu", 2, (6, 1, 1)),
        ("row", 2, (6, 3, 1)),
        ("cell", 2, (6, 3, 4)),
        ("mu", 3, (6, 1, 1, 1)),
    ],
)
def test_particle_layout_round_trip(site, nesting, layout_shape):
    infos = site_infos(trace_program(nested_model, torch.randn(3, 4)))
    info = infos[site]
    draws = torch.randn((6,) + tuple(info.shape))
    layout = to_particle_layout(draws, info, nesting)
    assert layout.shape == layout_shape
    assert torch.equal(from_particle_layout(layout, info.shape, 6), draws)


def test_particle_layout_with_event_dims():
    infos = site_infos(trace_program(mixed_model, torch.randn(5)))
    draws = torch.randn(4, 3)
    layout = to_particle_layout(draws, infos["w"], 1)
    assert layout.shape == (4, 1, 3)
    assert torch.equal(from_particle_layout(layout, infos["w"].shape, 4), draws)


def test_to_particle_layout_refuses_undeclared_batch_dims():
    info = SiteInfo("z", torch.Size([3, 2]), 0, False, False, constraints.real)
    with pytest.raises(ValueError, match="'z' has 2 batch dimensions.*only account for 1"):
        to_particle_layout(torch.zeros(5, 3, 2), info, 1)


def test_from_particle_layout_broadcasts_values_that_do_not_vary():
    value = torch.arange(3.0)
    out = from_particle_layout(value, torch.Size([3]), 4)  # no particle dimension at all
    assert out.shape == (4, 3) and torch.equal(out[2], value)
    out = from_particle_layout(value.reshape(1, 1, 3), torch.Size([3]), 4)  # a singleton one
    assert out.shape == (4, 3) and torch.equal(out[3], value)
    scalar = from_particle_layout(torch.tensor(2.0), torch.Size([]), 5)
    assert scalar.shape == (5,) and (scalar == 2).all()


# --------------------------------------------------------------------------- vectorized traces


def test_vectorized_trace_shapes():
    pyro.set_rng_seed(0)
    y = torch.randn(3, 4)
    trace = vectorized_trace(nested_model, 5, 2, (y,))
    assert PARTICLE_PLATE in trace.nodes
    assert trace.nodes["mu"]["value"].shape == (5, 1, 1)
    assert trace.nodes["row"]["value"].shape == (5, 3, 1)
    assert trace.nodes["cell"]["value"].shape == (3, 4)  # observed: the data themselves
    assert trace.nodes["cell"]["fn"].batch_shape == (5, 3, 4)
    trace.compute_log_prob()
    assert trace.nodes["cell"]["log_prob"].shape == (5, 3, 4)
    # Particles are independent draws.
    assert trace.nodes["mu"]["value"].reshape(-1).unique().numel() == 5
    frames = {f.name: f.dim for f in trace.nodes["cell"]["cond_indep_stack"]}
    assert frames == {PARTICLE_PLATE: -3, "rows": -2, "cols": -1}


def test_vectorized_trace_kwargs_and_per_particle_log_density():
    def model(loc, scale=1.0):
        x = pyro.sample("x", dist.Normal(loc, scale))
        with pyro.plate("data", 3):
            pyro.sample("obs", dist.Normal(x, 1.0), obs=torch.tensor([0.0, 1.0, 2.0]))

    pyro.set_rng_seed(1)
    trace = vectorized_trace(model, 4, 1, (torch.tensor(0.5),), {"scale": 2.0})
    assert trace.nodes["x"]["fn"].scale.eq(2.0).all()
    trace.compute_log_prob()
    x = trace.nodes["x"]["value"].reshape(4)
    total = per_particle_sum(trace.nodes["x"]["log_prob"], 4) + per_particle_sum(
        trace.nodes["obs"]["log_prob"], 4
    )
    for s in range(4):
        conditioned = poutine.trace(poutine.condition(model, {"x": x[s]})).get_trace(
            torch.tensor(0.5), scale=2.0
        )
        torch.testing.assert_close(total[s], conditioned.log_prob_sum())


def test_per_particle_sum():
    log_prob = torch.arange(24.0).reshape(4, 2, 3)
    torch.testing.assert_close(per_particle_sum(log_prob, 4), log_prob.sum((1, 2)))
    torch.testing.assert_close(per_particle_sum(torch.arange(4.0), 4), torch.arange(4.0))
    # A log-density without a particle dimension is the same for every particle.
    assert torch.equal(per_particle_sum(torch.tensor(1.5), 3), torch.full((3,), 1.5))
    assert torch.equal(per_particle_sum(torch.ones(1, 5), 3), torch.full((3,), 5.0))


def test_warn_fallback():
    with pytest.warns(RuntimeWarning, match=r"doing X: .*\(RuntimeError: bad\); falling back"):
        warn_fallback("doing X", RuntimeError("bad"))
