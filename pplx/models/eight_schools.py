"""The eight-schools hierarchical model (non-centred) as a plain Pyro model."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch


def eight_schools(sigma: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    r"""Non-centred eight schools (Rubin 1981; Gelman et al., *BDA* 5.5).

    .. math::

        \mu \sim \mathcal N(0, 5^2),\ \tau \sim \mathrm{HalfCauchy}(5),\
        \tilde\theta_j \sim \mathcal N(0, 1),\ y_j \sim \mathcal N(\mu + \tau\tilde\theta_j,
        \sigma_j^2).

    Args:
        sigma: Known standard errors, shape ``(J,)``.
        y: Observed effects, shape ``(J,)``, or ``None`` to simulate them.

    Returns:
        The observed or simulated effects.
    """
    if sigma.dim() != 1:
        raise ValueError(f"eight_schools: sigma must have shape (J,), got {tuple(sigma.shape)}")
    if y is not None and y.shape != sigma.shape:
        raise ValueError(
            f"eight_schools: y must have the shape of sigma {tuple(sigma.shape)}, "
            f"got {tuple(y.shape)}"
        )
    mu = pyro.sample("mu", dist.Normal(sigma.new_zeros(()), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
    with pyro.plate("schools", sigma.shape[0], device=sigma.device):
        theta_raw = pyro.sample("theta_raw", dist.Normal(sigma.new_zeros(()), 1.0))
        theta = mu + tau * theta_raw
        return pyro.sample("obs", dist.Normal(theta, sigma), obs=y)
