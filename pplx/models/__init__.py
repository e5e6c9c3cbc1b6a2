"""Model families written as plain Pyro models (and guides where a family needs one)."""

from pplx.models.eight_schools import eight_schools
from pplx.models.koopman import KoopmanVAE
from pplx.models.logistic import logistic_regression
from pplx.models.objects import ObjectCountVAE
from pplx.models.vae import VAE, DiscreteVAE, SigmoidBeliefVAE

__all__ = [
    "VAE",
    "DiscreteVAE",
    "KoopmanVAE",
    "ObjectCountVAE",
    "SigmoidBeliefVAE",
    "eight_schools",
    "logistic_regression",
]
