"""Sample-quality diagnostics that need the model: kernel Stein discrepancy of any Result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pplx.inference.potential import Potential
from pplx.inference.results import Result
from pplx.metrics import kernel_stein_discrepancy


def stein_discrepancy(
    result: Result,
    model: Callable,
    *args: Any,
    max_draws: int = 2000,
    c: float = 1.0,
    beta: float = -0.5,
    **kwargs: Any,
) -> torch.Tensor:
    r"""IMQ kernel Stein discrepancy of a result's draws against the model's posterior.

    The draws are mapped to the unconstrained space of Pyro's bijections, where the posterior
    density :math:`\tilde p(z)` (Jacobian included) has the score
    :math:`\nabla_z \log\tilde p(z)`; the discrepancy
    (:func:`pplx.metrics.kernel_stein_discrepancy`, Gorham & Mackey 2017) needs no exact draws
    and goes to zero exactly when the draws converge to the posterior. Compare engines on the
    same model: smaller is better. Pass the model's full-data arguments (no subsampling), so
    that the score is exact.

    Args:
        result: Draws from any engine.
        model: The Pyro model the draws target.
        *args: Model arguments (full data).
        max_draws: Use at most this many draws, evenly thinned (the cost is quadratic).
        c: IMQ offset.
        beta: IMQ exponent in ``(-1, 0)``.
        **kwargs: Model keyword arguments.

    Returns:
        A scalar tensor.
    """
    potential = Potential(model, args, kwargs, engine="stein_discrepancy")
    if potential.subsamples:
        raise ValueError(
            "stein_discrepancy: the model subsamples its data, so its score is noisy; call it "
            "with the model's full-data arguments (e.g. without subsample_size)"
        )
    draws = result.get_samples()
    missing = [b.name for b in potential.blocks if b.name not in draws]
    if missing:
        raise ValueError(f"stein_discrepancy: the result has no draws of latent site(s) {missing}")
    num = next(iter(draws.values())).shape[0]
    keep = torch.linspace(0, num - 1, min(num, max_draws)).round().long()
    values = {b.name: draws[b.name][keep].to(potential.dtype) for b in potential.blocks}
    z = potential.pack(values)
    _, score = potential.value_and_grad(z)
    return kernel_stein_discrepancy(z, score, c=c, beta=beta)
