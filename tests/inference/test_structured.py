"""Tests of structured SG-MCMC (``pplx.inference.structured``; Alexos, Boyd & Mandt 2022).

The statistical tests use a 2-D Gaussian with correlation 0.95 whose coordinates are separate
sites, each its own group. On a Gaussian every update is linear in the chain's state, and the
structured update stays linear if the state includes the ring buffer: with ``buffer_size=L``
and ``buffer_thinning=1`` the buffer holds the last ``L`` positions, so the state
``(x_t, ..., x_{t-L+1})`` follows ``z' = A z + e``. A buffer draw is the buffer mean (linear in
the state) plus a martingale-difference error whose variance is the buffer's empirical
variance divided by ``S`` (a quadratic form of the state), so the stationary covariance solves a
Lyapunov equation with a noise term that depends linearly on the covariance itself
(:func:`structured_stationary`). Second-order statistics, marginal variance, spectral density
at frequency zero and integrated autocorrelation time (IAT) are then exact; the tests compare
the chains with them within four Monte Carlo standard errors.

What that theory says about mixing (and the tests confirm): at the same step size the
structured chain's IAT is *higher* than SGLD's while the buffer keeps updating, because the
chain follows its buffer's mean, a slow mode whose zero-frequency spectral density equals
SGLD's, while its marginal variance is smaller. With the buffer frozen after the warm-up it is
far lower: each coordinate is then an AR(1) chain on its own (mean-field) curvature.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pplx.inference import SGLD, ModelError, load_checkpoint
from pplx.inference.structured import (
    StructuredPSGLD,
    StructuredSGHMC,
    StructuredSGLD,
    build_layout,
)

D64 = torch.float64
RHO = 0.95
COV = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=D64)
PREC = torch.linalg.inv(COV)  # P_aa = 1 / (1 - rho^2) = 10.26, P_ab = -rho / (1 - rho^2)
STEP = 0.1  # SGLD is stable up to 4 / lambda_max(P) = 0.2


def pair():
    """a ~ N(0, 1), b | a ~ N(rho a, 1 - rho^2): jointly N(0, COV), one site per coordinate."""
    a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0))
    pyro.sample("b", dist.Normal(RHO * a, math.sqrt(1 - RHO**2)))


def pair_as_one_site():
    pyro.sample("z", dist.MultivariateNormal(torch.zeros(2, dtype=D64), COV))


# --------------------------------------------------------------------------- exact theory


def lyapunov(A: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Stationary covariance V = A V A^T + Q of z' = A z + e, Cov(e) = Q."""
    n = A.shape[0]
    eye = torch.eye(n * n, dtype=D64)
    return torch.linalg.solve(eye - torch.kron(A, A), Q.reshape(-1)).reshape(n, n)


def sgld_stationary(step: float):
    """SGLD on N(0, COV): x' = (I - step/2 P) x + N(0, step I)."""
    return torch.eye(2, dtype=D64) - step / 2 * PREC, step * torch.eye(2, dtype=D64)


def structured_stationary(step: float, size: int, samples: int):
    """(A, Q, V) of the structured chain with a ring buffer of the last ``size`` positions.

    State z = (x_t, x_{t-1}, ..., x_{t-size+1}) (2 * size coordinates). Group a's gradient is
    -(P_aa a + P_ab b~), b~ the mean of ``samples`` independent buffer draws of b:
    b~ = m_b + eta_b with m_b the buffer mean and Var(eta_b | buffer) = s2_b / samples, s2_b
    the buffer's empirical variance. eta is uncorrelated with the past, so for second moments
    it is white noise of variance E[s2_b] / samples, and E[s2_b] is linear in V: the fixed
    point V = A V A^T + Q(V) is found by iteration (the feedback through Q is weak).
    """
    n = 2 * size
    diag = torch.diag(PREC.diagonal())
    off = PREC - diag
    mean_map = torch.zeros(2, n, dtype=D64)
    for j in range(size):
        mean_map[:, 2 * j : 2 * j + 2] = torch.eye(2, dtype=D64) / size
    A = torch.zeros(n, n, dtype=D64)
    A[:2, :2] = torch.eye(2, dtype=D64) - step / 2 * diag
    A[:2] -= step / 2 * off @ mean_map
    for j in range(1, size):
        A[2 * j : 2 * j + 2, 2 * j - 2 : 2 * j] = torch.eye(2, dtype=D64)
    V = torch.zeros(n, n, dtype=D64)
    for _ in range(500):
        spread = torch.zeros(2, dtype=D64)
        for c in range(2):
            block = V[c::2, c::2]
            spread[c] = (block.trace() / size - block.sum() / size**2) / samples
        q_x = step * torch.eye(2, dtype=D64) + step**2 / 4 * off @ torch.diag(spread.flip(0)) @ off
        Q = torch.zeros(n, n, dtype=D64)
        Q[:2, :2] = q_x
        new = lyapunov(A, Q)
        if (new - V).abs().max() < 1e-13:
            break
        V = new
    return A, Q, V


