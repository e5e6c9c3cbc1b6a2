"""Tests of federated SGLD (``pplx.inference.federated``): FSGLD with conducive gradients and the
distributed-SGLD baseline, in the single-process simulation and across ``torch.distributed``
workers.

The statistical test is the paper's: the mean of a 2-D Gaussian with known covariance and a
Gaussian prior, with non-IID shards (each shard holds one cluster of the data), so the posterior
is closed-form. Every local step is linear in the position, so the exact stationary moments of
both samplers at a finite step size follow from a switching linear system (each round picks a
shard independently of the position): :func:`switching_moments`. The tests check that FSGLD's
draws match the posterior (its discretisation bias is computed and well below the Monte Carlo
error) and that DSGLD's draws match *its own* predicted stationary distribution, which is far
from the posterior. Standard errors come from batch means over independent chains (each chain
picks its own shard and draws its own noise; with whole-shard gradients nothing is shared).

This file is also the worker of the distributed test: ``torchrun --nproc-per-node 2
tests/inference/test_federated.py OUT`` runs :func:`_distributed_worker` on each rank.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from pplx.inference import ModelError, Potential, Result
from pplx.inference.federated import (
    DSGLD,
    FSGLD,
    FederatedState,
    LocalGaussian,
    init_distributed,
)

D64 = torch.float64

# --------------------------------------------------------------------------- the model

SIGMA = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=D64)  # known covariance of each point
WHITEN = torch.linalg.inv(torch.linalg.cholesky(SIGMA))
PRIOR_SD = 3.0


def gaussian_mean_model(x):
    """theta ~ N(0, 3^2 I); x_i ~ N(theta, SIGMA).

    The likelihood is written with whitened data, N(W x_i; W theta, I) with W = chol(SIGMA)^-1,
    which is the same density up to a constant and cheaper to evaluate than
    MultivariateNormal (the test runs thousands of steps).
    """
    theta = pyro.sample("theta", dist.Normal(torch.zeros(2, dtype=D64), PRIOR_SD).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(theta @ WHITEN.T, 1.0).to_event(1), obs=x @ WHITEN.T)


def make_shards(centers, sizes, seed, spread=0.5):
    """Non-IID shards: shard s holds ``sizes[s]`` points around ``centers[s]``."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.tensor(c, dtype=D64) + spread * torch.randn(n, 2, generator=gen, dtype=D64)
        for c, n in zip(centers, sizes)
    ]


def posterior(shards):
    """Exact posterior (mean, covariance, precision) of theta given all shards."""
    x = torch.cat(shards)
    sigma_inv = torch.linalg.inv(SIGMA)
    precision = torch.eye(2, dtype=D64) / PRIOR_SD**2 + x.shape[0] * sigma_inv
    cov = torch.linalg.inv(precision)
    return cov @ (sigma_inv @ x.sum(0)), cov, precision


CENTERS = [(2.0, 2.0), (-2.0, 2.0), (-2.0, -2.0), (2.0, -2.0)]
SIZES = [40, 60, 80, 120]
SHARDS = make_shards(CENTERS, SIZES, seed=0)
POST_MEAN, POST_COV, POST_PREC = posterior(SHARDS)
SIGMA_INV = torch.linalg.inv(SIGMA)


# --------------------------------------------------------------------------- exact predictions


