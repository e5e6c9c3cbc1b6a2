"""Tests of ``pplx.models.koopman``: the Koopman VAE of Naiman, Berman et al. (ICLR 2024)."""

import math
import warnings

import matplotlib
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from pplx.models import KoopmanVAE
from pplx.models.koopman import (
    AutoregressivePrior,
    koopman_matrix,
    plot_eigenvalues,
    spectral_penalty,
    stability_penalty,
)
from pplx.objectives import ELBO, IWAE
from pplx.objectives.kl import kl_at
from pplx.timeseries import (
    discriminative_score,
    drop_time_rows,
    pad_sequences,
    predictive_score,
    sine_data,
)
from pplx.timeseries.cde import CDEEncoder

matplotlib.use("Agg")
F64 = torch.float64


def small_model(**kw):
    return KoopmanVAE(3, z_dim=4, hidden=8, **kw)


def sine(n=32, T=12, seed=0):
    return sine_data(n, seq_len=T, dim=3, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ least squares, spectrum


def random_linear_trajectories(k=4, n=6, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=F64))
    A = 0.9 * q @ torch.diag(torch.linspace(0.5, 1.0, k, dtype=F64))
    z = [torch.randn(n, k, generator=g, dtype=F64)]
    for _ in range(T - 1):
        z.append(z[-1] @ A)
    return A, torch.stack(z, 1)


def test_koopman_matrix_recovers_linear_map():
    A, z = random_linear_trajectories()
    assert torch.allclose(koopman_matrix(z, ridge=0.0), A, atol=1e-10)
    # a small ridge shrinks A by O(ridge / smallest singular value^2)
    assert torch.allclose(koopman_matrix(z, ridge=1e-8), A, atol=1e-6)
    # one trajectory (T, k) is accepted too
    A1 = koopman_matrix(z[0], ridge=0.0)
    assert A1.shape == (4, 4) and torch.isfinite(A1).all()


def test_koopman_matrix_differentiable_and_ridge_stable():
    _, z = random_linear_trajectories(k=3, n=2, T=4)
    z = z.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: koopman_matrix(z, ridge=1e-2), (z,))
    # rank-deficient latents (a constant coordinate of zeros): the ridge keeps A finite
    zero = torch.cat([z.detach(), torch.zeros(2, 4, 1, dtype=F64)], -1)
    assert torch.isfinite(koopman_matrix(zero, ridge=1e-6)).all()
    with pytest.raises(ValueError, match="ridge"):
        koopman_matrix(z, ridge=-1.0)
    with pytest.raises(ValueError, match="T >= 2"):
        koopman_matrix(torch.zeros(2, 1, 3))
    # without the ridge the same latents have no unique A: a clear error, not infinities
    with pytest.raises(ValueError, match="span only 3 dimensions; use ridge > 0"):
        koopman_matrix(zero, ridge=0.0)
    with pyro.validation_enabled(False):  # unchecked, as under compile()
        koopman_matrix(zero, ridge=0.0)
    # float32, many rows (as in sample(): 512 rollouts of 23 transitions): an exactly
    # collinear coordinate is caught, a well-posed system passes
    g = torch.Generator().manual_seed(0)
    z32 = torch.randn(512, 24, 4, generator=g)
    assert torch.isfinite(koopman_matrix(z32, ridge=0.0)).all()
    z32[..., 3] = z32[..., 0] + z32[..., 1]
    with pytest.raises(ValueError, match="span only 3 dimensions"):
        koopman_matrix(z32, ridge=0.0)


