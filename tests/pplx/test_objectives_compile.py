"""Compiled objectives (``Objective.compile()``): same estimator, replayed without handlers."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pplx.estimators as est
import pplx.objectives as po
from pplx.capture import CaptureError
from pplx.objectives.compiled import CapturedLoss

X = torch.tensor([1.0, 1.5, 0.2], dtype=torch.float64)


def compiled_programs(objective):
    """Number of recorded programs (one per model, guide and argument signature)."""
    return sum(len(c) if isinstance(c, CapturedLoss) else 1 for c in objective._compiled.values())


def model(x):
    z = pyro.sample("z", dist.Bernoulli(x.new_tensor(0.3)))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(2 * z, 1.0), obs=x)


def guide(x):
    p = pyro.param("p", x.new_tensor(0.6), constraint=dist.constraints.unit_interval)
    pyro.sample("z", dist.Bernoulli(p))


def exact_loss_and_grad():
    """-ELBO and its gradient in the unconstrained (logit) parameter, summing z in {0, 1}."""
    logit = torch.tensor(math.log(0.6 / 0.4), dtype=torch.float64, requires_grad=True)
    p = torch.sigmoid(logit)
    elbo = 0.0
    for z, q in ((1.0, p), (0.0, 1 - p)):
        prior = dist.Bernoulli(torch.tensor(0.3, dtype=torch.float64))
        log_joint = prior.log_prob(torch.tensor(z, dtype=torch.float64)) + (
            dist.Normal(2 * z, 1.0).log_prob(X).sum()
        )
        elbo = elbo + q * (log_joint - q.log())
    (grad,) = torch.autograd.grad(-elbo, logit)
    return float(-elbo.detach()), float(grad)


@pytest.mark.parametrize(
    "strategy",
    [est.Reinforce("loo"), est.MVD(), est.Enumerate()],
    ids=["reinforce-loo", "mvd", "enumerate"],
)
def test_compiled_elbo_is_unbiased(strategy):
    objective = po.ELBO(num_particles=8).compile()
    tagged = est.with_estimators(guide, {"z": strategy})
    grads, values = [], []
    for _ in range(300):
        loss = objective.differentiable_loss(model, tagged, X)
        (grad,) = torch.autograd.grad(loss, [pyro.param("p").unconstrained()])
        grads.append(grad)
        values.append(loss.detach())
    grads, values = torch.stack(grads), torch.stack(values)
    exact_loss, exact_grad = exact_loss_and_grad()
    se = grads.std() / math.sqrt(len(grads))
    assert abs(float(grads.mean()) - exact_grad) < 4 * float(se) + 1e-9
    se_v = values.std() / math.sqrt(len(values))
    assert abs(float(values.mean()) - exact_loss) < 4 * float(se_v) + 1e-9
    assert compiled_programs(objective) == 1  # recorded once, replayed afterwards


def test_compiled_objective_draws_fresh_randomness_and_recompiles_for_new_shapes():
    objective = po.IWAE(num_particles=4).compile()
    first = objective.differentiable_loss(model, guide, X)
    second = objective.differentiable_loss(model, guide, X)
    assert float(first.detach()) != float(second.detach())  # the replayed program samples anew
    objective.differentiable_loss(model, guide, X[:2])
    assert compiled_programs(objective) == 2


def normal_model(x):
    loc = pyro.sample("loc", dist.Normal(x.new_tensor(0.0), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def normal_guide(x):
    m = pyro.param("m", x.new_tensor(0.0))
    s = pyro.param("s", x.new_tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("loc", dist.Normal(m, s))


def test_compiled_objective_trains_with_pyro_svi():
    data = torch.randn(20, dtype=torch.float64) + 2.0
    svi = pyro.infer.SVI(
        normal_model,
        normal_guide,
        pyro.optim.Adam({"lr": 0.05}),
        loss=po.ELBO(num_particles=16).compile(),
    )
    for _ in range(600):
        svi.step(data)
    posterior_mean = float(data.sum() / 21)  # conjugate: prior N(0, 1), unit noise
    assert abs(pyro.param("m").item() - posterior_mean) < 0.05
    assert abs(pyro.param("s").item() - 21**-0.5) < 0.05


def test_compiled_objective_recaptures_after_the_param_store_is_cleared():
    # The recorded program holds parameters by reference: a new store means new tensors.
    objective = po.ELBO(num_particles=4).compile()
    objective.differentiable_loss(model, guide, X)
    objective.differentiable_loss(model, guide, X)
    pyro.clear_param_store()
    loss = objective.differentiable_loss(model, guide, X)
    (grad,) = torch.autograd.grad(loss, [pyro.param("p").unconstrained()])
    assert torch.isfinite(grad)
    assert compiled_programs(objective) == 1  # replaced, not added


def test_compiled_objective_rejects_tensor_keyword_arguments():
    def kw_model(x=None):
        model(x)

    def kw_guide(x=None):
        guide(x)

    objective = po.ELBO().compile()
    with pytest.raises(ValueError, match="keyword argument 'x' is a tensor; pass tensors pos"):
        objective.differentiable_loss(kw_model, kw_guide, x=X)


# backend="jit" is the user's explicit choice of torch.jit.trace, so its deprecation warning
# (PyTorch 2.13) is left to the user; the test does not need to see it.
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_jit_backend_and_bad_backend():
    objective = po.ELBO(num_particles=4).compile(backend="jit")
    assert torch.isfinite(objective.differentiable_loss(model, guide, X))
    with pytest.raises(ValueError, match='backend must be "capture" or "jit"'):
        po.ELBO().compile(backend="inductor")


def test_compiled_discrete_vae_with_one_hot_matches_eager():
    # one_hot reads its input's values in eager PyTorch; capture swaps in a value-free form.
    from pplx.models import DiscreteVAE

    pyro.set_rng_seed(0)
    vae = DiscreteVAE(x_dim=6, hidden=5, num_classes=3).double()
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64))
    tagged = est.with_estimators(vae.guide, {"c": est.Enumerate()})  # exact: no noise
    eager = po.ELBO().differentiable_loss(vae.model, tagged, x)
    compiled = po.ELBO().compile()
    compiled.differentiable_loss(vae.model, tagged, x)  # eager run, then recorded
    replayed = compiled.differentiable_loss(vae.model, tagged, x)
    params = list(vae.parameters())
    torch.testing.assert_close(replayed, eager)
    for a, b in zip(torch.autograd.grad(eager, params), torch.autograd.grad(replayed, params)):
        torch.testing.assert_close(a, b)


def test_compiled_objective_trains_with_the_pplx_svi_engine():
    # The engine swaps its own parameter dict into the store (scope): the recorded program
    # must see those tensors, and the optimizer must update them in place.
    from pplx.inference import SVI

    pyro.set_rng_seed(0)
    data = torch.randn(50, dtype=torch.float64) + 2.0
    objective = po.ELBO(num_particles=8).compile()
    svi = SVI(normal_model, normal_guide, loss=objective, optim_args={"lr": 0.05})
    result = svi.run(data, num_steps=800)
    params = {k: v.detach() for k, v in result.state.params["params"].items()}
    assert abs(float(params["m"]) - float(data.sum() / 51)) < 0.05
    assert abs(float(params["s"].exp()) - 51**-0.5) < 0.03
    assert compiled_programs(objective) == 1


def test_compiling_a_program_that_reads_values_says_so():
    def item_guide(x):
        p = pyro.param("p", x.new_tensor(0.6), constraint=dist.constraints.unit_interval)
        if p.item() > 0:  # a value read in Python
            pyro.sample("z", dist.Bernoulli(p))

    with pytest.raises(CaptureError, match=r"compile\(\): the program cannot be recorded: it"):
        po.ELBO().compile().differentiable_loss(model, item_guide, X)
