"""Tests of pplx.processes.video: the moving-digits generator and LatentVideoSDE."""

import pyro
import pytest
import torch

from pplx.objectives import ELBO
from pplx.processes import LatentVideoSDE, moving_digits

SIZE, FRAMES = 16, 6


def _videos(n=4, seed=0, **kwargs):
    return moving_digits(n, FRAMES, SIZE, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_moving_digits_shape_range_and_determinism():
    a = _videos(5, seed=1)
    assert a.shape == (5, FRAMES, SIZE, SIZE)
    assert a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float(a.max()) > 0.5  # digits are visible
    torch.testing.assert_close(a, _videos(5, seed=1), rtol=0, atol=0)
    assert not torch.equal(a, _videos(5, seed=2))
    # frames change over time (the digits move)
    assert float((a[:, 1:] - a[:, :-1]).abs().sum()) > 0


def test_moving_digits_bounces_keep_digits_inside():
    # fast digits over many frames: they must hit the borders and bounce
    videos, pos = moving_digits(
        8,
        60,
        24,
        num_digits=2,
        generator=torch.Generator().manual_seed(0),
        digit_size=8,
        speed=(0.2, 0.3),
        return_positions=True,
    )
    assert pos.shape == (8, 60, 2, 2)
    assert int(pos.min()) >= 0 and int(pos.max()) <= 24 - 8
    assert bool((pos == 0).any()) and bool((pos == 24 - 8).any())  # reached the borders
    # every digit's pixels stay in the frame: total intensity per digit is conserved
    single, _ = moving_digits(
        4,
        40,
        24,
        num_digits=1,
        generator=torch.Generator().manual_seed(3),
        digit_size=8,
        speed=(0.2, 0.3),
        return_positions=True,
    )
    mass = single.sum((-1, -2))
    torch.testing.assert_close(mass, mass[:, :1].expand_as(mass))
    # a velocity component flips sign somewhere (bounce), and the path is stochastic
    steps = pos[:, 1:].float() - pos[:, :-1].float()
    assert bool(((steps[:, 1:] * steps[:, :-1]) < 0).any())


def test_moving_digits_rejects_bad_sizes():
    with pytest.raises(ValueError):
        moving_digits(0, 5, 16)
    with pytest.raises(ValueError):
        moving_digits(2, 5, 16, digit_size=20)


def _net(**kwargs):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return LatentVideoSDE(
        SIZE, FRAMES, latent_dim=3, content_dim=4, context_dim=8, hidden_dim=32, **kwargs
    )


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_model_guide_elbo_finite_with_gradients(likelihood):
    net = _net(likelihood=likelihood, num_context_frames=2)
    videos = _videos(3)
    loss = ELBO(num_particles=2).loss_and_grads(net.model, net.guide, videos)
    assert torch.isfinite(torch.tensor(loss))
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values())
    assert float(grads["sde.raw_hurst"].abs()) > 0  # the Hurst index is learned
    assert float(grads["decoder.0.weight"].abs().sum()) > 0
    assert float(grads["frame_encoder.0.weight"].abs().sum()) > 0
    # sites: all the Euler increments in one site "dW", vectorised over the videos
    trace = pyro.poutine.trace(net.guide).get_trace(videos)
    assert not [n for n in trace.nodes if n.startswith("dW_")]
    assert net.sde.num_steps == (FRAMES - 1) * net.steps_per_frame
    assert trace.nodes["dW"]["value"].shape == (3, net.sde.num_steps, 3)
    assert float(grads["sde.log_increment_scale"].abs().sum()) > 0  # learned increment scales
    model_trace = pyro.poutine.trace(net.model).get_trace(videos)
    assert model_trace.nodes["frames"]["is_observed"]


def test_svi_steps_reduce_loss():
    net = _net()
    videos = _videos(8)
    svi = pyro.infer.SVI(
        net.model, net.guide, pyro.optim.Adam({"lr": 1e-2}), ELBO(1, max_plate_nesting=1)
    )
    losses = [svi.step(videos) for _ in range(30)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])


def test_predict_shapes():
    net = _net(num_context_frames=2)
    videos = _videos(3)
    pred = net.predict(videos[:, :2], num_context_frames=2, num_samples=4)
    assert pred.shape == (4, 3, FRAMES, SIZE, SIZE)
    assert float(pred.min()) >= 0 and float(pred.max()) <= 1
    prior = net.predict(videos, num_samples=2, posterior=False)
    assert prior.shape == (2, 3, FRAMES, SIZE, SIZE)
    with pytest.raises(ValueError):
        net.predict(videos, num_context_frames=3)
    with pytest.raises(ValueError):
        net.model(videos[:, :4])