def test_stability_penalty_pushes_eigenvalues_inside_unit_circle():
    g = torch.Generator().manual_seed(0)
    A = (1.5 * torch.randn(5, 5, generator=g, dtype=F64) / math.sqrt(5)).requires_grad_()
    start = torch.linalg.eigvals(A).abs().max().item()
    assert start > 1.2 and stability_penalty(A) > 0
    opt = torch.optim.SGD([A], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        stability_penalty(A).backward()
        opt.step()
    radius = torch.linalg.eigvals(A.detach()).abs().max().item()
    assert radius < 1.01, (start, radius)
    assert stability_penalty(0.5 * torch.eye(3)) == 0


def test_spectral_penalty_puts_prescribed_eigenvalues_on_circle():
    def rot(theta, r):
        c, s = math.cos(theta), math.sin(theta)
        return r * torch.tensor([[c, -s], [s, c]], dtype=F64)

    A = torch.block_diag(rot(0.3, 0.6), rot(1.0, 1.3), torch.tensor([[0.2]], dtype=F64))
    A = A.requires_grad_()
    opt = torch.optim.SGD([A], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        spectral_penalty(A, num_unit=2).backward()
        opt.step()
    moduli = torch.linalg.eigvals(A.detach()).abs().sort(descending=True).values
    assert torch.allclose(moduli[:2], torch.ones(2, dtype=F64), atol=0.02), moduli
    assert (moduli[2:] <= 1.0).all()
    with pytest.raises(ValueError, match="num_unit"):
        spectral_penalty(A, num_unit=6)


# ------------------------------------------------------------------ the model


def heldout_loss(m, x, mask=None, seed=123, particles=8):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return Trace_ELBO(num_particles=particles).loss(m.model, m.guide, x, mask)


@pytest.mark.parametrize(
    "objective",
    [Trace_ELBO, ELBO, lambda: ELBO().compile(), lambda: ELBO(analytic_kl=True)],
    ids=["pyro", "pplx", "compiled", "analytic-kl"],
)
def test_svi_training_on_sine_lowers_loss(objective):
    x = sine(32)
    m = small_model(gamma=0.1)
    before = heldout_loss(m, x)
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 2e-2}), objective())
    losses = [svi.step(x) for _ in range(40)]
    after = heldout_loss(m, x)
    assert all(math.isfinite(v) for v in losses)
    # the Gaussian likelihood's normalising constant is fixed; the rest must at least halve
    const = x.numel() * 0.5 * math.log(2 * math.pi * m.obs_scale**2)
    assert after - const < 0.5 * (before - const), (before, after, const)
    assert int(m.train_len) == 12


def test_pplx_svi_checkpoint_resume_continues_the_module_bitwise(tmp_path):
    """pplx's SVI engine: a fit stopped at a checkpoint and resumed into an untrained module
    ends where one uninterrupted fit ends."""
    from pplx.inference import SVI as Engine

    x = sine(128)
    batches = [(b,) for b in x.split(32)]
    init = small_model()
    state = {k: v.clone() for k, v in init.state_dict().items()}

    def fit(num_steps, checkpoint=None, resume=False):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        m = small_model()
        m.load_state_dict(state)
        svi = Engine(
            m.model,
            m.guide,
            loss=ELBO(),
            optim_args={"lr": 2e-2},
            progress_bar=False,
            checkpoint=checkpoint,
            checkpoint_every=10,
        )
        result = svi.run(num_steps=num_steps, batches=batches, num_samples=1, resume=resume)
        return m, result

    whole, whole_result = fit(40)
    fit(20, checkpoint=tmp_path / "kovae.pt")
    resumed, resumed_result = fit(40, checkpoint=tmp_path / "kovae.pt", resume=True)
    assert not torch.equal(whole.prior_out.weight, state["prior_out.weight"])
    for (name, p), q in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(whole_result.trace["loss"], resumed_result.trace["loss"])
    assert int(resumed.train_len) == 12