def long_run_variance(A: torch.Tensor, V: torch.Tensor, length: int) -> float:
    """E[T xbar^2] of coordinate 0 over ``length`` stationary steps: sum_k (1 - |k|/T) gamma_k."""
    total, power = float(V[0, 0]), V.clone()
    for k in range(1, length):
        power = A @ power
        total += 2 * (1 - k / length) * float(power[0, 0])
    return total


def zero_frequency(A: torch.Tensor, Q: torch.Tensor) -> float:
    """Spectral density at zero of coordinate 0: [(I - A)^-1 Q (I - A)^-T]_00."""
    inv = torch.linalg.inv(torch.eye(A.shape[0], dtype=D64) - A)
    return float((inv @ Q @ inv.T)[0, 0])


def chain_moments(x: torch.Tensor, centre: torch.Tensor | float = 0.0):
    """Variance and T * (chain mean)^2 around known centres for draws ``(C, T)``, with SEs.

    Chains are independent, so each chain's mean square and each chain's T * xbar^2 are i.i.d.
    across chains: the standard errors are their sd over chains / sqrt(C).
    """
    chains, length = x.shape
    dev = x - torch.as_tensor(centre, dtype=x.dtype).reshape(-1, 1)
    per_var = (dev**2).mean(1)
    per_s0 = length * dev.mean(1) ** 2
    root = math.sqrt(chains)
    return (
        float(per_var.mean()),
        float(per_var.std() / root),
        float(per_s0.mean()),
        float(per_s0.std() / root),
    )


# --------------------------------------------------------------------------- 1. mixing

CHAINS, WARMUP, DRAWS = 256, 1000, 3000


@pytest.fixture(scope="module")
def sgld_pair():
    pyro.set_rng_seed(11)
    result = SGLD(pair, step_size=STEP, jit=True).run(
        num_samples=DRAWS, warmup_steps=WARMUP, num_chains=CHAINS
    )
    return result.samples["a"]


def test_sgld_reference_matches_its_exact_iat(sgld_pair):
    A, Q = sgld_stationary(STEP)
    V = lyapunov(A, Q)
    var, var_se, s0, s0_se = chain_moments(sgld_pair)
    expected_s0 = long_run_variance(A, V, DRAWS)
    assert abs(var - float(V[0, 0])) < 4 * var_se, (var, float(V[0, 0]), var_se)
    assert abs(s0 - expected_s0) < 4 * s0_se, (s0, expected_s0, s0_se)
    # IAT = S(0) / Var: (4 / eps)(1 + rho^2) / 1.04 = 73 steps
    assert zero_frequency(A, Q) / float(V[0, 0]) == pytest.approx(73.34, abs=0.01)


