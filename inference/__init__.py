"""pplx.inference: the engines that fit Pyro models, and the one Result type they return.

Importing this package registers the built-in engines with the workflow registry, so the
``pplx demo`` command finds them.
"""

# Built-in engines register themselves with the workflow (imported last: they use the above).
from pplx.inference import builtin_engines  # noqa: E402, F401, I001
from pplx.inference.arviz_io import to_inference_data
from pplx.inference.checkpoint import load_checkpoint, save_checkpoint
from pplx.inference.diagnostics import stein_discrepancy
from pplx.inference.federated import (
    DSGLD,
    FSGLD,
    FederatedState,
    LocalGaussian,
    init_distributed,
)
from pplx.inference.kernels import IMQKernel, Kernel, PreconditionedKernel, RBFKernel
from pplx.inference.mcmc import NUTS, result_from_mcmc
from pplx.inference.mirror import (
    BoxEntropic,
    Euclidean,
    MirrorMap,
    OrthantEntropic,
    SimplexEntropic,
    mirror_map_for,
)
from pplx.inference.potential import Potential
from pplx.inference.registry import (
    EngineSpec,
    FitConfig,
    Problem,
    engines,
    get_engine,
    register_engine,
)
from pplx.inference.results import Result
from pplx.inference.sgmcmc import (
    PSGLD,
    SGHMC,
    SGLD,
    Constant,
    Cyclical,
    PolynomialDecay,
    SGMCMCState,
)
from pplx.inference.stein import MSVGD, SVGD, SVMD, SVNG, SteinState
from pplx.inference.structured import StructuredPSGLD, StructuredSGHMC, StructuredSGLD
from pplx.inference.svi import SVI, EarlyStopping, NonFiniteLossError, SVIState
from pplx.inference.validation import ModelError

__all__ = [
    "DSGLD",
    "FSGLD",
    "FederatedState",
    "LocalGaussian",
    "init_distributed",
    "StructuredPSGLD",
    "StructuredSGHMC",
    "StructuredSGLD",
    "PSGLD",
    "SGHMC",
    "SGLD",
    "Constant",
    "Cyclical",
    "PolynomialDecay",
    "SGMCMCState",
    "MSVGD",
    "SVGD",
    "SVMD",
    "SVNG",
    "BoxEntropic",
    "Euclidean",
    "IMQKernel",
    "Kernel",
    "MirrorMap",
    "OrthantEntropic",
    "Potential",
    "PreconditionedKernel",
    "RBFKernel",
    "SimplexEntropic",
    "SteinState",
    "mirror_map_for",
    "SVI",
    "EarlyStopping",
    "EngineSpec",
    "FitConfig",
    "ModelError",
    "NUTS",
    "NonFiniteLossError",
    "Problem",
    "Result",
    "SVIState",
    "engines",
    "get_engine",
    "load_checkpoint",
    "register_engine",
    "stein_discrepancy",
    "result_from_mcmc",
    "save_checkpoint",
    "to_inference_data",
]