def test_loss_weights_enter_as_documented():
    x = sine(8)
    m = small_model(beta=0.25, alpha=0.5, gamma=2.0, num_unit_eigs=1)
    guide_tr = pyro.poutine.trace(m.guide).get_trace(x)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(m.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["scale"] == 0.25 and model_tr.nodes["z"]["scale"] == 0.25
    assert model_tr.nodes["x"]["scale"] == 1.0
    assert {"koopman_pred", "koopman_eig"} <= set(model_tr.nodes)
    terms = m.loss_terms(x)
    assert set(terms) == {"recon", "kl", "pred", "eig"}
    assert all(torch.isfinite(v) for v in terms.values())
    m0 = small_model(alpha=0.0, gamma=0.0)
    model_tr = pyro.poutine.trace(m0.model).get_trace(x)
    assert "koopman_pred" not in model_tr.nodes and "koopman_eig" not in model_tr.nodes


def test_predictive_loss_uses_the_official_relative_scaling():
    """Regression: the predictive loss was the summed squared residual over the batch (about
    n T k times the official code's relative error), which with the paper's alpha swamped the
    KL term, distorted the prior and made samples easy to tell from data (disc 0.37)."""
    g = torch.Generator().manual_seed(0)
    zbar = torch.randn(6, 12, 4, generator=g, dtype=F64)
    A = koopman_matrix(zbar, 1e-4)
    res = zbar[:, 1:] - zbar[:, :-1] @ A
    m = small_model().double()
    rel = res.pow(2).mean() / (zbar[:, :-1] @ A).norm()
    assert torch.allclose(m.predictive_loss(zbar, A), rel)
    summed = small_model(pred_loss="sum").predictive_loss(zbar, A)
    assert torch.allclose(summed, res.pow(2).sum() / 6)
    # the factor is alpha * n * loss, and loss_terms reports the unweighted loss
    x = sine(8)
    m = small_model(alpha=0.5)
    zbar = torch.randn(8, 12, 4, generator=g)
    m.prior_rollout = lambda n, length, like=None: zbar
    tr = pyro.poutine.trace(m.model).get_trace(x)
    factor = -tr.nodes["koopman_pred"]["fn"].log_factor
    expected = 0.5 * 8 * m.predictive_loss(zbar, koopman_matrix(zbar, m.ridge))
    assert torch.allclose(factor, expected)
    # with the paper's weights the term is a small fraction of the per-sequence loss (the
    # summed scaling made it about 1e4 times larger)
    pyro.set_rng_seed(0)
    m = small_model()
    terms = m.loss_terms(x)
    assert m.alpha * terms["pred"] < 1e-3 * (terms["recon"] + m.beta * terms["kl"])
    with pytest.raises(ValueError, match="pred_loss"):
        small_model(pred_loss="mean")


def test_bidirectional_decoder_option():
    m = small_model(bidirectional_decoder=True)
    x = sine(4)
    loss = Trace_ELBO().differentiable_loss(m.model, m.guide, x)
    assert torch.isfinite(loss) and m.decoder.bidirectional
    assert m.sample(3, 20).shape == (3, 20, 3)


def test_missing_entries_give_finite_loss_and_gradients_and_are_ignored():
    x = sine(16)
    xm, mask = drop_time_rows(x, 0.5, torch.Generator().manual_seed(1))
    m = small_model(gamma=0.1)
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(m.model, m.guide, xm, mask)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert len(grads) == len(list(m.parameters()))
    assert all(torch.isfinite(gr).all() for gr in grads)
    # values at unobserved entries do not matter (NaN or anything else)
    other = xm.nan_to_num(7.0)
    assert heldout_loss(m, other, mask) == pytest.approx(heldout_loss(m, xm, mask), rel=1e-6)
    # a (batch, T, d) mask and padded variable-length sequences work too
    assert math.isfinite(heldout_loss(m, xm, mask.unsqueeze(-1).expand_as(xm)))
    xp, mp = pad_sequences([x[0], x[1, :7]])
    assert math.isfinite(heldout_loss(m, xp, mp))


def test_input_errors_name_the_argument():
    m = small_model()
    x = sine(4)
    xm, mask = drop_time_rows(x, 0.3)
    with pytest.raises(ValueError, match="mask is None"):
        m.model(xm)
    with pytest.raises(ValueError, match="mask is None"):
        m.guide(xm)
    with pytest.raises(TypeError, match="pad_sequences"):
        m.model([x[0], x[1, :5]])
    with pytest.raises(ValueError, match="mask must have shape"):
        m.model(xm, mask[:, :5])
    bad = mask.clone()
    bad[:] = True
    with pytest.raises(ValueError, match="mask=True"):
        m.guide(xm, bad)
    with pytest.raises(ValueError, match="x_dim=3"):
        m.model(torch.rand(4, 12, 2))
    with pytest.raises(ValueError, match="beta"):
        KoopmanVAE(3, beta=-1.0)
    with pytest.raises(ValueError, match="prior_hidden"):
        KoopmanVAE(3, prior_hidden=0)
    # an eigenvalue constraint that cannot be met: more unit eigenvalues than A has
    with pytest.raises(ValueError, match=r"num_unit_eigs must be in \[0, z_dim=4\].*raise z_dim"):
        KoopmanVAE(3, z_dim=4, num_unit_eigs=5)
    with pyro.validation_enabled(False):  # value checks follow Pyro's switch (compile())
        m.guide(xm, bad)


def test_compiled_objective_trains_on_irregular_data():
    xm, mask = drop_time_rows(sine(16), 0.5, torch.Generator().manual_seed(0))
    m = small_model()
    loss = ELBO().compile()
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 2e-2}), loss)
    losses = [svi.step(xm, mask) for _ in range(30)]
    (captured,) = loss._compiled.values()
    assert len(captured) == 1 and all(math.isfinite(v) for v in losses)  # captured once
    assert sum(losses[-5:]) < sum(losses[:5])


def test_sample_longer_than_training_and_eigenvalue_report():
    m = small_model()
    with pytest.raises(ValueError, match="length"):
        m.sample(4)  # training length unknown before training
    x = sine(8)
    SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x)
    s = m.sample(5)
    assert s.shape == (5, 12, 3)
    long = m.sample(5, 40)
    assert long.shape == (5, 40, 3) and torch.isfinite(long).all()
    assert long.min() >= 0 and long.max() <= 1
    assert m.sample(2, 20, prior_steps=1).shape == (2, 20, 3)
    eig = m.eigenvalues(num_samples=64)
    assert eig.shape == (4,) and eig.is_complex()
    assert (eig.abs()[:-1] >= eig.abs()[1:]).all()
    ax = plot_eigenvalues(eig)
    assert len(ax.collections) == 1
    matplotlib.pyplot.close("all")


