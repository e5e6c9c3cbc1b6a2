"""Bayesian logistic regression as a plain Pyro model."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch


def logistic_regression(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    prior_scale: float = 1.0,
    subsample_size: int | None = None,
    num_data: int | None = None,
) -> torch.Tensor:
    r"""Bayesian logistic regression.

    .. math::

        w \sim \mathcal N(0, s^2 I_D),\quad b \sim \mathcal N(0, 5^2),\quad
        y_n \mid w, b \sim \mathrm{Bernoulli}(\sigma(x_n^\top w + b)).

    The model broadcasts over batch dimensions left of its ``data`` plate, so engines can
    evaluate many particles or chains in one call.

    Args:
        x: Inputs of shape ``(N, D)``.
        y: Labels of shape ``(N,)`` in ``{0, 1}``, or ``None`` to simulate them.
        prior_scale: Prior standard deviation ``s`` of the weights.
        subsample_size: Minibatch size for the ``data`` plate: the model draws the minibatch
            itself and Pyro rescales the likelihood by ``N / subsample_size``.
        num_data: Size of the full data set when ``x, y`` are already a minibatch of it (e.g.
            from ``SVI.run(batches=...)``); the likelihood is rescaled by ``num_data / N``.

    Returns:
        The (observed or simulated) labels of the data points in the plate.
    """
    if x.dim() != 2:
        raise ValueError(f"logistic_regression: x must have shape (N, D), got {tuple(x.shape)}")
    num_data_points, num_features = x.shape
    if y is not None and y.shape != (num_data_points,):
        raise ValueError(
            f"logistic_regression: y must have shape (N,) = ({num_data_points},) to match x, "
            f"got {tuple(y.shape)}; flatten it with y.reshape(-1)."
        )
    if num_data is not None and subsample_size is not None:
        raise ValueError(
            "logistic_regression: pass either subsample_size (the model draws minibatches) or "
            "num_data (x, y are a minibatch already), not both"
        )
    w = pyro.sample("w", dist.Normal(x.new_zeros(num_features), prior_scale).to_event(1))
    b = pyro.sample("b", dist.Normal(x.new_zeros(()), 5.0))
    plate = pyro.plate(
        "data",
        num_data_points if num_data is None else num_data,
        subsample_size=subsample_size,
        subsample=None if num_data is None else torch.arange(num_data_points, device=x.device),
        device=x.device,
    )
    with plate as idx:
        x_batch = x[idx]
        # Under a particle plate w has shape (..., 1, D), the 1 standing in the data plate's
        # dimension; the matrix product gives (..., 1, N), so drop that 1 to get (..., N).
        logits = w @ x_batch.T
        if w.dim() > 1:
            logits = logits.squeeze(-2)
        logits = logits + b
        return pyro.sample("obs", dist.Bernoulli(logits=logits), obs=None if y is None else y[idx])
