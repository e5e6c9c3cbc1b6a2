"""Shared test models for the engines' error paths."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import transform_to

D64 = torch.float64


class LowerCholeskyPrior(dist.TorchDistribution):
    """A minimal distribution on lower-triangular matrices with positive diagonal."""

    support = constraints.lower_cholesky
    arg_constraints: dict = {}

    def __init__(self, dim: int, batch_shape=()):
        super().__init__(torch.Size(batch_shape), torch.Size([dim, dim]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return LowerCholeskyPrior(self.event_shape[-1], batch_shape)

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return transform_to(constraints.lower_cholesky)(torch.randn(shape, dtype=D64))

    def log_prob(self, value):
        return -0.5 * (value**2).sum((-1, -2))


def lower_cholesky_model():
    pyro.sample("scale_tril", LowerCholeskyPrior(3))