def test_sample_beyond_training_length_rolls_the_fitted_linear_dynamics():
    m = small_model()
    SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(sine(8))
    m.decode = lambda z: z  # read the latents the decoder would get
    pyro.set_rng_seed(5)
    zbar = m.prior_rollout(512, 12)  # the rollouts sample() fits A to (num_fit=512)
    A = koopman_matrix(zbar, m.ridge)
    pyro.set_rng_seed(5)
    z = m.sample(5, 30)
    assert z.shape == (5, 30, 4)
    assert torch.equal(z[:, :12], zbar[:5])  # the prior network's steps
    # later steps follow z_{t+1} = z_t A from the last prior step on, and nothing else
    assert torch.allclose(z[:, 12:], z[:, 11:-1] @ A, atol=1e-6)
    pyro.set_rng_seed(5)  # the same rollouts, so the same A
    z = m.sample(5, 30, prior_steps=1)  # Koopman dynamics alone after one prior step
    assert torch.equal(z[:, 0], zbar[:5, 0])
    assert torch.allclose(z[:, 1:], z[:, :-1] @ A, atol=1e-6)


def test_sample_mean_latents_decodes_prior_means_of_sampled_histories():
    m = small_model()
    x = sine(8)
    SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x)
    pyro.set_rng_seed(3)
    smooth = m.sample(6, mean_latents=True)
    pyro.set_rng_seed(3)
    z, steps = m._rollout(512, 12)
    locs = steps.mean
    assert torch.allclose(smooth, m.decode(locs[:6]))
    assert not torch.allclose(z, locs)  # the decoded means differ from the samples
    pyro.set_rng_seed(3)
    assert torch.allclose(m.sample(6), m.decode(z[:6]))
    # the prior means still depend on the sampled history: the series differ
    assert smooth.std(0).max() > 0
    assert m.sample(3, 20, mean_latents=True).shape == (3, 20, 3)


def mixture_head(m, weights, locs, scale=0.01):
    """A prior head (``(n, K + K * 2k)``) whose components are N(loc_k * 1, scale^2 I)."""
    k = m.z_dim
    pre = math.log(math.expm1(scale - 1e-4))  # inverse of softplus(.) + 1e-4
    pairs = [torch.cat([torch.full((k,), loc), torch.full((k,), pre)]) for loc in locs]
    return torch.cat([torch.tensor(weights).log(), *pairs]).double()


def test_mixture_prior_draws_components_by_weight_and_reparameterises_within():
    m = small_model(prior_components=2).double()
    head = mixture_head(m, [0.2, 0.8], [-5.0, 5.0]).expand(40_000, -1).clone()
    head.requires_grad_()
    pyro.set_rng_seed(0)
    z = m._mixture_draw(head)
    upper = (z[:, 0] > 0).double().mean()
    assert abs(upper - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 40_000), upper
    assert torch.equal(z[:, 0] > 0, (z > 0).all(-1))  # one component per draw, whole vector
    (grad,) = torch.autograd.grad(z.sum(), head)
    assert torch.equal(grad[:, :2], torch.zeros_like(grad[:, :2]))  # no path to the weights
    assert grad[:, 2:].abs().sum() > 0  # the chosen component's loc and scale
    step = m.prior_distribution(head.detach()[:1])
    torch.testing.assert_close(step.mean, torch.full((1, 4), 0.2 * -5.0 + 0.8 * 5.0, dtype=F64))