def test_structured_chain_follows_its_buffer_and_mixes_slower_than_sgld(sgld_pair):
    # The paper's algorithm with the buffer updating: buffer_size 10, one draw per group.
    # Exact theory: marginal variance 0.532 (between the mean-field 1 - rho^2 = 0.0975 and the
    # posterior's 1), zero-frequency density 99.7 (SGLD: 76.1, the same linear equations at
    # frequency zero plus the buffer draws' noise), hence IAT 187 against SGLD's 73.
    size = 10
    pyro.set_rng_seed(12)
    sampler = StructuredSGLD(pair, step_size=STEP, buffer_size=size, jit=True)
    result = sampler.run(num_samples=DRAWS, warmup_steps=WARMUP, num_chains=CHAINS)
    x = result.samples["a"]
    A, Q, V = structured_stationary(STEP, size, 1)
    exact_var, exact_iat = float(V[0, 0]), zero_frequency(A, Q) / float(V[0, 0])
    assert exact_var == pytest.approx(0.532, abs=1e-3)
    assert exact_iat == pytest.approx(187.5, abs=0.1)
    var, var_se, s0, s0_se = chain_moments(x)
    expected_s0 = long_run_variance(A, V, DRAWS)
    assert abs(float(x.mean())) < 4 * math.sqrt(s0 / (CHAINS * DRAWS))  # the posterior mean
    assert abs(var - exact_var) < 4 * var_se, (var, exact_var, var_se)
    assert abs(s0 - expected_s0) < 4 * s0_se, (s0, expected_s0, s0_se)
    # Ordering: each IAT estimate has a relative SE of about sqrt(2 / C) = 9 %, so the log of
    # their ratio has an SE of about 0.13; the predicted ratio 2.56 is 4 SE above 1.5.
    sgld_var, _, sgld_s0, _ = chain_moments(sgld_pair)
    ratio = (s0 / var) / (sgld_s0 / sgld_var)
    assert ratio > 1.5, ratio


def test_frozen_buffer_samples_the_factorised_target_and_mixes_faster_than_sgld(sgld_pair):
    # freeze_buffer_after_warmup: after the warm-up each chain c samples the fixed target
    # exp(E_{q_b} log p(a, b)) with q_b its frozen buffer. Group a is then exactly AR(1):
    # a' = r a - (eps/2) P_ab (bbar_c + eta) + N(0, eps), r = 1 - eps P_aa / 2 = 0.487, eta
    # the draw's noise (variance s2_c / S). Closed form: mean -(P_ab / P_aa) bbar_c = rho bbar_c
    # (the coordinate-ascent update of the mean-field family), variance
    # (eps + eps^2 / 4 P_ab^2 s2_c / S) / (1 - r^2), IAT (1 + r) / (1 - r) = 2.90 against
    # SGLD's 73 (25 times lower).
    size, skip, draws = 50, 20, 1000
    pyro.set_rng_seed(13)
    sampler = StructuredSGLD(
        pair, step_size=STEP, buffer_size=size, freeze_buffer_after_warmup=True, jit=True
    )
    result = sampler.run(num_samples=draws, warmup_steps=300, num_chains=CHAINS)
    x = result.samples["a"][:, skip:]  # r^20 = 6e-7: the switch to the frozen target is over
    buffer = result.state.aux["buffer"]
    assert int(result.state.aux["buffer_count"]) == size
    b_mean, b_var = buffer[..., 1].mean(0), buffer[..., 1].var(0, unbiased=False)
    p_aa, p_ab = float(PREC[0, 0]), float(PREC[0, 1])
    r = 1 - STEP * p_aa / 2
    centre = -p_ab / p_aa * b_mean
    sigma2 = (STEP + STEP**2 / 4 * p_ab**2 * b_var) / (1 - r**2)
    length = draws - skip
    finite = (1 + r) / (1 - r) - 2 * r * (1 - r**length) / (length * (1 - r) ** 2)
    var, var_se, s0, s0_se = chain_moments(x, centre)
    assert abs(var - float(sigma2.mean())) < 4 * var_se, (var, float(sigma2.mean()), var_se)
    assert abs(s0 - float(sigma2.mean()) * finite) < 4 * s0_se, (s0, s0_se)
    iat = s0 / var
    assert (1 + r) / (1 - r) == pytest.approx(2.90, abs=0.01)
    sgld_var, _, sgld_s0, _ = chain_moments(sgld_pair)
    assert iat < sgld_s0 / sgld_var / 10, (iat, sgld_s0 / sgld_var)
    # the offsets are real: chains disagree by more than their own Monte Carlo error
    assert float(centre.std()) > 5 * math.sqrt(float(sigma2.mean()) * (1 + r) / (1 - r) / length)


