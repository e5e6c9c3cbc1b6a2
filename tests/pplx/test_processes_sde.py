"""Fractional SDE prior and controlled posterior (pplx.processes.sde).

Monte Carlo checks use standard errors: for a centred Gaussian vector the entry C_hat_ij of the
empirical covariance over N paths has variance (C_ii C_jj + C_ij^2) / N; a mean over N draws of
a quantity with variance v has standard error sqrt(v / N). Tests accept |z| < 4.5. Seeds are
fixed, so outcomes are deterministic.
"""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pplx.objectives import ELBO
from pplx.processes import (
    FractionalSDE,
    LinearControl,
    euler_linear_moments,
    fbm_weights,
    gaussian_condition,
)

F64 = torch.float64
Z_MAX = 4.5


def _ou(theta=1.0, **kwargs):
    defaults = dict(horizon=2.0, num_steps=20, x0_scale=0.1, obs_scale=0.1, hidden_dim=16)
    defaults.update(kwargs)
    return FractionalSDE(lambda x, t: -theta * x, 1.0, **defaults)


def _traces(sde, *args, **kwargs):
    guide_tr = poutine.trace(sde.guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(sde.model, guide_tr)).get_trace(*args, **kwargs)
    return guide_tr, model_tr


# --------------------------------------------------------------------------- prior


@pytest.mark.parametrize("kind", ["I", "II"])
def test_hurst_half_single_slow_process_is_brownian_motion(kind):
    # H = 1/2, K = 1, gamma -> 0: omega = 1 and X = x0 + s W, Cov = s^2 min(t, s).
    sigma = 0.7
    sde = FractionalSDE(
        lambda x, t: torch.zeros_like(x), sigma, horizon=1.0, num_steps=10, hurst=0.5,
        gammas=[1e-6], kind=kind, x0_scale=1e-8, dtype=F64,
    )  # fmt: skip
    assert float(sde.weights().detach()) == pytest.approx(1.0, abs=1e-4)
    paths = sde.sample(20000, posterior=False).x[..., 0]  # (N, 11)
    assert paths.shape == (20000, 11)
    x = paths[:, 1:]
    t = sde.times[1:]
    cov = sigma**2 * torch.minimum(t.unsqueeze(-1), t)
    emp = x.T @ x / x.shape[0]
    se = torch.sqrt((cov.diagonal().unsqueeze(-1) * cov.diagonal() + cov**2) / x.shape[0])
    assert float(((emp - cov).abs() / se).max()) < Z_MAX


def test_prior_matches_linear_gaussian_moments_fractional():
    # Any H, K, type: the Euler prior of the fractional OU process is linear Gaussian.
    theta, steps = 1.5, 40
    for kind in ["I", "II"]:
        pyro.clear_param_store()
        sde = _ou(theta, num_steps=steps, hurst=0.3, num_processes=3, gamma_max=8.0, kind=kind)
        sde = sde.double()
        x = sde.sample(20000, posterior=False).x[..., 0]
        mean, cov = euler_linear_moments(
            theta, 1.0, sde.weights(), sde.gammas, sde.dt, steps, 0.0, 0.1, kind
        )
        idx = [5, 20, 40]
        sub = cov[idx][:, idx]
        emp = (x[:, idx] - mean[idx]).T @ (x[:, idx] - mean[idx]) / x.shape[0]
        se = torch.sqrt((sub.diagonal().unsqueeze(-1) * sub.diagonal() + sub**2) / x.shape[0])
        assert float(((emp - sub).abs() / se).max()) < Z_MAX, kind


# --------------------------------------------------------------------------- KL = Girsanov