@pytest.mark.parametrize("prior_kl", ["conditional", "free"])
def test_mixture_prior_trains_refits_and_samples(prior_kl):
    x = sine(16)
    pyro.set_rng_seed(0)
    m = small_model(prior_components=3, prior_kl=prior_kl)
    assert m.prior_out.out_features == 3 * (2 * 4 + 1)
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), ELBO())
    before = m.prior_out.weight.detach().clone()
    losses = [svi.step(x) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    # the mixing weights learn (from the KL term), as do the components
    assert not torch.equal(m.prior_out.weight[:3], before[:3])
    assert not torch.equal(m.prior_out.weight[3:], before[3:])
    assert m.fit_prior(x, num_steps=3, batch_size=8).shape == (3,)
    m.eval()
    assert m.sample(5).shape == (5, 12, 3)
    assert m.sample(2, 20, mean_latents=True).shape == (2, 20, 3)
    assert torch.isfinite(m.loss_terms(x)["kl"])


def test_gaussian_rollout_draws_loc_plus_scale_times_one_normal_per_step():
    """The Gaussian prior's random stream: one ``randn_like(loc)`` per step (checkpoints and
    seeds of earlier versions reproduce)."""
    m = small_model().double()
    pyro.set_rng_seed(5)
    z, steps = m._rollout(7, 6)
    pyro.set_rng_seed(5)
    prev, h = torch.zeros(7, 4, dtype=F64), torch.zeros(7, m.prior_hidden, dtype=F64)
    for t in range(6):
        head, h = m._prior_step(prev, h)
        loc, scale = m._gaussian(head)
        prev = loc + scale * torch.randn_like(loc)
        assert torch.equal(z[:, t], prev)
        assert torch.equal(steps.mean[:, t], loc) and torch.equal(steps.stddev[:, t], scale)


@pytest.mark.parametrize("components", [1, 3])
def test_exp_scale_transform_reads_log_variances_in_encoder_prior_and_rollout(components):
    """``scale_transform="exp"`` (official code): every Gaussian scale is exp(u / 2) of its
    head's second half; the default reads softplus(u) + 1e-4. Same parameters, so a state
    dict moves between the two."""
    x = sine(4, T=6).double()
    soft = small_model(prior_components=components).double()
    exp = small_model(prior_components=components, scale_transform="exp").double()
    exp.load_state_dict(soft.state_dict())
    raw = soft.encoder_out(soft.encoder(torch.cat([x, torch.ones_like(x)], -1))[0])
    u = raw.chunk(2, -1)[1]
    assert torch.allclose(exp.encode(x)[1], torch.exp(u / 2))
    assert torch.allclose(soft.encode(x)[1], torch.nn.functional.softplus(u) + 1e-4)
    z = soft.encode(x)[0]
    if components == 1:  # the prior's per-step scales, conditional and along a free rollout
        head = soft.prior_out(
            soft.prior_rnn(torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1))[0]
        )
        assert torch.allclose(exp.conditional_prior(z).stddev, torch.exp(head.chunk(2, -1)[1] / 2))
        pyro.set_rng_seed(5)
        path, steps = exp._rollout(7, 6)
        head, _ = exp.prior_rnn(torch.cat([torch.zeros_like(path[:, :1]), path[:, :-1]], 1))
        scale = torch.exp(exp.prior_out(head).chunk(2, -1)[1] / 2)
        assert torch.allclose(steps.stddev, scale)
    else:  # each component's scale
        head = soft.prior_out(torch.zeros(2, soft.prior_hidden, dtype=F64))
        pairs = soft._split_mixture(head)[1]
        mix = exp.prior_distribution(head).component_distribution.base_dist
        assert torch.allclose(mix.scale, torch.exp(pairs.chunk(2, -1)[1] / 2))
    loss = Trace_ELBO().differentiable_loss(exp.model, exp.guide, x)
    loss.backward()
    assert torch.isfinite(loss) and exp.sample(3, 9).shape == (3, 9, 3)
    with pytest.raises(ValueError, match="scale_transform"):
        small_model(scale_transform="log")


def test_prior_components_must_be_a_positive_integer():
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="prior_components must be a positive integer"):
            small_model(prior_components=bad)
    assert small_model(prior_components=2.0).prior_out.out_features == 2 * (2 * 4 + 1)


def test_prior_kl_free_uses_the_free_rollout_as_prior():
    """``prior_kl="free"`` (official code): the prior of ``z_t`` does not see the guide's
    ``z_{<t}``; ``"conditional"``: it does."""
    x = sine(4)
    for kind, depends in (("conditional", True), ("free", False)):
        pyro.set_rng_seed(0)
        m = small_model(prior_kl=kind)
        guide_tr = poutine.trace(m.guide).get_trace(x)
        tr = poutine.trace(poutine.replay(m.model, trace=guide_tr)).get_trace(x)
        z = guide_tr.nodes["z"]["value"].detach().requires_grad_()
        # the prior density couples z_1 and z_0 iff the prior of z_1 sees z_0
        (score,) = torch.autograd.grad(tr.nodes["z"]["fn"].log_prob(z).sum(), z, create_graph=True)
        (mixed,) = torch.autograd.grad(score[:, 1].sum(), z, allow_unused=True)
        assert (mixed is not None and mixed[:, 0].abs().sum() > 0) == depends
        loss = Trace_ELBO().differentiable_loss(m.model, m.guide, x)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="prior_kl"):
        small_model(prior_kl="marginal")