# --------------------------------------------------------------------------- 2. the gradient


def _state_with_buffer(sampler, position, buffer):
    """A state at ``position`` (C, D) whose ring buffer holds ``buffer`` (L, C, D)."""
    state = sampler.init(num_chains=position.shape[0])
    state.position = position.clone()
    state.aux["buffer"].copy_(buffer)
    state.aux["buffer_count"].fill_(buffer.shape[0])
    return state


def test_structured_gradient_is_the_expected_gradient_over_independent_buffer_draws():
    # Three coordinates of one site split in three groups, a Gaussian with precision P: group
    # k's gradient is -(P_kk v_k + sum_j P_kj v~_j), each v~_j drawn from the buffer
    # *independently* (a draw from the product of the buffers' marginals): mean
    # -(P_kk v_k + sum_j P_kj vbar_j), variance sum_j P_kj^2 s2_j. The buffer's v_1 and v_2
    # are identical, so a joint draw (one index for both) would give group 0 the variance
    # (P_01 + P_02)^2 s2 instead. Chains are the repetitions.
    cov = torch.tensor([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]], dtype=D64)
    prec = torch.linalg.inv(cov)

    def triple():
        pyro.sample("v", dist.MultivariateNormal(torch.zeros(3, dtype=D64), cov))

    chains, size = 4000, 8
    sampler = StructuredSGLD(triple, split={"v": 3}, buffer_size=size)
    column = torch.linspace(-1.5, 2.0, size, dtype=D64)
    entries = torch.stack([0.3 * column, column, column], -1)  # (L, 3)
    buffer = entries.unsqueeze(1).expand(size, chains, 3)
    position = torch.tensor([0.4, -0.3, 0.8], dtype=D64).expand(chains, 3)
    state = _state_with_buffer(sampler, position, buffer)
    _, grad = sampler.gradient(state)
    means, spreads = entries.mean(0), entries.var(0, unbiased=False)
    for k in range(3):
        others = [j for j in range(3) if j != k]
        expected = -(prec[k, k] * position[0, k] + sum(prec[k, j] * means[j] for j in others))
        variance = float(sum(prec[k, j] ** 2 * spreads[j] for j in others))
        got = grad[:, k]
        assert abs(float(got.mean() - expected)) < 4 * math.sqrt(variance / chains)
        assert float(got.var()) == pytest.approx(variance, rel=4 * math.sqrt(2 / chains))
    joint = float((prec[0, 1] + prec[0, 2]) ** 2 * spreads[1])
    independent = float((prec[0, 1] ** 2 + prec[0, 2] ** 2) * spreads[1])
    assert joint > 1.3 * independent  # so the variance check above tells them apart


def test_dropout_gradient_is_unbiased_for_the_expected_gradient_given_the_group_is_kept():
    # dropout p: in each row b keeps its current value with probability 1 - p, otherwise it is a
    # buffer draw; a's gradient is (1 / ((1 - p) S)) sum_s m_s h_s, m_s ~ Bernoulli(1 - p) (a is
    # kept) and h_s = -(P_aa a + P_ab r_s). Its mean is -(P_aa a + P_ab ((1 - p) b + p bbar))
    # and its variance [(1 - p) E h^2 - (1 - p)^2 (E h)^2] / ((1 - p)^2 S).
    chains, size, samples, p = 4000, 6, 4, 0.3
    sampler = StructuredSGLD(pair, buffer_size=size, num_buffer_samples=samples, dropout=p)
    values = torch.linspace(-1.0, 1.5, size, dtype=D64)
    buffer = torch.stack([values, values.flip(0)], -1).unsqueeze(1).expand(size, chains, 2)
    position = torch.tensor([0.4, -0.7], dtype=D64).expand(chains, 2)
    state = _state_with_buffer(sampler, position, buffer)
    _, grad = sampler.gradient(state)
    p_aa, p_ab = float(PREC[0, 0]), float(PREC[0, 1])
    a, b = 0.4, -0.7
    drawn = values.flip(0)
    r_mean = (1 - p) * b + p * float(drawn.mean())
    r_sq = (1 - p) * b**2 + p * float((drawn**2).mean())
    h_mean = -(p_aa * a + p_ab * r_mean)
    h_sq = (p_aa * a) ** 2 + 2 * p_aa * a * p_ab * r_mean + p_ab**2 * r_sq
    variance = ((1 - p) * h_sq - (1 - p) ** 2 * h_mean**2) / ((1 - p) ** 2 * samples)
    got = grad[:, 0]
    assert abs(float(got.mean()) - h_mean) < 4 * math.sqrt(variance / chains)
    assert float(got.var()) == pytest.approx(variance, rel=4 * math.sqrt(2 / chains))