def test_zero_control_guide_is_prior_and_elbo_is_expected_log_likelihood():
    sde = _ou(hurst=0.4, num_processes=2, gamma_max=5.0, dtype=F64)
    obs_t, obs_y = torch.tensor([0.55, 2.0], dtype=F64), torch.tensor([0.3, 1.5], dtype=F64)
    guide_tr, model_tr = _traces(sde, obs_t, obs_y)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    latent = [n for n in guide_tr.stochastic_nodes]
    assert sorted(latent) == ["dW", "x0", "y0"]  # all the increments in one site
    # type I: the learned q(Y0 | x0) starts at the stationary prior, KL(q(Y0) || p(Y0)) = 0
    assert sde.learn_y0
    q_y0, p_y0 = guide_tr.nodes["y0"]["fn"].base_dist, model_tr.nodes["y0"]["fn"].base_dist
    torch.testing.assert_close(q_y0.loc, torch.zeros_like(q_y0.loc), rtol=0, atol=0)
    torch.testing.assert_close(q_y0.scale_tril, p_y0.scale_tril.expand_as(q_y0.scale_tril))
    assert guide_tr.nodes["dW"]["value"].shape == (sde.num_steps, 1)
    # the increment scales start at 1 (and the control at 0): every step's KL is zero
    torch.testing.assert_close(sde.increment_scales(), torch.ones(sde.num_steps, 1, dtype=F64))
    assert float(guide_tr.nodes["_RETURN"]["value"].kl.detach().abs().max()) == 0.0
    diff = sum(
        model_tr.nodes[n]["log_prob_sum"] - guide_tr.nodes[n]["log_prob_sum"] for n in latent
    )
    assert abs(float(diff.detach())) < 1e-10  # every sample: log p(latents) = log q(latents)
    # so the ELBO estimate is the Monte Carlo mean of log p(obs | X) under the prior
    num = 2000
    elbo = -ELBO(num_particles=num).loss(sde.model, sde.guide, obs_t, obs_y)
    x = sde.sample(num, posterior=False).x
    left, frac = sde._interpolation(obs_t)
    x_obs = (1 - frac) * x[:, left, 0] + frac * x[:, left + 1, 0]
    log_lik = torch.distributions.Normal(x_obs, 0.1).log_prob(obs_y).sum(-1)
    se = float(log_lik.std()) * math.sqrt(2.0 / num)  # two independent means
    assert abs(elbo - float(log_lik.mean())) < Z_MAX * se