@pytest.mark.parametrize("prior_hidden", [None, 11])
@pytest.mark.parametrize("components", [1, 3])
def test_autoregressive_prior_is_the_prior_network_stepped_along_the_path(
    prior_hidden, components
):
    m = small_model(prior_hidden=prior_hidden, prior_components=components).double()
    assert m.prior_rnn.hidden_size == m.prior_hidden == (prior_hidden or m.hidden)
    z = torch.randn(2, 5, 12, 4, dtype=F64)  # particles, sequences, steps, latents
    steps = m.conditional_prior(z)
    assert steps.batch_shape == (2, 5, 12) and steps.event_shape == (4,)
    h = torch.zeros(2, 5, m.prior_hidden, dtype=F64)
    prev = torch.zeros(2, 5, 4, dtype=F64)
    expected = torch.zeros(2, 5, dtype=F64)
    for t in range(12):
        head, h = m._prior_step(prev, h)
        step = m.prior_distribution(head)
        torch.testing.assert_close(steps.mean[..., t, :], step.mean)
        torch.testing.assert_close(steps.stddev[..., t, :], step.stddev)
        if components == 1:
            normal = torch.distributions.Normal(step.mean, step.stddev)
            expected += normal.log_prob(z[..., t, :]).sum(-1)
        else:  # log sum_k pi_k N(z_t; m_k, s_k^2), written out
            logits, loc, scale = m._mixture_params(head)
            normal = torch.distributions.Normal(loc, scale)
            per_k = normal.log_prob(z[..., t, None, :]).sum(-1) + logits.log_softmax(-1)
            expected += per_k.logsumexp(-1)
        prev = z[..., t, :]
    prior = AutoregressivePrior(m, (5,), 12, like=z)
    torch.testing.assert_close(prior.log_prob(z), expected)
    assert prior.expand((3, 5)).rsample((2,)).shape == (2, 3, 5, 12, 4)
    assert prior.rsample().dtype == F64
    m.train_len.fill_(12)
    assert m.sample(3, 20).shape == (3, 20, 3)  # the free rollout and the Koopman extension


def test_vectorized_particles_reach_the_latent_path_site():
    x = sine(4)
    m = small_model()
    loss = IWAE(num_particles=3).differentiable_loss(m.model, m.guide, x)
    loss.backward()
    assert torch.isfinite(loss) and m.prior_rnn.weight_ih_l0.grad.abs().sum() > 0


def test_closed_form_kl_of_the_autoregressive_prior_is_unbiased():
    """The per-step KLs at the sampled history average to E_q[log q(z) - log p(z)]."""
    x = sine(2, T=6)
    m = small_model().double()
    pyro.set_rng_seed(0)
    with torch.no_grad():
        loc, scale = m.encode(x.double())
        q = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 2)
        z = q.sample((20_000,))
        p = AutoregressivePrior(m, (20_000, 2), 6)
        closed = kl_at(q.expand((20_000, 2)), p, z)
        diff = closed - (q.log_prob(z) - p.log_prob(z))  # paired: mean 0
    assert closed.shape == (20_000, 2)
    se = diff.std(0) / math.sqrt(len(diff))
    assert (diff.mean(0).abs() < 4 * se).all(), (diff.mean(0), se)
    assert (closed.var(0) < (q.log_prob(z) - p.log_prob(z)).var(0)).all()


@pytest.mark.parametrize("prior_kl", ["conditional", "free"])
def test_analytic_kl_elbo_matches_the_monte_carlo_elbo(prior_kl):
    x = sine(8, T=6)
    m = small_model(prior_kl=prior_kl, beta=1.0, alpha=0.0)

    def mean_and_se(objective, n=400):
        pyro.set_rng_seed(1)
        with torch.no_grad():
            v = torch.tensor([objective.loss(m.model, m.guide, x) for _ in range(n)])
        return v.mean(), v.std() / math.sqrt(n)

    mc, mc_se = mean_and_se(ELBO())
    ak, ak_se = mean_and_se(ELBO(analytic_kl=True))
    assert abs(mc - ak) < 4 * math.hypot(mc_se, ak_se), (mc, ak, mc_se, ak_se)
    assert ak_se < mc_se


def test_mixture_priors_keep_the_monte_carlo_kl():
    x = sine(4, T=6)
    m = small_model(prior_components=3)
    losses = []
    for objective in (ELBO(), ELBO(analytic_kl=True)):
        pyro.set_rng_seed(0)
        losses.append(objective.loss(m.model, m.guide, x))
    assert losses[0] == losses[1]


def test_model_follows_input_dtype():
    m = small_model().double()
    x = sine(4).double()
    loss = Trace_ELBO().differentiable_loss(m.model, m.guide, x)
    assert loss.dtype == F64
    assert m.sample(2, 15).dtype == F64


