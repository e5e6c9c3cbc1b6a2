r"""Stochastic processes for pplx models: Markov-approximate fractional Brownian motion.

Fractional Brownian motion (fBM) with Hurst index :math:`H \in (0, 1)` is approximated by a
weighted sum of :math:`K` Ornstein-Uhlenbeck processes driven by one shared Brownian motion
(Daems et al., ICLR 2024), which keeps a Markov state that SDE models can carry:

* :mod:`pplx.processes.fbm`: the speed grid, the optimal weights (closed form, differentiable
  in :math:`H`), the exact covariances of fBM and of its approximation, batched path sampling
  (exact Ornstein-Uhlenbeck discretisation or Euler-Maruyama), and exact Davies-Harte fBM
  paths for comparison;
* :mod:`pplx.processes.sde`: fractional SDEs as a Pyro model (Euler-Maruyama prior over the
  augmented state) and guide (controlled posterior), whose ELBO's path KL is the Girsanov
  term;
* :mod:`pplx.processes.hurst`: maximum-likelihood Hurst index from observed paths;
* :mod:`pplx.processes.special`: regularised incomplete gamma functions with a gradient in
  the shape parameter (which :mod:`torch.special` lacks).

The user guide ``docs/guides/fbm.rst`` explains the approximation and how to choose
:math:`K` and the speeds.
"""

from pplx.processes.fbm import (
    KINDS,
    fbm_covariance,
    fbm_weights,
    geometric_gammas,
    ma_fbm_covariance,
    mvn_variance,
    sample_fbm,
    sample_ma_fbm,
)
from pplx.processes.hurst import fit_hurst, hurst_guide, hurst_model
from pplx.processes.sde import (
    ControlNet,
    FractionalSDE,
    LinearControl,
    SDEPath,
    euler_linear_moments,
    gaussian_condition,
)
from pplx.processes.special import gammainc, gammaincc, gammaincc_scaled
from pplx.processes.video import LatentVideoSDE, moving_digits

__all__ = [
    "KINDS",
    "ControlNet",
    "FractionalSDE",
    "LinearControl",
    "SDEPath",
    "euler_linear_moments",
    "gaussian_condition",
    "fit_hurst",
    "hurst_guide",
    "hurst_model",
    "fbm_covariance",
    "fbm_weights",
    "gammainc",
    "gammaincc",
    "gammaincc_scaled",
    "geometric_gammas",
    "ma_fbm_covariance",
    "mvn_variance",
    "sample_fbm",
    "sample_ma_fbm",
    "LatentVideoSDE",
    "moving_digits",
]