def test_type_one_guide_has_a_learned_y0_posterior_starting_at_the_prior():
    # Type I: q(Y0 | x0) = N(L0 (a + g xi0), L0 M M^T L0^T), L0 L0^T = 1 / (gamma_i + gamma_j),
    # is the stationary prior at initialisation (a = g = 0, M = I: KL = 0) and is learned.
    sde = _ou(hurst=0.3, num_processes=3, gamma_max=5.0, dtype=F64)
    names = {"q_y0_white_loc", "q_y0_white_tril_raw", "q_y0_x0_gain"}
    assert names <= set(dict(sde.named_parameters()))
    l0 = sde.stationary_scale_tril()
    torch.testing.assert_close(l0 @ l0.T, sde.stationary_covariance())
    obs_t, obs_y = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.5, 1.5], dtype=F64)
    guide_tr, model_tr = _traces(sde, obs_t, obs_y)
    q, p = guide_tr.nodes["y0"]["fn"], model_tr.nodes["y0"]["fn"]
    assert q.event_shape == p.event_shape == (1, 3)
    kl = torch.distributions.kl_divergence(q.base_dist, p.base_dist).detach()
    assert float(kl.abs().max()) == 0.0
    # conditional on x0 through the gain: a perturbed posterior differs from the prior
    with torch.no_grad():
        sde.q_y0_white_loc.fill_(0.2)
        sde.q_y0_x0_gain.fill_(0.5)
        sde.q_y0_white_tril_raw.copy_(torch.tensor([[0.1, 0, 0], [0.3, -0.2, 0], [0, 0.1, 0]]))
    x0_white = torch.tensor([[0.0], [2.0]], dtype=F64)
    q = sde.posterior_y0(x0_white)
    assert q.batch_shape == (2,) and q.event_shape == (1, 3)
    m = torch.tensor([[1.1052, 0, 0], [0.3, 0.8187, 0], [0, 0.1, 1.0]], dtype=F64)
    torch.testing.assert_close(q.base_dist.covariance_matrix[0, 0], l0 @ m @ m.T @ l0.T,
                               rtol=1e-4, atol=0)  # fmt: skip
    torch.testing.assert_close(q.mean[1, 0] - q.mean[0, 0], l0 @ torch.full((3,), 1.0, dtype=F64))
    kl = torch.distributions.kl_divergence(q.base_dist, p.base_dist).detach()
    assert float(kl.min()) > 0.01
    # the ELBO's gradients reach q(Y0 | x0)
    for objective in [ELBO(num_particles=8, stl=True), pyro.infer.Trace_ELBO()]:
        sde.zero_grad()
        objective.differentiable_loss(sde.model, sde.guide, obs_t, obs_y).backward()
        for name in names:
            grad = dict(sde.named_parameters())[name].grad
            assert grad is not None and bool(torch.isfinite(grad).all()), name
            assert float(grad.abs().sum()) > 0, name
    # learn_y0=False keeps the prior in the guide; type II has no "y0" site at all
    fixed = _ou(hurst=0.3, num_processes=3, gamma_max=5.0, learn_y0=False, name="fixed")
    assert not names & set(dict(fixed.named_parameters()))
    guide_tr, _ = _traces(fixed)
    torch.testing.assert_close(
        guide_tr.nodes["y0"]["fn"].base_dist.scale_tril[0], fixed.stationary_scale_tril()
    )
    type_two = _ou(hurst=0.3, num_processes=3, gamma_max=5.0, kind="II", name="two")
    assert not type_two.learn_y0 and not names & set(dict(type_two.named_parameters()))
    guide_tr, _ = _traces(type_two)
    assert "y0" not in guide_tr.nodes
    with pytest.raises(RuntimeError, match="no q"):
        type_two.posterior_y0()


@pytest.mark.parametrize("scaled", [False, True])
def test_per_step_kl_is_girsanov_for_fixed_control(scaled):
    # The guide's "dW" site is autoregressive: step n is N(u_n dt, s_n^2 dt) given Z_n. Its
    # KL to the prior's N(0, dt) is u_n^2 dt / 2 (Girsanov) plus (s_n^2 - 1) / 2 - log s_n.
    dt_control = lambda t, x, y, c: 0.8 * torch.sin(3 * t) - 0.5 * x  # noqa: E731
    sde = _ou(hurst=0.3, num_processes=2, gamma_max=5.0, control=dt_control, dtype=F64)
    if scaled:
        with torch.no_grad():
            steps = torch.arange(sde.num_steps, dtype=F64).unsqueeze(-1)
            sde.log_increment_scale.copy_(0.3 * torch.sin(steps))
    scales = sde.increment_scales().detach()[:, 0]
    guide_tr, model_tr = _traces(sde)
    path = guide_tr.nodes["_RETURN"]["value"]
    prior = model_tr.nodes["dW"]["fn"].base_dist
    for n in range(sde.num_steps):
        u = path.control[n]
        q = torch.distributions.Normal(u * sde.dt, math.sqrt(sde.dt) * scales[n])
        p = torch.distributions.Normal(prior.loc[n], prior.scale[n])  # iid over the steps
        torch.testing.assert_close(p.scale, torch.full_like(p.scale, math.sqrt(sde.dt)))
        kl = torch.distributions.kl_divergence(q, p).sum()
        torch.testing.assert_close(kl, path.kl[n])
        s_n = float(scales[n])
        expected = 0.5 * float(u.detach()) ** 2 * sde.dt + 0.5 * (s_n**2 - 1) - math.log(s_n)
        assert float(kl.detach()) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # Monte Carlo: E_q[log q - log p] over the increments is E[sum_n KL_n]
    num = 4000
    with pyro.plate("particles", num, dim=-1):
        guide_tr, model_tr = _traces(sde)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    log_ratio = guide_tr.nodes["dW"]["log_prob"] - model_tr.nodes["dW"]["log_prob"]
    kl = guide_tr.nodes["_RETURN"]["value"].kl.sum(-1)
    diff = (log_ratio - kl).detach()  # mean zero
    assert abs(float(diff.mean())) < Z_MAX * float(diff.std()) / math.sqrt(num)
    assert float(kl.detach().mean()) > 0.05