def test_dropout_that_keeps_every_group_is_the_exact_gradient():
    sampler = StructuredSGLD(pair, buffer_size=3, num_buffer_samples=2, dropout=1e-12)
    position = torch.tensor([[0.4, -0.7], [1.1, 0.2]], dtype=D64)
    buffer = torch.randn(3, 2, 2, dtype=D64, generator=torch.Generator().manual_seed(3))
    state = _state_with_buffer(sampler, position, buffer)
    log_p, grad = sampler.gradient(state)
    exact_log_p, exact = sampler.potential().value_and_grad(position)
    torch.testing.assert_close(grad, exact)
    torch.testing.assert_close(log_p, exact_log_p)


def test_plain_steps_use_the_ordinary_gradient():
    sampler = StructuredSGLD(pair, buffer_size=4, plain_steps=3)
    state = sampler.init(num_chains=5)
    _, grad = sampler.gradient(state)
    _, exact = sampler.potential().value_and_grad(state.position)
    torch.testing.assert_close(grad, exact)
    state.step = 3
    _, grad = sampler.gradient(state)
    assert grad.shape == (5, 2)
    # with one buffer entry (the start) and the chains at the start, the rows coincide with
    # the position itself: the structured gradient is the exact one there too
    torch.testing.assert_close(grad, exact)


def test_composite_rows_use_their_chains_minibatch(monkeypatch):
    # a subsampling model, 3 chains, 2 groups x 3 buffer samples: 3 + 18 rows per evaluation
    y_data = torch.randn(50, dtype=D64, generator=torch.Generator().manual_seed(4))

    def model(y):
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0))
        b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=D64), 1.0))
        with pyro.plate("data", len(y), subsample_size=5) as idx:
            pyro.sample("y", dist.Normal(a + b, 1.0), obs=y[idx])

    chains, samples = 3, 3
    sampler = StructuredSGLD(model, buffer_size=4, num_buffer_samples=samples)
    state = sampler.init(y_data, num_chains=chains)
    state.aux["buffer"].copy_(torch.randn_like(state.aux["buffer"]))
    state.aux["buffer_count"].fill_(4)
    potential = sampler.potential(y_data)
    seen = {}
    original = potential.value_and_grad

    def spy(z, indices=None):
        seen["points"], seen["indices"] = z, indices
        return original(z, indices)

    monkeypatch.setattr(potential, "value_and_grad", spy)
    sampler.gradient(state, y_data)
    (idx,) = seen["indices"]
    rows_per_chain = 2 * samples
    assert seen["points"].shape[0] == idx.shape[0] == chains * (1 + rows_per_chain)
    composite = idx[chains:].reshape(chains, rows_per_chain, 5)
    assert torch.equal(composite, idx[:chains, None].expand(-1, rows_per_chain, -1))
    assert not torch.equal(idx[0], idx[1])  # the chains' own minibatches (P(equal) ~ 5e-7)


# --------------------------------------------------------------------------- 3. ring buffer


