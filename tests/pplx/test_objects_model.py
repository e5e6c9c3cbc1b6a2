"""Tests of the AIR-style scene model ``pplx.models.ObjectCountVAE``."""

import pyro
import pytest
import torch

import pplx.estimators as est
import pplx.objectives as obj
from pplx.inference import SVI
from pplx.models import ObjectCountVAE

F64 = torch.float64


def test_count_logits_are_the_sequential_presence_probabilities():
    presence = torch.randn(5, 3, dtype=F64)
    logits = ObjectCountVAE.count_logits(presence)
    assert logits.shape == (5, 4)
    torch.testing.assert_close(logits.logsumexp(-1), torch.zeros(5, dtype=F64))
    p = torch.sigmoid(presence)
    expected = torch.stack(
        [1 - p[:, 0], p[:, 0] * (1 - p[:, 1]), p[:, 0] * p[:, 1] * (1 - p[:, 2]), p.prod(-1)],
        -1,
    )
    torch.testing.assert_close(logits.exp(), expected)


def test_render_draws_the_first_n_objects_only():
    m = ObjectCountVAE(size=10).double()
    where = m.anchors.expand(4, 3, 2).clone()
    images = m.render(torch.arange(4), where)
    assert images.shape == (4, 100)
    assert torch.equal(images[0], torch.zeros(100, dtype=F64))
    one = m.render(torch.tensor(1), where[0])
    torch.testing.assert_close(images[2] - images[1], m.render(torch.tensor(2), where[0]) - one)
    # enumerated counts broadcast against a batch of positions
    assert m.render(torch.arange(4).reshape(4, 1), where).shape == (4, 4, 100)


def test_simulate_gives_images_and_counts_in_range():
    m = ObjectCountVAE(size=8, max_objects=2).double()
    x, counts = m.simulate(50, torch.Generator().manual_seed(0))
    assert x.shape == (50, 64) and x.dtype == F64
    assert counts.min() >= 0 and counts.max() <= 2
    again, _ = m.simulate(50, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


@pytest.mark.parametrize(
    "strategy, objective",
    [
        (est.Enumerate(), obj.ELBO(1)),
        (est.Reinforce("auto"), obj.ELBO(3)),
        (est.MVD(), obj.ELBO(1)),
        (est.Reinforce("auto"), obj.IWAE(3, local_plate="data")),
    ],
    ids=["enumerate", "reinforce", "mvd", "iwae"],
)
def test_every_strategy_runs_on_the_count_with_reparameterised_positions(strategy, objective):
    pyro.clear_param_store()
    m = ObjectCountVAE(size=8)
    x, _ = m.simulate(6, torch.Generator().manual_seed(0))
    guide = est.with_estimators(m.guide, {"n": strategy})
    loss = objective.differentiable_loss(m.model, guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    weight = m.encoder[-1].weight.grad
    assert weight[:3].abs().sum() > 0  # the count's presence logits
    assert weight[3:9].abs().sum() > 0  # the positions


def test_iwae_learns_to_count():
    pyro.clear_param_store()
    torch.manual_seed(0)
    m = ObjectCountVAE()
    x, counts = m.simulate(1100, torch.Generator().manual_seed(0))
    guide = est.with_estimators(m.guide, {"n": est.Reinforce("auto")})
    engine = SVI(m.model, guide, loss=obj.IWAE(5, local_plate="data"), optim_args={"lr": 3e-3})
    state = engine.init(x[:100])
    assert m.count_accuracy(x[1000:], counts[1000:]) < 0.5  # untrained
    for i in range(500):
        engine.step(state, x[(i % 10) * 100 : (i % 10 + 1) * 100])
    assert m.count_accuracy(x[1000:], counts[1000:]) > 0.9


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_objects"):
        ObjectCountVAE(max_objects=0)
    with pytest.raises(ValueError, match="noise"):
        ObjectCountVAE(noise=0.0)