def test_increments_log_prob_is_consistent_and_reparameterised():
    # The autoregressive "dW" distribution: log q at its own sample (cached path) equals the
    # density re-evaluated from the increments alone, both with the control evaluated along
    # the whole path at once (ControlNet) and step by step; the sample is reparameterised.
    sde = FractionalSDE(
        lambda x, t: -x + 0.3 * torch.sin(x), lambda x, t: 0.5 + 0.1 * x**2, state_dim=2,
        horizon=2.0, num_steps=24, hidden_dim=8, hurst=0.3, num_processes=3, gamma_max=5.0,
        dtype=F64,
    )  # fmt: skip
    with torch.no_grad():
        for p in [sde.control.head.weight, sde.control.gain.weight, sde.log_increment_scale]:
            p.normal_(0.0, 0.3)
    with pyro.plate("paths", 6, dim=-1):
        trace = poutine.trace(sde.guide).get_trace()
    fn, value = trace.nodes["dW"]["fn"], trace.nodes["dW"]["value"]
    path = trace.nodes["_RETURN"]["value"]
    assert value.shape == (6, 24, 2) and fn.time_batched
    own = fn.log_prob(value)
    again = fn.log_prob(value.detach().clone())
    redo = fn.path(value.detach().clone())
    for a, b in [(redo.x, path.x), (redo.y, path.y), (redo.control, path.control)]:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    fn.time_batched = False  # the sequential recursion
    step_by_step = fn.log_prob(value.detach().clone())
    torch.testing.assert_close(again, own, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(step_by_step, own, rtol=1e-10, atol=1e-10)
    # the density is the product of the steps' Normal densities given the path
    sd = math.sqrt(sde.dt) * sde.increment_scales()
    direct = torch.distributions.Normal(path.control * sde.dt, sd).log_prob(value).sum((-2, -1))
    torch.testing.assert_close(own, direct)
    # pathwise gradients reach the control network, the scales and q(x0) through the sample
    path.x[..., -1, :].sum().backward()
    for name in ["control.head.weight", "control.gain.weight", "log_increment_scale",
                 "q_x0_loc", "raw_hurst", "q_y0_white_loc", "q_y0_white_tril_raw",
                 "q_y0_x0_gain"]:  # fmt: skip
        grad = dict(sde.named_parameters())[name].grad
        assert grad is not None and bool(torch.isfinite(grad).all()), name
        assert float(grad.abs().sum()) > 0, name


# --------------------------------------------------------------------------- fitting


def test_learnable_hurst_gets_a_finite_gradient():
    sde = _ou(hurst=0.3, num_processes=3, gamma_max=4.0)
    assert isinstance(sde.raw_hurst, torch.nn.Parameter)
    assert float(sde.hurst.detach()) == pytest.approx(0.3, rel=1e-6)
    obs_t, obs_y = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.5])
    for objective in [ELBO(num_particles=4), pyro.infer.Trace_ELBO()]:
        sde.zero_grad()
        objective.differentiable_loss(sde.model, sde.guide, obs_t, obs_y).backward()
        grad = sde.raw_hurst.grad
        assert grad is not None and torch.isfinite(grad) and float(grad) != 0.0
    fixed = _ou(hurst=0.3, learn_hurst=False, num_processes=2, gamma_max=4.0, name="fixed")
    assert "raw_hurst" not in dict(fixed.named_parameters())