def test_ring_buffer_keeps_the_last_thinned_positions_in_bounded_memory():
    size, thin, steps = 4, 3, 20
    pyro.set_rng_seed(1)
    sampler = StructuredSGLD(pair, step_size=0.05, buffer_size=size, buffer_thinning=thin)
    result = sampler.run(num_samples=steps, warmup_steps=0, num_chains=3)
    state = result.state
    positions = torch.stack(state.draws + [state.position])  # p_0 ... p_20, (21, C, 2)
    buffer = state.aux["buffer"]
    assert buffer.shape == (size, 3, 2)  # fixed, whatever the number of steps
    assert int(state.aux["buffer_count"]) == size
    # the start p_0 is entry 0, p_3 entry 1, ...: entry i sits in slot i mod size; the last
    # four entries are p_9, p_12, p_15, p_18
    for t in (9, 12, 15, 18):
        assert torch.equal(buffer[(t // thin) % size], positions[t]), t
    assert result.info["buffer_entries"] == size


def test_buffer_fills_from_the_start_and_counts_its_entries():
    sampler = StructuredSGLD(pair, step_size=0.05, buffer_size=100, buffer_thinning=2)
    result = sampler.run(num_samples=9, warmup_steps=0, num_chains=2)
    assert int(result.state.aux["buffer_count"]) == 1 + 9 // 2  # the start plus steps 2 ... 8
    assert torch.equal(result.state.aux["buffer"][0], result.state.draws[0])


def test_one_site_split_in_two_equals_two_sites():
    init = torch.tensor([[0.3, -0.2], [1.0, 0.8], [-0.5, -0.9]], dtype=D64)
    results = []
    for model, kwargs in ((pair, {}), (pair_as_one_site, {"split": {"z": 2}})):
        pyro.set_rng_seed(4)
        sampler = StructuredSGLD(model, step_size=0.05, buffer_size=7, init=init, **kwargs)
        results.append(sampler.run(num_samples=60, warmup_steps=10, num_chains=3))
    two, one = results
    z = torch.stack([two.samples["a"], two.samples["b"]], -1)
    torch.testing.assert_close(one.samples["z"], z, rtol=0, atol=1e-10)
    assert one.info["groups"] == {"z[0]": ("z[0]",), "z[1]": ("z[1]",)}


# --------------------------------------------------------------------------- 4. groups


def _layout(model, *args, **kwargs):
    return StructuredSGLD(model, **kwargs).layout(*args)


def net(x):
    # priors follow the data's device and dtype (the CUDA smoke test runs this on the GPU)
    w1 = pyro.sample("w1", dist.Normal(x.new_zeros(3, 4), 1.0).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(x.new_zeros(4), 1.0).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(x.new_zeros(4), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.HalfNormal(x.new_tensor(1.0)))
    # inside the chain batch w1 is (C, 1, 3, 4), b1 (C, 1, 4): the 1 is the data plate's place
    hidden = torch.tanh((x.unsqueeze(-1) * w1).sum(-2) + b1)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((hidden * w2).sum(-1), scale), obs=x[:, 0])


X_NET = torch.randn(10, 3, dtype=D64, generator=torch.Generator().manual_seed(0))


def net_init(chains: int) -> dict[str, torch.Tensor]:
    """Small weights and a unit noise scale (a prior draw of the scale can be tiny)."""
    gen = torch.Generator().manual_seed(5)
    return {
        "w1": 0.1 * torch.randn(chains, 3, 4, generator=gen, dtype=D64),
        "b1": torch.zeros(chains, 4, dtype=D64),
        "w2": 0.1 * torch.randn(chains, 4, generator=gen, dtype=D64),
        "scale": torch.ones(chains, dtype=D64),
    }


def test_groups_by_site_by_dict_and_remainder():
    layout = _layout(net, X_NET)  # None: one group per site
    assert layout.names == ("w1", "b1", "w2", "scale")
    assert layout.column_group.tolist() == [0] * 12 + [1] * 4 + [2] * 4 + [3]
    layout = _layout(net, X_NET, groups={"in": ["w1", "b1"], "out": ["w2"]})
    assert layout.names == ("in", "out", "rest") and layout.members[2] == ("scale",)
    layout = _layout(net, X_NET, groups=[["w1", "b1"], "w2", "scale"])
    assert layout.names == ("w1+b1", "w2", "scale")
    assert layout.columns("w2").tolist() == list(range(16, 20))


def test_split_by_count_and_by_labels():
    layout = _layout(net, X_NET, groups=[["w2", "b1"]], split={"w1": 3})
    assert layout.names == ("w2+b1", "w1[0]", "w1[1]", "w1[2]", "rest")
    assert layout.column_group[:12].tolist() == [1] * 4 + [2] * 4 + [3] * 4
    by_unit = torch.arange(4).expand(3, 4)  # a piece per hidden unit (column of w1)
    layout = _layout(
        net, X_NET, groups={"unit0": ["w1[0]", "b1"]}, split={"w1": by_unit}, remainder=True
    )
    assert layout.names == ("unit0", "w1[1]", "w1[2]", "w1[3]", "rest")
    assert layout.column_group[:12].reshape(3, 4).tolist() == [[0, 1, 2, 3]] * 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"groups": [["w1"], ["w3"]]},
            r"group 'w3' names 'w3', which is not a latent site.*\['w1'",
        ),
        ({"groups": [["w1"], ["w2"]], "remainder": False}, r"\['b1', 'scale'\] are in no group"),
        ({"groups": [["w1", "b1", "w2", "scale"]]}, "only one group"),
        ({"split": {"w9": 2}}, r"split names 'w9', which is not a latent site"),
        ({"split": {"w1": 13}}, r"split\['w1'\] = 13 asks for more pieces than .* 12"),
        ({"split": {"w1": 2}, "groups": [["w1"]]}, r"names site 'w1', which is split into 2"),
        ({"split": {"w1": 2}, "groups": [["w1[5]"]]}, r"'w1\[5\]'.* split into 2 pieces"),
        ({"split": {"w1": torch.tensor([0, 2])}}, r"split\['w1'\] has shape \(2,\)"),
        ({"split": {"w1": torch.tensor([0] * 6 + [2] * 6)}}, r"every label 0, ..., n - 1"),
    ],
)
def test_bad_groups_are_refused_by_name_before_sampling(kwargs, match, monkeypatch):
    sampler = StructuredSGLD(net, **kwargs)
    monkeypatch.setattr(sampler, "step", lambda *a, **k: pytest.fail("sampling started"))
    with pytest.raises(ValueError, match=match):
        sampler.run(X_NET, num_samples=5, warmup_steps=0, num_chains=2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"groups": "w1"}, "groups must be a list of groups"),
        ({"groups": {"a": ["w1"], "b": []}}, r"group 'b' is empty"),
        ({"groups": [["w1", "w1"]]}, r"'w1' is twice in group"),
        ({"groups": {"a": ["w1", "b1"], "b": ["b1"]}}, r"'b1' is in groups 'a' and 'b'"),
        ({"groups": [["w1"], [3]]}, "must be a site name or a list of site names"),
        ({"groups": []}, "groups is empty"),
        ({"buffer_size": 0}, "buffer_size must be an integer >= 1"),
        ({"buffer_thinning": 1.5}, "buffer_thinning must be an integer >= 1"),
        ({"num_buffer_samples": 0}, "num_buffer_samples must be an integer >= 1"),
        ({"plain_steps": -1}, "plain_steps must be an integer >= 0"),
        ({"dropout": 1.0}, r"dropout must be None or a probability in \(0, 1\)"),
        ({"dropout": 0}, r"dropout must be None or a probability in \(0, 1\)"),
        ({"split": ["w1"]}, "split must be a dict"),
        ({"step_size": -1.0}, "step_size must be positive"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        StructuredSGLD(net, **kwargs)


def test_a_state_without_buffer_is_refused():
    state = SGLD(pair).init(num_chains=2)
    with pytest.raises(ValueError, match="the state has no ring buffer"):
        StructuredSGLD(pair).run(num_samples=2, warmup_steps=0, num_chains=2, state=state)
    state = StructuredSGLD(pair, buffer_size=5).init(num_chains=2)
    with pytest.raises(ValueError, match="buffer_size=6"):
        StructuredSGLD(pair, buffer_size=6).run(num_samples=2, warmup_steps=0, state=state)


def test_discrete_site_is_refused_by_name():
    def model():
        pyro.sample("coin", dist.Bernoulli(torch.tensor(0.3)))
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ModelError, match=r"\['coin'\] are discrete"):
        StructuredSGLD(model).run(num_samples=2, warmup_steps=0, num_chains=2)


