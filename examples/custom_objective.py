r"""Write your own variational objective in a few lines, and fit it with ``pyro.infer.SVI``.

Two user-defined objectives, each a short program over the primitives of
:mod:`pplx.objectives` (``simulate``, ``density``, ``expectation``, ``logmeanexp``,
``Estimate``); the decorator ``@pplx.objectives.objective`` turns each into an estimator of
unbiased gradients with Pyro's ELBO interface:

* a *tempered ELBO* :math:`\mathbb E_q[\log p(x\mid z)] - \beta\,\mathrm{KL}(q\,\|\,p(z))`
  (a beta-VAE-style objective), whose optimum is the tempered posterior
  :math:`q^*(z) \propto p(z)\,p(x\mid z)^{1/\beta}`;
* an importance-weighted bound with the *median* as its reducer: the :math:`K` particles form
  :math:`K/2` groups of two, each group gives an IWAE estimate :math:`\log\frac12(w_1 + w_2)`
  of :math:`\log p(x)`, and the program returns their median (a robust variant of IWAE).

The model is conjugate: :math:`\mu \sim N(0, \tau^2)`, :math:`x_i \mid \mu \sim N(\mu, \sigma^2)`,
so the (tempered) posterior of :math:`\mu` is Gaussian in closed form and the fitted guide
:math:`N(m, s^2)` can be compared with it.

    python examples/custom_objective.py [--steps 3000] [--particles 8]
    python examples/custom_objective.py --quick
"""

import argparse
import math

import pyro
import pyro.distributions as dist
import torch

import pplx.objectives as obj

TAU, SIGMA = 2.0, 1.0


def model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, TAU))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu, SIGMA), obs=x)


def guide(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


# ------------------------------------------------------------------ the user-defined objectives


def tempered_elbo(beta, num_particles=8):
    """E_q[log p(x | z)] - beta * KL(q || p(z)), estimated with ``num_particles`` draws."""

    @obj.objective(num_particles=num_particles)
    def program(model, guide, *args, **kwargs):
        q = obj.simulate(guide, *args, **kwargs)
        p = obj.density(model, q, *args, **kwargs)
        log_prior = p.log_prob - p.log_likelihood
        return obj.expectation(p.log_likelihood + beta * (log_prior - q.log_prob))

    return program


def median_iwae(groups, per_group):
    """The median over ``groups`` of IWAE(``per_group``) estimates of log p(x)."""

    @obj.objective(num_particles=groups * per_group)
    def program(model, guide, *args, **kwargs):
        q = obj.simulate(guide, *args, **kwargs)
        log_w = obj.density(model, q, *args, **kwargs).log_prob.total() - q.log_prob.total()
        bounds = obj.logmeanexp(log_w.unflatten(-1, (groups, per_group)))
        return obj.Estimate(bounds.median(-1).values)

    return program


# -------------------------------------------------------------------------------- the analytic


def tempered_posterior(x, beta):
    """Mean and sd of p(mu) * p(x | mu)^(1 / beta) (beta = 1: the posterior)."""
    precision = 1.0 / TAU**2 + len(x) / (beta * SIGMA**2)
    mean = (x.sum() / (beta * SIGMA**2)) / precision
    return float(mean), float(precision**-0.5)


def fit(objective, x, steps, lr, seed):
    """SVI with Adam; returns the guide's (loc, scale) averaged over the last quarter of steps."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=objective)
    tail, locs, scales = steps // 4, [], []
    for step in range(steps):
        svi.step(x)
        if step >= steps - tail:
            locs.append(float(pyro.param("loc").detach()))
            scales.append(float(pyro.param("scale").detach()))
    return sum(locs) / len(locs), sum(scales) / len(scales)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer steps (a few seconds)")
    args = parser.parse_args()
    if args.quick:
        args.steps = 800
    torch.set_num_threads(1)
    pyro.set_rng_seed(args.seed)
    x = dist.Normal(1.5, SIGMA).sample((20,))
    k = args.particles
    candidates = {
        "tempered ELBO, beta=1": (tempered_elbo(1.0, k), 1.0),
        "tempered ELBO, beta=4": (tempered_elbo(4.0, k), 4.0),
        f"median of {k // 2} IWAE(2)": (median_iwae(k // 2, 2), 1.0),
    }
    print(
        f"model: mu ~ N(0, {TAU}^2), {len(x)} points x_i ~ N(mu, {SIGMA}^2); "
        f"{args.steps} SVI steps, K={k}"
    )
    print(
        f"{'objective':26s} {'fitted mean':>12s} {'exact mean':>11s} {'fitted sd':>10s} "
        f"{'exact sd':>9s}"
    )
    failures = []
    for label, (objective, beta) in candidates.items():
        loc, scale = fit(objective, x, args.steps, args.lr, args.seed)
        mean, sd = tempered_posterior(x, beta)
        print(f"{label:26s} {loc:12.4f} {mean:11.4f} {scale:10.4f} {sd:9.4f}")
        if abs(loc - mean) > 0.25 * sd or abs(math.log(scale / sd)) > 0.25:
            failures.append(label)
    if failures:
        raise SystemExit(f"fitted guide far from the analytic posterior for {failures}")
    print("every fitted guide matches its analytic (tempered) posterior within 0.25 sd / 25%")


if __name__ == "__main__":
    main()