def test_short_fit_moves_posterior_toward_endpoint_observation():
    sde = _ou(num_steps=10, hurst=0.7, num_processes=2, gamma_max=2.0)
    obs_t, obs_y = torch.tensor([2.0]), torch.tensor([1.5])
    svi = pyro.infer.SVI(sde.model, sde.guide, pyro.optim.Adam({"lr": 0.05}), ELBO(16))
    before = float(sde.sample(500).x[:, -1, 0].mean())
    for _ in range(40):
        svi.step(obs_t, obs_y)
    after = float(sde.sample(500).x[:, -1, 0].mean())
    assert abs(before) < 0.2 and after > 0.8


def _exact_bridge_control(sde, theta, obs, noise):
    """Posterior mean of each increment given Z_n and y, for the linear Gaussian Euler prior.

    With Z_{n+1} = A Z_n + B dW_n and y = X_N + eps: E[dW_n | Z_n = z, y] = h_n dt (y - (A^{N-n}
    z)_0) / v_n, h_n = (A^{N-1-n} B)_0, v_n = sum_{m >= n} h_m^2 dt + noise^2, i.e. the control
    u_n = h_n (y - (A^{N-n} z)_0) / v_n (the discrete h-transform). The conditional variance
    of dW_n is dt (1 - h_n^2 dt / v_n), independent of z: the exact increment scale s_n.
    """
    w, g, dt, steps = sde.weights().detach(), sde.gammas, sde.dt, sde.num_steps
    k = g.numel()
    a = torch.zeros(k + 1, k + 1, dtype=F64)
    a[0, 0], a[0, 1:], a[1:, 1:] = 1 - theta * dt, -dt * w * g, torch.diag(1 - dt * g)
    b = torch.cat([w.sum().reshape(1), torch.ones(k, dtype=F64)])
    pows = [torch.eye(k + 1, dtype=F64)]
    for _ in range(steps):
        pows.append(a @ pows[-1])
    h = torch.stack([(pows[steps - 1 - n] @ b)[0] for n in range(steps)])
    v = torch.stack([(h[n:] ** 2).sum() * dt + noise**2 for n in range(steps)])

    def control(t, x, y, context):
        n = min(round(float(t) / dt), steps - 1)
        pred = (torch.cat([x, y.flatten(-2)], -1) @ pows[steps - n].T)[..., :1]
        return h[n] * (obs - pred) / v[n]

    control.scales = (1.0 - h**2 * dt / v).sqrt().unsqueeze(-1)  # (N, 1)
    return control