def test_trained_kovae_beats_untrained_on_scores():
    """A short KoVAE run on the sine benchmark, trained by pplx's SVI engine on minibatches:
    generated series become much harder to tell from real ones than those of the untrained
    model (paper, fully trained: about .005)."""
    from pplx.inference import SVI as Engine

    g = torch.Generator().manual_seed(0)  # Pyro's seed: 0, set by tests/conftest.py
    x = sine_data(2000, seq_len=24, dim=5, generator=g)
    real = sine_data(500, seq_len=24, dim=5, generator=g)
    m = KoopmanVAE(5, z_dim=16, hidden=20, gamma=0.1)
    kw = dict(seeds=(0, 1), num_steps=300, lr=1e-2, hidden=4)
    before = discriminative_score(real, m.sample(500, 24), **kw)
    svi = Engine(m.model, m.guide, loss=ELBO(), optim_args={"lr": 5e-3}, progress_bar=False)
    batches = [(b,) for b in x[:1984].split(64)]  # 31 full batches, cycled
    result = svi.run(num_steps=600, batches=batches, num_samples=1)
    loss = result.trace["loss"]
    assert loss.shape == (600,) and torch.isfinite(loss).all()
    # the likelihood's normalising constant per batch is fixed; the rest must at least halve
    const = 64 * 24 * 5 * 0.5 * math.log(2 * math.pi * m.obs_scale**2)
    assert loss[-50:].mean() - const < 0.5 * (loss[:50].mean() - const)
    m.eval()
    after = discriminative_score(real, m.sample(500), **kw)
    print(f"discriminative score: untrained {before}, trained {after}")
    # measured (training seeds 0-3): 0.50 -> 0.10-0.14, 40 s on one busy CPU thread
    assert after.mean < 0.25 and after.mean < before.mean - 0.25
    assert torch.linalg.eigvals(m.koopman()).abs().max() < 1.05