# --------------------------------------------------------------------------- 5. variants, io

VARIANTS = {
    "sgld": (StructuredSGLD, {"step_size": 0.02}),
    "sgld-dropout": (StructuredSGLD, {"step_size": 0.02, "dropout": 0.5, "num_buffer_samples": 3}),
    "psgld": (StructuredPSGLD, {"step_size": 0.01}),
    "sghmc": (StructuredSGHMC, {"step_size": 0.005, "friction": 0.2}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_sample_a_network_posterior(variant):
    cls, kwargs = VARIANTS[variant]
    pyro.set_rng_seed(2)
    sampler = cls(net, groups=[["w1", "b1"], ["w2"]], buffer_size=20, init=net_init(3), **kwargs)
    result = sampler.run(X_NET, num_samples=40, warmup_steps=20, num_chains=3)
    assert result.samples["w1"].shape == (3, 40, 3, 4)
    assert (result.samples["scale"] > 0).all()
    assert torch.isfinite(result.sample_stats["lp"]).all()
    assert result.info["groups"] == {"w1+b1": ("w1", "b1"), "w2": ("w2",), "rest": ("scale",)}
    assert result.engine == cls.default_name
    draws = sampler.buffer_draws(result.state, 15, X_NET)
    assert draws.samples["w2"].shape == (3, 15, 4)
    result.to_arviz()


class Crash(RuntimeError):
    pass


RUN = {"num_samples": 25, "warmup_steps": 10, "num_chains": 3, "thinning": 2}  # 60 steps


def _sampler(variant, path):
    cls, kwargs = VARIANTS[variant]
    return cls(
        net,
        buffer_size=7,
        buffer_thinning=2,
        init=net_init(3),
        checkpoint=path,
        checkpoint_every=10,
        **kwargs,
    )


@pytest.mark.parametrize("variant", ["sgld-dropout", "sghmc"])
def test_resume_after_crash_equals_uninterrupted_run(variant, tmp_path, monkeypatch):
    pyro.set_rng_seed(21)
    reference = _sampler(variant, tmp_path / "reference.ckpt").run(X_NET, **RUN)
    path = tmp_path / "run.ckpt"
    pyro.set_rng_seed(21)
    sampler = _sampler(variant, path)
    original, count = sampler.step, {"n": 0}

    def step(state, *args, **kwargs):
        if count["n"] == 37:
            raise Crash("simulated crash")
        count["n"] += 1
        return original(state, *args, **kwargs)

    monkeypatch.setattr(sampler, "step", step)
    with pytest.raises(Crash):
        sampler.run(X_NET, **RUN)
    payload = load_checkpoint(path, sampler.name)
    assert payload["step"] == 30 and payload["aux"]["buffer"].shape == (7, 3, 21)
    pyro.set_rng_seed(999)  # the checkpoint's RNG state must win
    resumed = _sampler(variant, path).run(X_NET, resume=True, **RUN)
    for site in reference.samples:
        assert torch.equal(resumed.samples[site], reference.samples[site]), site
    assert torch.equal(resumed.sample_stats["lp"], reference.sample_stats["lp"])
    assert torch.equal(resumed.state.aux["buffer"], reference.state.aux["buffer"])


def test_float32_model_gives_float32_draws_and_buffer():
    def model():
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0), 1.0))
        pyro.sample("b", dist.Normal(0.9 * a, 0.5))

    result = StructuredSGLD(model, step_size=0.05, buffer_size=5).run(
        num_samples=10, warmup_steps=5, num_chains=2
    )
    assert result.samples["a"].dtype == torch.float32
    assert result.state.aux["buffer"].dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_smoke():
    x = X_NET.cuda()
    # the CPU tests' initial point: a prior draw of the noise scale can be tiny and diverge
    init = {name: value.cuda() for name, value in net_init(2).items()}
    result = StructuredSGLD(net, step_size=0.01, buffer_size=5, dropout=0.3, init=init).run(
        x, num_samples=10, warmup_steps=5, num_chains=2
    )
    assert result.samples["w1"].device.type == "cuda"
    assert result.state.aux["buffer"].device.type == "cuda"


def test_build_layout_is_usable_on_its_own():
    sampler = StructuredSGLD(pair)
    layout = build_layout(sampler.potential(), None, {}, True, "x")
    assert layout.names == ("a", "b") and layout.num_groups == 2