@pytest.mark.parametrize("hurst, k", [(0.5, 1), (0.3, 3), (0.7, 3)])
def test_exact_bridge_control_reproduces_gaussian_conditioning(hurst, k):
    # The guide family contains the exact bridge: with the analytic control and
    # q(x0) = p(x0 | y), the guide's path has the exact posterior mean and mid-time variance of
    # the discretised fractional OU bridge even with the prior's increment variance dt (s_n = 1);
    # with the exact increment scales s_n it is the exact posterior, endpoint variance included,
    # and every sample's log weight is the log evidence.
    theta, steps, obs, noise, num = 1.0, 40, 1.5, 0.1, 10000
    box = {}
    gammas = [1e-6] if k == 1 else None
    sde = _ou(theta, num_steps=steps, hurst=hurst, learn_hurst=False, num_processes=k,
              gamma_max=8.0, gammas=gammas, kind="II", dtype=F64,
              control=lambda *args: box["u"](*args))  # fmt: skip
    box["u"] = _exact_bridge_control(sde, theta, obs, noise)
    w = sde.weights().detach()
    mean, cov = euler_linear_moments(theta, 1.0, w, sde.gammas, sde.dt, steps, 0.0, 0.1, "II")
    post_mean, post_cov = gaussian_condition(mean, cov, steps, obs, noise)
    with torch.no_grad():
        sde.q_x0_loc.fill_(float(post_mean[0]))
        sde.q_x0_raw_scale.fill_(math.log(math.expm1(float(post_cov[0, 0].sqrt()))))
    x = sde.sample(num).x[..., 0]
    mid = steps // 2
    for i in [mid, steps]:
        se = float(post_cov[i, i].sqrt()) / math.sqrt(num)
        assert abs(float(x[:, i].mean() - post_mean[i])) < Z_MAX * se + 0.01
    ratio = float(x[:, mid].var() / post_cov[mid, mid])
    assert abs(ratio - 1) < Z_MAX * math.sqrt(2 / num) + 0.02, ratio
    # the ELBO is a lower bound on the exact log evidence and beats the prior as guide
    obs_t, obs_y = torch.tensor([2.0], dtype=F64), torch.tensor([obs], dtype=F64)
    evidence = torch.distributions.Normal(mean[-1], (cov[-1, -1] + noise**2).sqrt())
    log_evidence = float(evidence.log_prob(obs_y[0]))
    elbo = -ELBO(num_particles=1000).loss(sde.model, sde.guide, obs_t, obs_y)
    # exact increment scales: the guide is the exact posterior of the discretised model
    with torch.no_grad():
        sde.log_increment_scale.copy_(box["u"].scales.log())
    x = sde.sample(num).x[..., 0]
    for i in [mid, steps]:
        ratio = float(x[:, i].var() / post_cov[i, i])
        assert abs(ratio - 1) < Z_MAX * math.sqrt(2 / num), (i, ratio)
    with pyro.plate("particles", 200, dim=-1):
        guide_tr, model_tr = _traces(sde, obs_t, obs_y)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    log_w = sum(model_tr.nodes[n]["log_prob"] for n in ["x0", "dW", "obs"]) - sum(
        guide_tr.nodes[n]["log_prob"] for n in ["x0", "dW"]
    )
    torch.testing.assert_close(log_w, torch.full_like(log_w, log_evidence), rtol=0, atol=1e-9)
    box["u"] = lambda t, x, y, c: torch.zeros_like(x)
    with torch.no_grad():
        sde.log_increment_scale.zero_()
    elbo_prior = -ELBO(num_particles=1000).loss(sde.model, sde.guide, obs_t, obs_y)
    assert elbo < log_evidence + 0.05 and elbo > elbo_prior + 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "hurst, k, kind", [(0.5, 1, "II"), (0.3, 3, "II"), (0.7, 3, "II"), (0.3, 3, "I")]
)
def test_ou_bridge_posterior_matches_gaussian_conditioning(hurst, k, kind):
    # Optimisation check (20-30 s per case on a loaded 2-core CPU): the fitted guide against
    # the exact Gaussian conditioning of the discretised (fractional) OU prior, type II
    # (Y(0) = 0, so the guide's only start site is x0) and type I (stationary Y(0), with the
    # learned q(Y0 | x0) in the guide). Default ControlNet (time features and
    # time-varying linear feedback on (X, Y)), learned increment scales, ClippedAdam lr 0.05
    # decaying by 0.3 over 400 steps, 64 particles. Measured at 400 steps (ratios fitted /
    # exact variance at T/2 and T; largest |mean error| at T/2 and T):
    #   H = 0.5, K = 1 (Brownian): 0.945 / 1.04 (seed 0), 0.98 / 1.06, 0.94 / 1.11 (seeds 1, 2);
    #     before the ControlNet and the scales: 0.49 / 7.8 (floored by the fixed variance dt);
    #   H = 0.3, K = 3 on [1/8, 8]: 0.956 / 1.075, 0.945 / 1.150, 0.979 / 1.060 (seeds 0-2),
    #     mean errors <= 0.022;
    #   H = 0.7, K = 3 on [1/8, 8]: 0.956 / 1.133, 0.994 / 1.327, 0.989 / 1.110 (seeds 0-2),
    #     mean errors <= 0.011;
    #   type I, H = 0.3, K = 3 on [1/8, 8]: 1.022 / 1.155, 0.989 / 1.018, 0.995 / 1.068
    #     (seeds 0-2), mean errors at T/2 and T <= 0.0085 (-0.0085 / +0.0057, -0.0073 /
    #     +0.0056, -0.0027 / -0.0078); with the guide keeping the prior of Y(0)
    #     (learn_y0=False) the variances fit as well (1.005 / 1.180, 0.982 / 1.032,
    #     0.990 / 1.154) but the mid-time mean is off by -0.087, -0.074, -0.073, hence the
    #     tighter mid-time mean band (0.04) for type I.
    # (seeds measured with evaluations at 100 and 200 steps in between, which shift the RNG;
    # the test's own seed-0 numbers are printed.) The fractional bridges fit as well as the
    # Brownian one; the endpoint variance converges last (it needs the sharp feedback and the
    # increment scales of the last steps), hence its wider band.
    steps, theta = 40, 1.0
    gammas = [1e-6] if k == 1 else None
    sde = _ou(theta, num_steps=steps, hurst=hurst, learn_hurst=False, num_processes=k,
              gamma_max=8.0, gammas=gammas, kind=kind)  # fmt: skip
    assert sde.learn_y0 == (kind == "I")
    obs_t, obs_y = torch.tensor([2.0]), torch.tensor([1.5])
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.3 ** (1 / 400)})
    svi = pyro.infer.SVI(sde.model, sde.guide, optim, ELBO(64, stl=True))
    for _ in range(400):
        svi.step(obs_t, obs_y)
    w = sde.weights().detach()
    mean, cov = euler_linear_moments(theta, 1.0, w, sde.gammas, sde.dt, steps, 0.0, 0.1, kind)
    post_mean, post_cov = gaussian_condition(mean, cov, steps, 1.5, 0.1)
    x = sde.sample(4000).x[..., 0].double()
    mid = steps // 2
    ratio = float(x[:, mid].var() / post_cov[mid, mid])
    end_ratio = float(x[:, -1].var() / post_cov[-1, -1])
    print(
        f"type {kind}, H = {hurst}: mid mean {float(x[:, mid].mean()):.3f} vs "
        f"{float(post_mean[mid]):.3f}, end mean {float(x[:, -1].mean()):.3f} vs "
        f"{float(post_mean[-1]):.3f}, mid var ratio {ratio:.3f}, end var ratio {end_ratio:.3f}"
    )
    assert float(x[:, -1].mean()) == pytest.approx(float(post_mean[-1]), abs=0.05)
    mid_tol = 0.04 if kind == "I" else 0.08  # type I without q(Y0): off by 0.073-0.087
    assert float(x[:, mid].mean()) == pytest.approx(float(post_mean[mid]), abs=mid_tol)
    assert 0.8 < ratio < 1.2, ratio
    assert 0.7 < end_ratio < 1.5, end_ratio