def test_encoder_batch_norm_option_trains_identically_under_every_objective():
    x = sine(16)
    m = small_model(encoder_batch_norm=True)
    # training mode: batch statistics, a sequence's posterior depends on its batch;
    # eval mode: running statistics, it does not
    assert not torch.allclose(m.encode(x)[0][:4], m.encode(x[:4])[0])
    m.eval()
    assert torch.allclose(m.encode(x)[0][:4], m.encode(x[:4])[0], atol=1e-6)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    start = int(m.encoder_norm.num_batches_tracked)  # the two encodes in training mode
    runs = []
    for objective in (Trace_ELBO(), ELBO(), ELBO().compile()):
        pyro.clear_param_store()
        m.load_state_dict(state)
        m.train()
        pyro.set_rng_seed(0)
        svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), objective)
        losses = [svi.step(x) for _ in range(5)]
        runs.append((losses, m.encoder_norm.running_mean.clone()))
        # only training steps update the statistics (not pplx's bookkeeping runs)
        assert int(m.encoder_norm.num_batches_tracked) == start + 5
    for losses, running_mean in runs[1:]:
        assert losses == pytest.approx(runs[0][0], rel=1e-5)
        assert torch.allclose(running_mean, runs[0][1], atol=1e-6)
    xm, mask = drop_time_rows(x, 0.5, torch.Generator().manual_seed(1))
    loss = Trace_ELBO().differentiable_loss(m.model, m.guide, xm, mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def prior_nll(m, x, mask=None, draws=8, seed=7):
    """-log p(z) of posterior paths z ~ q(z | x) under the autoregressive prior (fixed draws)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        loc, scale = m.encode(x, mask)
        total = 0.0
        for _ in range(draws):
            z = loc + scale * torch.randn(loc.shape, generator=g)
            total -= AutoregressivePrior(m, (len(x),), x.shape[1]).log_prob(z).mean().item()
    return total / draws


@pytest.mark.parametrize("analytic_kl", [False, True], ids=["mc-kl", "analytic-kl"])
@pytest.mark.parametrize("irregular", [False, True])
def test_fit_prior_trains_the_prior_alone_and_fits_the_posterior_paths(irregular, analytic_kl):
    x = sine(32)
    mask = None
    if irregular:
        x, mask = drop_time_rows(x, 0.3, torch.Generator().manual_seed(2))
    m = small_model(alpha=0.1, gamma=0.1, encoder_batch_norm=True)
    pyro.set_rng_seed(0)
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 2e-2}), ELBO())
    for _ in range(20):
        svi.step(x, mask)
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    nll_before = prior_nll(m, x, mask)
    m.train()
    losses = m.fit_prior(
        x,
        mask,
        num_steps=60,
        batch_size=16,
        lr=2e-2,
        generator=torch.Generator().manual_seed(1),
        analytic_kl=analytic_kl,
    )
    assert losses.shape == (60,) and torch.isfinite(losses).all()
    assert m.training  # the mode is restored, as is requires_grad
    assert all(p.requires_grad for p in m.parameters())
    m.eval()
    for key, value in m.state_dict().items():
        prior = key.startswith(("prior_rnn.", "prior_out."))
        if prior and "weight" in key:
            assert not torch.equal(value, before[key]), key
        elif not prior:  # encoder, decoder and batch-norm statistics untouched
            assert torch.equal(value, before[key]), key
    # maximum likelihood of the posterior paths: their prior NLL drops
    nll_after = prior_nll(m, x, mask)
    assert nll_after < nll_before - 1.0, (nll_after, nll_before)


def test_a_fresh_prior_of_another_size_refits_on_a_trained_autoencoder():
    """The guide's recipe: keep a trained model's encoder and decoder, refit a larger prior."""
    x = sine(16)
    trained = small_model()
    pyro.set_rng_seed(0)
    svi = SVI(trained.model, trained.guide, pyro.optim.Adam({"lr": 2e-2}), ELBO())
    for _ in range(5):
        svi.step(x)
    kept = {k: v for k, v in trained.state_dict().items() if not k.startswith("prior_")}
    big = small_model(prior_hidden=24)
    missing = big.load_state_dict(kept, strict=False).missing_keys
    assert missing and all(k.startswith(("prior_rnn.", "prior_out.")) for k in missing)
    assert big.fit_prior(x, num_steps=3, batch_size=8).shape == (3,)
    for key, value in kept.items():
        assert torch.equal(big.state_dict()[key], value), key
    big.eval()
    assert big.sample(4).shape == (4, 12, 3)  # the training length came with the state


def test_fit_prior_errors_name_the_argument():
    m = small_model()
    x = sine(8)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        m.fit_prior(x, num_steps=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        m.fit_prior(x, batch_size=2.5)
    with pytest.raises(ValueError, match="lr must be positive"):
        m.fit_prior(x, lr=0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, T, x_dim=3\)"):
        m.fit_prior(x[..., :2])
    del m.prior_rnn, m.prior_out  # a fixed prior, as the GRU-VAE baseline's
    with pytest.raises(ValueError, match="has no prior network to fit"):
        m.fit_prior(x)


def test_state_dicts_from_the_grucell_prior_still_load():
    """Checkpoints saved when the prior network was a ``GRUCell`` (``prior_cell.*``) load."""
    m = small_model()
    old = {}
    for key, value in m.state_dict().items():
        if key.startswith("prior_rnn."):
            key = "prior_cell." + key.removeprefix("prior_rnn.").removesuffix("_l0")
        old[key] = value.clone() + 1.0
    fresh = small_model()
    fresh.load_state_dict(old)  # strict: every key matched
    assert torch.equal(fresh.prior_rnn.weight_hh_l0, old["prior_cell.weight_hh"])


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
        ),
    ],
)
@pytest.mark.parametrize("irregular", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_training_sampling_and_scores_stay_on_the_device(device, irregular, compiled):
    """The official network (stacked GRUs, bidirectional decoder, batch norm) on ``device``:
    training, sampling, the spectrum and both scores, without cuDNN weight-layout warnings."""
    x = sine(16).to(device)
    mask = None
    if irregular:
        x, mask = drop_time_rows(x, 0.5, torch.Generator().manual_seed(0))
    m = small_model(num_layers=2, bidirectional_decoder=True, encoder_batch_norm=True)
    if irregular:  # the paper's irregular encoder: a neural CDE over a cubic spline
        m.encoder = CDEEncoder.for_model(m)
    m = m.to(device)
    objective = ELBO().compile() if compiled else ELBO()
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), objective)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="RNN module weights")
        losses = [svi.step(x, mask) for _ in range(3)]
        fitted = m.fit_prior(x, mask, num_steps=2, batch_size=8)
        m.eval()
        fake = m.sample(16)
    assert all(math.isfinite(v) for v in losses) and torch.isfinite(fitted).all()
    assert fake.device.type == device and fake.shape == (16, 12, 3)
    assert m.eigenvalues(num_samples=32).device.type == device
    real = sine(16, seed=1).to(device)
    disc = discriminative_score(real, fake, seeds=(0,), num_steps=5)
    pred = predictive_score(real, fake, seeds=(0,), num_steps=5)
    assert 0 <= disc.mean <= 0.5 and math.isfinite(pred.mean)