def switching_moments(precisions, shifts, probabilities, eps, local_steps):
    """Stationary mean and covariance of the positions at every local step of a federated SGLD
    whose local gradient at shard s is ``shifts[s] - precisions[s] @ z`` (exact, linear).

    A round starts at z, picks shard s with probability f_s and takes L steps
    z <- A_s z + c_s + N(0, eps I), A_s = I - eps/2 Lambda_s, c_s = eps/2 d_s. After l steps
    z_l = P_l z + e_l + noise with covariance Q_l (recursions below). The round-boundary mean m
    and second moment M solve m = E_s[P_L m + e_L] and
    M = E_s[P_L M P_L' + P_L m e_L' + e_L m' P_L' + e_L e_L' + Q_L]; the kept draws are the
    positions z_0 .. z_{L-1} of every round, so their marginal is the mixture over s and l.
    """
    n = precisions[0].shape[0]
    eye = torch.eye(n, dtype=D64)
    walks = []
    for precision, shift in zip(precisions, shifts):
        a, c = eye - eps / 2 * precision, eps / 2 * shift
        power, offset, noise = eye, torch.zeros(n, dtype=D64), torch.zeros(n, n, dtype=D64)
        walk = []
        for _ in range(local_steps + 1):
            walk.append((power, offset, noise))
            power, offset, noise = a @ power, a @ offset + c, a @ noise @ a.T + eps * eye
        walks.append(walk)
    f = probabilities
    p_end = sum(fs * w[-1][0] for fs, w in zip(f, walks))
    e_end = sum(fs * w[-1][1] for fs, w in zip(f, walks))
    m = torch.linalg.solve(eye - p_end, e_end)
    kron = sum(fs * torch.kron(w[-1][0], w[-1][0]) for fs, w in zip(f, walks))
    rest = sum(
        fs * (torch.outer(p @ m, e) + torch.outer(e, p @ m) + torch.outer(e, e) + q)
        for fs, (p, e, q) in ((fs, w[-1]) for fs, w in zip(f, walks))
    )
    big = torch.linalg.solve(torch.eye(n * n, dtype=D64) - kron, rest.reshape(-1)).reshape(n, n)
    mean, second = torch.zeros(n, dtype=D64), torch.zeros(n, n, dtype=D64)
    for fs, walk in zip(f, walks):
        for p, e, q in walk[:-1]:
            mu = p @ m + e
            mean += fs / local_steps * mu
            second += (
                fs
                / local_steps
                * (p @ big @ p.T + torch.outer(p @ m, e) + torch.outer(e, p @ m) + q)
            )
            second += fs / local_steps * torch.outer(e, e)
    return mean, second - torch.outer(mean, mean)


def chain_moments(z):
    """Pooled mean and covariance of draws ``(C, S, d)`` and their standard errors.

    Batch means over chains: chains share no randomness here, so each chain's average is an
    independent batch and SE = sd over chains / sqrt(C), whatever the autocorrelation.
    """
    chains = z.shape[0]
    per_chain_mean = z.mean(1)
    mean = per_chain_mean.mean(0)
    dev = z - mean
    per_chain_cov = (dev.unsqueeze(-1) * dev.unsqueeze(-2)).mean(1)
    root = math.sqrt(chains)
    return (
        mean,
        per_chain_mean.std(0) / root,
        per_chain_cov.mean(0),
        per_chain_cov.std(0) / root,
    )