# --------------------------------------------------------------------------- analytic helpers


@pytest.mark.parametrize("kind", ["I", "II"])
def test_cached_weights_have_the_value_and_gradient_of_fbm_weights(kind):
    # FractionalSDE.weights() computes omega(H) once per value of H (shared by the model, the
    # guide and the replay of one ELBO step) and attaches the exact derivative in H.
    sde = _ou(hurst=0.3, num_processes=4, gamma_max=4.0, kind=kind, dtype=F64)
    w = sde.weights()
    (grad,) = torch.autograd.grad((w * torch.arange(1.0, 5.0, dtype=F64)).sum(), sde.raw_hurst)
    ref = fbm_weights(sde.hurst, sde.gammas, sde.horizon, kind)
    (ref_grad,) = torch.autograd.grad(
        (ref * torch.arange(1.0, 5.0, dtype=F64)).sum(), sde.raw_hurst
    )
    torch.testing.assert_close(w.detach(), ref.detach(), rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=0)
    cached = sde.__dict__["_weights_cache"][1]
    sde.weights()
    assert sde.__dict__["_weights_cache"][1] is cached  # not recomputed for the same H
    # a fresh graph per call: two backward passes without a parameter update are fine
    for _ in range(2):
        sde.zero_grad()
        sde.weights().sum().backward()
        assert float(sde.raw_hurst.grad) != 0.0
    # a new H (an optimiser step) recomputes them
    with torch.no_grad():
        sde.raw_hurst.add_(0.5)
    ref = fbm_weights(sde.hurst, sde.gammas, sde.horizon, kind)
    torch.testing.assert_close(sde.weights().detach(), ref.detach(), rtol=0, atol=0)
    with torch.no_grad():
        assert not sde.weights().requires_grad
    # fixed H: no graph at all
    fixed = _ou(hurst=0.3, learn_hurst=False, num_processes=4, gamma_max=4.0, kind=kind)
    assert not fixed.weights().requires_grad


def test_gaussian_condition_matches_joint_formula():
    mean = torch.tensor([0.0, 1.0, -1.0], dtype=F64)
    a = torch.tensor([[1.0, 0.3, 0.1], [0.3, 2.0, 0.5], [0.1, 0.5, 1.5]], dtype=F64)
    m, c = gaussian_condition(mean, a, 2, 0.5, 0.2)
    joint = torch.zeros(4, 4, dtype=F64)
    joint[:3, :3] = a
    joint[3, :3] = joint[:3, 3] = a[2]
    joint[3, 3] = a[2, 2] + 0.04
    gain = joint[:3, 3:] / joint[3, 3]
    torch.testing.assert_close(c, a - gain @ joint[3:, :3])
    torch.testing.assert_close(m, mean + gain[:, 0] * (0.5 - mean[2]))


# --------------------------------------------------------------------------- errors


def test_errors_are_clear():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        _ou(hurst=1.0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        _ou(hurst=0.0)
    with pytest.raises(ValueError, match="K"):
        _ou(num_processes=0)
    with pytest.raises(ValueError, match=r"gamma_max \* dt = .* >= 0.5"):
        _ou(num_steps=20, gamma_max=20.0)  # dt = 0.1
    with pytest.raises(ValueError, match="kind"):
        _ou(kind="III")
    with pytest.raises(ValueError, match="num_steps"):
        _ou(num_steps=0)
    with pytest.raises(TypeError, match="drift"):
        FractionalSDE("not callable", 1.0)
    sde = _ou(num_processes=2, gamma_max=4.0)
    with pytest.raises(ValueError, match=r"outside the grid \[0, T\]"):
        sde.model(torch.tensor([0.5, 2.5]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"outside the grid \[0, T\]"):
        sde.model(torch.tensor([-0.1]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="obs_values must have shape"):
        sde.model(torch.tensor([0.5, 1.0]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="both obs_times and obs_values"):
        sde.model(torch.tensor([0.5]))


def test_irregular_observation_times_interpolate_the_grid():
    sde = _ou(num_steps=20, num_processes=2, gamma_max=4.0)  # dt = 0.1
    left, frac = sde._interpolation(torch.tensor([0.0, 0.05, 0.1, 1.234, 2.0]))
    assert left.tolist() == [0, 0, 1, 12, 19]
    torch.testing.assert_close(frac, torch.tensor([0.0, 0.5, 0.0, 0.34, 1.0]), atol=1e-5, rtol=0)


def test_linear_control_and_context_shapes():
    sde = _ou(num_processes=2, gamma_max=4.0, name="lin")
    sde.control = LinearControl(1, 2, sde.num_steps, sde.horizon)
    path = sde.sample(7)
    assert path.x.shape == (7, 21, 1) and path.y.shape == (7, 21, 1, 2)
    assert path.control.shape == (7, 20, 1) and float(path.kl.abs().sum()) == 0.0
    ctx = FractionalSDE(
        lambda x, t: -x, lambda x, t: 0.5 + 0 * x, state_dim=2, num_steps=10,
        num_processes=1, gammas=[0.5], context_dim=3, name="ctx",
    )  # fmt: skip
    path = ctx.sample(5, context=torch.ones(3))
    assert path.x.shape == (5, 11, 2) and path.control.shape == (5, 10, 2)
    with pytest.raises(ValueError, match="context"):
        ctx.sample(2)