def wide_start(chains, seed, scale=3.0):
    """Starting points spread ``scale`` times wider than the posterior (so the test needs the
    sampler to converge, not just to stay where exact draws put it)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(chains, 2, generator=gen, dtype=D64)
    return POST_MEAN + scale * z @ torch.linalg.cholesky(POST_COV).T


# --------------------------------------------------------------------------- 1. the estimator


def test_laplace_approximation_of_gaussian_shards_is_exact():
    qs = FSGLD(gaussian_mean_model).approximate(SHARDS)
    assert len(qs) == 4 and all(isinstance(q, LocalGaussian) for q in qs)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 2, generator=gen, dtype=D64)
    for shard, q in zip(SHARDS, qs):
        # q_s(theta) = sum_i log N(x_i; theta, SIGMA) up to a constant:
        # precision N_s SIGMA^-1 and linear term SIGMA^-1 sum_i x_i
        torch.testing.assert_close(q.precision, shard.shape[0] * SIGMA_INV, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(q.linear, SIGMA_INV @ shard.sum(0), rtol=1e-9, atol=1e-9)
        loglik = dist.MultivariateNormal(z.unsqueeze(1), SIGMA).log_prob(shard).sum(-1)
        diff = q.log_density(z) - loglik
        torch.testing.assert_close(diff, diff[0].expand(6), rtol=0, atol=1e-8)
        torch.testing.assert_close(q.grad(z), (SIGMA_INV @ (shard.sum(0) - len(shard) * z).T).T)


def test_conducive_gradient_is_the_full_data_gradient_and_dsgld_is_unbiased_on_average():
    gen = torch.Generator().manual_seed(2)
    z = POST_MEAN + 0.3 * torch.randn(5, 2, generator=gen, dtype=D64)
    exact_grad = -(z - POST_MEAN) @ POST_PREC
    full = Potential(gaussian_mean_model, (torch.cat(SHARDS),))
    exact_lp = full.log_density(z)

    fsgld = FSGLD(gaussian_mean_model, shard_probabilities="uniform")
    state = fsgld.init(SHARDS, num_chains=3)
    dsgld = DSGLD(gaussian_mean_model, shard_probabilities="uniform")
    dstate = dsgld.init(SHARDS, num_chains=3)
    assert dstate.approximations is None and len(state.approximations) == 4
    average = torch.zeros_like(z)
    for s, shard in enumerate(SHARDS):
        # FSGLD at any shard: the full-data gradient and log density (Gaussian shards, q exact)
        lp, grad = fsgld.gradient(state, s, z)
        torch.testing.assert_close(grad, exact_grad, rtol=1e-9, atol=1e-8)
        torch.testing.assert_close(lp, exact_lp, rtol=1e-12, atol=1e-8)
        # DSGLD: grad log prior + (1 / f_s) grad log p(x_s | theta), wrong at every shard
        lp_d, grad_d = dsgld.gradient(dstate, s, z)
        loglik_grad = (shard.sum(0) - len(shard) * z) @ SIGMA_INV
        torch.testing.assert_close(grad_d, -z / PRIOR_SD**2 + 4 * loglik_grad)
        assert (grad_d - exact_grad).abs().max() > 100
        average += grad_d / 4
    torch.testing.assert_close(average, exact_grad, rtol=1e-9, atol=1e-8)  # unbiased over s

    # A minibatch adds (N_s / (f_s n)) SIGMA^-1 sum_batch (x_i - mean of the shard), whatever z
    shard, indices = SHARDS[2], torch.tensor([3, 17, 41, 60, 79])
    _, grad = fsgld.gradient(state, 2, z, indices=indices)
    noise = 80 / (0.25 * 5) * (shard[indices] - shard.mean(0)).sum(0) @ SIGMA_INV
    torch.testing.assert_close(grad, exact_grad + noise, rtol=1e-9, atol=1e-8)


# --------------------------------------------------------------------------- 2. the statistics


def test_fsgld_matches_the_posterior_and_dsgld_does_not():
    # Non-IID shards (one cluster each, 40-120 points), uniform shard choice, 10 local steps per
    # round, whole-shard gradients. eps * lambda_max = 0.05: FSGLD's discretisation inflates the
    # variance by 0.9 %, under half a standard error here (checked below).
    local_steps, chains = 10, 384
    eps = 0.05 / float(torch.linalg.eigvalsh(POST_PREC).max())
    probabilities = [0.25] * 4
    settings = {"step_size": eps, "local_steps": local_steps, "shard_probabilities": "uniform"}

    # Exact stationary moments of the two samplers (same recursion, their own local gradients).
    fsgld_mean, fsgld_cov = switching_moments(
        [POST_PREC] * 4, [POST_PREC @ POST_MEAN] * 4, probabilities, eps, local_steps
    )
    prior_prec = torch.eye(2, dtype=D64) / PRIOR_SD**2
    dsgld_mean, dsgld_cov = switching_moments(
        [prior_prec + len(x) / 0.25 * SIGMA_INV for x in SHARDS],
        [SIGMA_INV @ x.sum(0) / 0.25 for x in SHARDS],
        probabilities,
        eps,
        local_steps,
    )
    torch.testing.assert_close(fsgld_mean, POST_MEAN)

    pyro.set_rng_seed(0)
    fsgld = FSGLD(gaussian_mean_model, init=wide_start(chains, 1), **settings).run(
        SHARDS, num_samples=400, warmup_steps=300, num_chains=chains
    )
    pyro.set_rng_seed(0)
    # DSGLD's log-density estimate (1 / f_s) log p(x_s | theta) swings by thousands of nats as
    # its chains wander between the clusters, which the divergence check would flag.
    dsgld = DSGLD(
        gaussian_mean_model, init=wide_start(chains, 1), divergence_threshold=math.inf, **settings
    ).run(SHARDS, num_samples=300, warmup_steps=200, num_chains=chains)

    z = fsgld.get_samples(group_by_chain=True)["theta"]
    mean, mean_se, cov, cov_se = chain_moments(z)
    assert ((fsgld_cov - POST_COV).abs() < 0.5 * cov_se).all(), (fsgld_cov - POST_COV) / cov_se
    assert ((mean - POST_MEAN).abs() < 4 * mean_se).all(), (mean - POST_MEAN) / mean_se
    assert ((cov - POST_COV).abs() < 4 * cov_se).all(), (cov - POST_COV) / cov_se

    zd = dsgld.get_samples(group_by_chain=True)["theta"]
    d_mean, d_mean_se, d_cov, d_cov_se = chain_moments(zd)
    # DSGLD follows its own stationary distribution ...
    assert ((d_mean - dsgld_mean).abs() < 4 * d_mean_se).all(), (d_mean - dsgld_mean) / d_mean_se
    assert ((d_cov - dsgld_cov).abs() < 4 * d_cov_se).all(), (d_cov - dsgld_cov) / d_cov_se
    # ... which is not the posterior: its variances are ~100x too large, far beyond its error,
    # and (shards of unequal size picked uniformly) its mean is off by about a posterior sd
    ratio = d_cov.diagonal() / POST_COV.diagonal()
    assert (ratio > 30).all(), ratio
    assert ((d_cov - POST_COV).diagonal() > 20 * d_cov_se.diagonal()).all()
    sd = POST_COV.diagonal().sqrt()
    assert ((dsgld_mean - POST_MEAN).abs() / sd).max() > 0.5

    print(
        "\nposterior mean", POST_MEAN.tolist(), "sd", sd.tolist(),
        "\nFSGLD mean error / posterior sd", ((mean - POST_MEAN) / sd).tolist(),
        "+-", (mean_se / sd).tolist(),
        "\nFSGLD var / posterior var", (cov.diagonal() / POST_COV.diagonal()).tolist(),
        "+-", (cov_se.diagonal() / POST_COV.diagonal()).tolist(),
        "\nFSGLD cov - posterior cov (in SE)", ((cov - POST_COV) / cov_se).tolist(),
        "\nDSGLD mean error / posterior sd", ((d_mean - POST_MEAN) / sd).tolist(),
        "+-", (d_mean_se / sd).tolist(), "(predicted", ((dsgld_mean - POST_MEAN) / sd).tolist(),
        ")\nDSGLD var / posterior var", ratio.tolist(),
        "+-", (d_cov_se.diagonal() / POST_COV.diagonal()).tolist(),
        "(predicted", (dsgld_cov.diagonal() / POST_COV.diagonal()).tolist(), ")",
        "\nESS FSGLD", fsgld.effective_sample_size()["theta"].tolist(),
        "DSGLD", dsgld.effective_sample_size()["theta"].tolist(),
        "wall", fsgld.wall_time, dsgld.wall_time,
    )  # fmt: skip


def test_single_shard_fsgld_is_dsgld():
    # One shard, f = 1: the conducive terms sum_k q_k - q_s / f_s cancel exactly.
    runs = []
    for cls in (FSGLD, DSGLD):
        pyro.set_rng_seed(4)
        runs.append(
            cls(gaussian_mean_model, step_size=1e-3, local_steps=3, batch_size=10).run(
                [SHARDS[0]], num_samples=20, warmup_steps=5, num_chains=4
            )
        )
    assert torch.equal(runs[0].samples["theta"], runs[1].samples["theta"])
    assert runs[0].samples["theta"].std() > 0.01


# --------------------------------------------------------------------------- 3. distributed

DIST_SHARDS = make_shards([(1.5, 0.0), (-1.5, 0.5)], [30, 50], seed=5)
DIST_SETTINGS = {"step_size": 2e-3, "local_steps": 5, "batch_size": 10}
DIST_RUN = {"num_samples": 30, "warmup_steps": 12, "num_chains": 16, "thinning": 2}
DIST_SEED = 11


def _distributed_worker(out: str) -> None:
    """One rank of the distributed test (run by torchrun: ``python this_file.py OUT``)."""
    torch.set_num_threads(1)
    rank, world = init_distributed(timeout=60.0)
    try:
        results = {"world_size": world}
        # A rank with an empty shard: every rank fails, with the reason, instead of hanging.
        shard = DIST_SHARDS[rank] if rank == 0 else DIST_SHARDS[rank][:0]
        try:
            FSGLD(gaussian_mean_model, distributed=True).run(shard, num_samples=2, warmup_steps=0)
            results["empty"] = "no error"
        except Exception as error:  # noqa: BLE001 - reported to the test
            results["empty"] = f"{type(error).__name__}: {error}"
        # Ranks given different settings refuse to start (instead of hanging mid-run).
        try:
            FSGLD(gaussian_mean_model, distributed=True).run(
                DIST_SHARDS[rank], num_samples=2 + rank, warmup_steps=0
            )
            results["settings"] = "no error"
        except Exception as error:  # noqa: BLE001 - reported to the test
            results["settings"] = f"{type(error).__name__}: {error}"
        for cls in (FSGLD, DSGLD):
            pyro.set_rng_seed(DIST_SEED)
            result = cls(gaussian_mean_model, distributed=True, **DIST_SETTINGS).run(
                DIST_SHARDS[rank], **DIST_RUN
            )
            results[result.engine] = {
                "theta": result.samples["theta"],
                "lp": result.sample_stats["lp"],
                "shard": result.sample_stats["shard"],
                "info": result.info,
            }
        torch.save(results, f"{out}.rank{rank}")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this PyTorch build has no torch.distributed with the gloo backend",
)
def test_torchrun_with_two_gloo_workers_gives_the_simulation_draws(tmp_path):
    out = tmp_path / "draws"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PPLX_PROGRESS": "0"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        str(Path(__file__).resolve()),
        str(out),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    ranks = [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # the rank with no data names the problem; the other says which rank failed and why
    assert ranks[1]["empty"].startswith("ValueError: fsgld: shard 1 has no data")
    assert ranks[0]["empty"].startswith("RuntimeError: fsgld: another rank failed")
    assert "rank 1: ValueError: fsgld: shard 1 has no data" in ranks[0]["empty"]
    for rank in ranks:
        assert rank["settings"].startswith("ValueError: fsgld: the ranks were given different")
        assert "'num_samples': [2, 3]" in rank["settings"]

    for cls in (FSGLD, DSGLD):
        pyro.set_rng_seed(DIST_SEED)
        simulated = cls(gaussian_mean_model, **DIST_SETTINGS).run(DIST_SHARDS, **DIST_RUN)
        name = simulated.engine
        theta = simulated.samples["theta"]
        assert theta.shape == (16, 30, 2) and theta.std() > 0.01
        assert set(simulated.sample_stats["shard"].unique().tolist()) == {0, 1}
        for rank in ranks:
            got = rank[name]
            # same seed, same draws: bit for bit
            assert torch.equal(got["theta"], theta), (name, (got["theta"] - theta).abs().max())
            assert torch.equal(got["lp"], simulated.sample_stats["lp"])
            assert torch.equal(got["shard"], simulated.sample_stats["shard"])
            assert got["info"]["world_size"] == 2
            assert got["info"]["num_rounds"] == simulated.info["num_rounds"] == 15


def test_distributed_without_a_process_group_says_how_to_start_one(monkeypatch):
    sampler = FSGLD(gaussian_mean_model, distributed=True)
    with pytest.raises(
        RuntimeError, match="initialised torch.distributed process group.*torchrun"
    ):
        sampler.run(SHARDS[0], num_samples=2, warmup_steps=0)
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match=r"not set\. Launch the script with torchrun"):
        init_distributed()


# --------------------------------------------------------------------------- 4. results, loop


def test_result_layout_rounds_and_thinning():
    # 7 warm-up steps + 5 draws every 3rd step = 22 steps = 5 rounds of 4 and a last one of 2
    runs = {}
    for thinning, samples in ((3, 5), (1, 15)):
        pyro.set_rng_seed(3)
        sampler = FSGLD(gaussian_mean_model, step_size=1e-3, local_steps=4, batch_size=8)
        runs[thinning] = sampler.run(
            SHARDS, num_samples=samples, warmup_steps=7, num_chains=6, thinning=thinning
        )
    result, full = runs[3], runs[1]
    assert isinstance(result, Result) and result.engine == "fsgld"
    assert result.samples["theta"].shape == (6, 5, 2)
    assert result.info["num_steps"] == 22 and result.info["num_rounds"] == 6
    assert result.info["num_shards"] == 4 and result.info["shard_sizes"] == SIZES
    torch.testing.assert_close(
        torch.tensor(result.info["shard_probabilities"], dtype=D64),
        torch.tensor(SIZES, dtype=D64) / 300,
    )
    assert set(result.sample_stats) == {"lp", "step_size", "shard", "diverging"}
    for value in result.sample_stats.values():
        assert value.shape == (6, 5)
    shard = result.sample_stats["shard"]
    assert shard.dtype == torch.int64 and ((shard >= 0) & (shard < 4)).all()
    assert (result.sample_stats["step_size"] == 1e-3).all()
    assert not result.sample_stats["diverging"].any()
    # rounds and randomness do not depend on what is kept: thinning picks every 3rd draw
    assert full.info["num_steps"] == 22
    assert torch.equal(result.samples["theta"], full.samples["theta"][:, 2::3])
    assert torch.equal(result.sample_stats["shard"], full.sample_stats["shard"][:, 2::3])
    # a chain keeps its shard for a whole round: draws 7..10 (steps 8-11) share round 3
    assert (full.sample_stats["shard"][:, 1:5] == full.sample_stats["shard"][:, 1:2]).all()
    data = result.to_arviz()
    assert data["posterior"].sizes["chain"] == 6 and data["posterior"].sizes["draw"] == 5
    assert {"lp", "shard", "diverging"} <= set(data["sample_stats"].data_vars)


def _crash_after(monkeypatch, sampler, rounds):
    original = sampler._round
    count = {"n": 0}

    def crashing(*args, **kwargs):
        if count["n"] == rounds:
            raise KeyboardInterrupt("simulated crash")
        count["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(sampler, "_round", crashing)


RESUME = {"num_samples": 12, "warmup_steps": 6, "num_chains": 5, "thinning": 2}  # 30 steps


@pytest.mark.parametrize("cls", [FSGLD, DSGLD])
def test_checkpoint_resume_equals_uninterrupted_run(cls, tmp_path, monkeypatch):
    settings = {"step_size": 1e-3, "local_steps": 4, "batch_size": 7, "checkpoint_every": 2}
    settings["init"] = wide_start(5, 2)
    # DSGLD's minibatch log-density estimate (300 / 7 times a sum of 7 terms) swings by more
    # than the default divergence threshold; these tests are about the draws
    settings["divergence_threshold"] = math.inf
    pyro.set_rng_seed(8)
    reference = cls(gaussian_mean_model, checkpoint=tmp_path / "ref.ckpt", **settings).run(
        SHARDS, **RESUME
    )
    path = tmp_path / "run.ckpt"
    pyro.set_rng_seed(8)
    crashing = cls(gaussian_mean_model, checkpoint=path, **settings)
    _crash_after(monkeypatch, crashing, 5)
    with pytest.raises(KeyboardInterrupt):
        crashing.run(SHARDS, **RESUME)
    assert crashing.load(path).round == 4  # the last multiple of checkpoint_every
    pyro.set_rng_seed(123)  # the checkpoint's generators win over the global seed
    resumed = cls(gaussian_mean_model, checkpoint=path, **settings).run(
        SHARDS, resume=True, **RESUME
    )
    for name in ("theta",):
        assert torch.equal(resumed.samples[name], reference.samples[name])
    for name in ("lp", "shard", "step_size"):
        assert torch.equal(resumed.sample_stats[name], reference.sample_stats[name])
    assert resumed.info == reference.info


def test_run_continues_from_a_state():
    settings = {"step_size": 1e-3, "local_steps": 4}
    pyro.set_rng_seed(9)
    sampler = FSGLD(gaussian_mean_model, **settings)
    first = sampler.run(SHARDS, num_samples=8, warmup_steps=4, num_chains=3)
    both = sampler.run(SHARDS, num_samples=16, warmup_steps=4, num_chains=3, state=first.state)
    pyro.set_rng_seed(9)
    once = FSGLD(gaussian_mean_model, **settings).run(
        SHARDS, num_samples=16, warmup_steps=4, num_chains=3
    )
    assert torch.equal(both.samples["theta"], once.samples["theta"])
    assert isinstance(both.state, FederatedState) and both.state.step == 20


def test_seed_reproducibility_and_dtype():
    shards32 = [x.float() for x in SHARDS[:2]]
    white32 = WHITEN.float()

    def model32(x):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(2), PRIOR_SD).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(theta @ white32.T, 1.0).to_event(1), obs=x @ white32.T)

    draws = []
    for _ in range(2):
        pyro.set_rng_seed(6)
        result = FSGLD(model32, step_size=1e-3, local_steps=3, batch_size=5).run(
            shards32, num_samples=6, warmup_steps=3, num_chains=4
        )
        draws.append(result.samples["theta"])
    assert draws[0].dtype == torch.float32 and torch.isfinite(draws[0]).all()
    assert result.sample_stats["lp"].dtype == torch.float32
    assert result.state.approximations[0].precision.dtype == torch.float32
    assert torch.equal(draws[0], draws[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_smoke():
    device = torch.device("cuda")
    shards = [x.to(device) for x in SHARDS]
    white = WHITEN.to(device)

    def model(x):
        theta = pyro.sample(
            "theta", dist.Normal(torch.zeros(2, dtype=D64, device=device), 3.0).to_event(1)
        )
        with pyro.plate("data", x.shape[0], device=device):
            pyro.sample("x", dist.Normal(theta @ white.T, 1.0).to_event(1), obs=x @ white.T)

    result = FSGLD(model, step_size=1e-4, local_steps=3, batch_size=10).run(
        shards, num_samples=10, warmup_steps=3, num_chains=8
    )
    assert result.samples["theta"].device.type == "cuda"
    assert torch.isfinite(result.samples["theta"]).all()


# --------------------------------------------------------------------------- 5. errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"step_size": 0.0}, "step_size must be positive"),
        ({"step_size": -1e-3}, "step_size must be positive"),
        ({"step_size": float("nan")}, "step_size must be positive"),
        ({"local_steps": 0}, "local_steps must be an integer >= 1"),
        ({"local_steps": 2.5}, "local_steps must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be None"),
        ({"shard_probabilities": "by-size"}, "shard_probabilities must be None"),
        ({"shard_probabilities": [0.5, 0.0, 0.5]}, "positive, finite probability"),
        ({"shard_probabilities": [[0.5, 0.5]]}, "one weight per shard"),
        ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
    ],
)
def test_constructor_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FSGLD(gaussian_mean_model, **kwargs)


def _no_sampling(monkeypatch, sampler):
    monkeypatch.setattr(sampler, "_round", lambda *a, **k: pytest.fail("sampling started"))
    monkeypatch.setattr(sampler, "_fit", lambda *a, **k: pytest.fail("fitting started"))


@pytest.mark.parametrize(
    "shards, error, match",
    [
        (SHARDS[0], TypeError, "shards must be a list of shards.*got Tensor"),
        ([], ValueError, "shards is empty"),
        ([SHARDS[0], SHARDS[1][:0]], ValueError, r"shard 1 has no data \(its first dim"),
        ([SHARDS[0], "data"], TypeError, "shard 1 must be a tensor or a tuple of tensors"),
        (
            [(SHARDS[0], SHARDS[0][:5, 0])],
            ValueError,
            r"tensors of shard 0 have different first dimensions \[40, 5\]",
        ),
    ],
)
def test_bad_shards_are_refused_before_work(shards, error, match, monkeypatch):
    sampler = FSGLD(gaussian_mean_model)
    _no_sampling(monkeypatch, sampler)
    with pytest.raises(error, match=match):
        sampler.run(shards, num_samples=2, warmup_steps=0)


@pytest.mark.parametrize(
    "kwargs, run, match",
    [
        ({"shard_probabilities": [1.0, 2.0, 3.0]}, {}, "has 3 entries but there are 4 shards"),
        ({"batch_size": 50}, {}, r"batch_size=50 is larger than shard\(s\) \[0\]"),
        ({}, {"num_samples": 0}, "num_samples must be an integer >= 1"),
        ({}, {"num_chains": 0}, "num_chains must be an integer >= 1"),
        ({}, {"thinning": 1.5}, "thinning must be an integer >= 1"),
        ({}, {"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
    ],
)
def test_bad_settings_are_refused_before_work(kwargs, run, match, monkeypatch):
    sampler = FSGLD(gaussian_mean_model, **kwargs)
    _no_sampling(monkeypatch, sampler)
    settings = {"num_samples": 2, "warmup_steps": 0, **run}
    with pytest.raises(ValueError, match=match):
        sampler.run(SHARDS, **settings)


def test_models_that_do_not_fit_the_protocol_are_refused(monkeypatch):
    def subsampling(x):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(2, dtype=D64), 3.0).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=5) as idx:
            pyro.sample("x", dist.Normal(theta, 1.0).to_event(1), obs=x[idx])

    sampler = FSGLD(subsampling)
    _no_sampling(monkeypatch, sampler)
    with pytest.raises(ModelError, match="subsamples its data plate 'data'.*pass batch_size="):
        sampler.run(SHARDS, num_samples=2, warmup_steps=0)

    def fixed_size(x):  # the plate ignores the minibatch it is given
        theta = pyro.sample("theta", dist.Normal(torch.zeros(2, dtype=D64), 3.0).to_event(1))
        with pyro.plate("data", 40):
            pyro.sample("x", dist.Normal(theta, 1.0).to_event(1), obs=x)

    sampler = FSGLD(fixed_size, batch_size=10)
    _no_sampling(monkeypatch, sampler)
    with pytest.raises(ModelError, match="fails on a minibatch of 10 rows of shard 0"):
        sampler.run(SHARDS[:1], num_samples=2, warmup_steps=0)

    def discrete(x):
        pyro.sample("k", dist.Bernoulli(torch.tensor(0.5, dtype=D64)))
        theta = pyro.sample("theta", dist.Normal(torch.zeros(2, dtype=D64), 3.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(theta, 1.0).to_event(1), obs=x)

    with pytest.raises(ModelError, match="are discrete"):
        FSGLD(discrete).run(SHARDS, num_samples=2, warmup_steps=0)


def test_diverging_chains_raise_with_step_size_advice():
    with pytest.raises(FloatingPointError, match="non-finite gradient.*lower the step size"):
        DSGLD(gaussian_mean_model, step_size=1.0, local_steps=50).run(
            SHARDS, num_samples=400, warmup_steps=0, num_chains=2
        )


def test_divergence_warning_counts_the_flagged_draws_per_shard():
    # DSGLD's log-density estimate swings by thousands of nats between the clusters (see the
    # statistics test above): the check flags draws, and the warning says at which shards.
    eps = 0.05 / float(torch.linalg.eigvalsh(POST_PREC).max())
    pyro.set_rng_seed(0)
    settings = {"step_size": eps, "local_steps": 10, "shard_probabilities": "uniform"}
    sampler = DSGLD(gaussian_mean_model, init=wide_start(8, 1), **settings)
    with pytest.warns(RuntimeWarning, match="nats below the median") as record:
        result = sampler.run(SHARDS, num_samples=40, warmup_steps=20, num_chains=8)
    diverging, shard = result.sample_stats["diverging"], result.sample_stats["shard"]
    assert result.info["divergences"] == int(diverging.sum()) > 0
    message = next(str(w.message) for w in record if "nats below" in str(w.message))
    counts = {int(s): int(n) for s, n in re.findall(r"shard (\d+): (\d+)", message)}
    expected = {s: int((diverging & (shard == s)).sum()) for s in range(len(SHARDS))}
    assert counts == {s: n for s, n in expected.items() if n}


def test_resuming_with_other_shards_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    FSGLD(gaussian_mean_model, step_size=1e-3, checkpoint=path).run(
        SHARDS, num_samples=2, warmup_steps=0, num_chains=2
    )
    with pytest.raises(ValueError, match=r"written for 4 shard\(s\).*not 2"):
        FSGLD(gaussian_mean_model, step_size=1e-3, checkpoint=path).run(
            SHARDS[:2], num_samples=4, warmup_steps=0, num_chains=2, resume=True
        )
    with pytest.raises(ValueError, match="written by engine 'fsgld', not 'dsgld'"):
        DSGLD(gaussian_mean_model, step_size=1e-3, checkpoint=path).run(
            SHARDS, num_samples=4, warmup_steps=0, num_chains=2, resume=True
        )


if __name__ == "__main__":
    warnings.simplefilter("default")
    _distributed_worker(sys.argv[1])
