r"""Federated SGLD with conducive gradients (FSGLD) and distributed SGLD (DSGLD).

The data are split into :math:`K` shards :math:`x_1, \dots, x_K` that live on different workers
(clients) and are never pooled. The target is the full posterior

.. math::

    \log p(\theta \mid x) = \log p(\theta) + \sum_{s=1}^K \log p(x_s \mid \theta) + C.

Chains move in rounds. At the start of a round each chain picks a shard :math:`s` with
probability :math:`f_s` and runs :math:`L` local SGLD steps there (step-size convention of
:mod:`pplx.inference.sgmcmc`: :math:`\theta \leftarrow \theta + \frac\epsilon2 g +
\mathcal N(0, \epsilon I)`), then the chains' positions are shared with every worker.

*Distributed SGLD* (DSGLD, Ahn, Shahbaba & Welling 2014) uses the shard's rescaled gradient

.. math::

    g_s^{\mathrm{DSGLD}}(\theta) = \nabla\log p(\theta)
        + \frac{N_s}{f_s\, n}\sum_{i \in \mathcal B} \nabla\log p(x_{s,i} \mid \theta),

with a minibatch :math:`\mathcal B` of :math:`n` of the shard's :math:`N_s` points. Averaged
over the shard choice it is unbiased, but it is the *same* shard for all :math:`L` steps of a
round: when shards are not identically distributed (non-IID), each round drifts toward that
shard's own posterior, and the chain's distribution is much wider than the posterior (and can be
shifted). *Federated SGLD* with conducive gradients (El Mekkaoui, Mesquita, Blomstedt & Kaski,
UAI 2021) adds the correction

.. math::

    g_s^{\mathrm{FSGLD}}(\theta) = g_s^{\mathrm{DSGLD}}(\theta)
        + \sum_{k=1}^K \nabla\log q_k(\theta) - \frac1{f_s}\nabla\log q_s(\theta),

where :math:`q_k(\theta) \approx p(x_k \mid \theta)` are Gaussian approximations of the shards'
likelihoods, computed once before sampling and shared with every worker. The correction has
expectation zero over the shard choice, so the gradient stays unbiased whatever the
:math:`q_k`; when :math:`q_s` is close to the shard's likelihood, the shard's term and its
approximation cancel and the local gradient is close to the *full-data* gradient, which removes
the drift of the local steps. For Gaussian likelihoods (the Laplace fit below is then exact) and
full-shard gradients, FSGLD is SGLD with the exact full-data gradient.

The approximations are Laplace fits in the unconstrained coordinates :math:`z` of
:class:`~pplx.inference.potential.Potential`: find the mode :math:`z^*` of the shard's local
posterior :math:`\log p(z) + \log p(x_s \mid z)` with L-BFGS, then take the second-order Taylor
expansion of the shard's log-likelihood alone around it, :math:`\log q_s(z) = c_s + h_s^\top z
- \frac12 z^\top P_s z` with :math:`P_s = -\nabla^2 \log p(x_s \mid z^*)` (negative curvature
is clipped to zero) and :math:`h_s = \nabla\log p(x_s \mid z^*) + P_s z^*`. Only the precision
:math:`P_s`, the linear term :math:`h_s` and the constant :math:`c_s` are exchanged, never data.

The prior (and the Jacobian of the transforms to unconstrained space) is counted once in every
local gradient; only the model's observed sites (its likelihood, ``pyro.factor`` included) are
rescaled by :math:`N_s / (f_s n)`.

Two ways to run the same algorithm:

* **simulation** (default): one process holds all shards and runs every shard's chains in turn;
  for tests, laptops and notebooks.
* **distributed** (``distributed=True``): one process per shard under ``torch.distributed``
  (gloo backend), launched by ``torchrun`` on one or several machines; each rank passes only its
  own shard. Rank 0 draws the initial positions and a seed and broadcasts them; the
  approximations are all-gathered once; after every round the chains' new positions and kept
  draws are summed over ranks (each rank fills in its own chains). Each shard's randomness
  comes from its own generator, so given the same seed the distributed run gives the *same
  draws* as the simulation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyro.poutine as poutine
import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger
from torch.distributions import Transform

from pplx.inference.checkpoint import check_writable, load_checkpoint, save_checkpoint
from pplx.inference.loop import run_steps
from pplx.inference.potential import Potential
from pplx.inference.results import Result
from pplx.inference.sgmcmc import _schedule
from pplx.inference.validation import ModelError, trace_or_explain
from pplx.rng import untouched_state
from pplx.traces import is_data, sample_sites

#: One shard: a tensor, or a tuple of tensors, whose first dimension indexes the data points.
Shard = torch.Tensor | tuple[torch.Tensor, ...]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# ---------------------------------------------------------------------- torch.distributed


def init_distributed(backend: str = "gloo", timeout: float = 600.0) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment.

    ``torchrun --nproc-per-node K script.py`` (and its multi-node form with ``--nnodes`` and
    ``--rdzv-endpoint``) sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` for
    every process; this joins the default process group with them. Does nothing if the group
    is already initialised. Call ``torch.distributed.destroy_process_group()`` at the end.

    Args:
        backend: ``"gloo"`` (the engines here exchange CPU tensors).
        timeout: Seconds a collective operation waits for the other ranks before failing.

    Returns:
        ``(rank, world_size)``.

    Raises:
        RuntimeError: ``torch.distributed`` or the backend is unavailable, or the script was not
            launched by ``torchrun`` (the environment variables are missing).
    """
    if not dist.is_available():
        raise RuntimeError(
            "init_distributed: this PyTorch build has no torch.distributed; run the "
            "single-process simulation instead (distributed=False)."
        )
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [name for name in _ENV if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"init_distributed: environment variable(s) {missing} are not set. Launch the script "
            "with torchrun (e.g. `torchrun --nproc-per-node 4 script.py`), set them yourself, or "
            "run the single-process simulation (distributed=False)."
        )
    if backend == "gloo" and not dist.is_gloo_available():
        raise RuntimeError("init_distributed: this PyTorch build has no gloo backend")
    if not timeout > 0:
        raise ValueError(f"init_distributed: timeout must be positive, got {timeout}")
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return dist.get_rank(), dist.get_world_size()


class _Simulation:
    """All shards in this process; communication is the identity."""

    distributed = False
    rank = 0
    world_size = 1

    def __init__(self, num_shards: int) -> None:
        self.local_shards = list(range(num_shards))

    def agree(self, error: BaseException | None, name: str) -> None:
        if error is not None:
            raise error

    def gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


class _Collective:
    """One shard per rank of the default ``torch.distributed`` process group (CPU tensors)."""

    distributed = True

    def __init__(self, name: str) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                f"{name}: distributed=True needs an initialised torch.distributed process group; "
                "launch with torchrun and call pplx.inference.federated.init_distributed() "
                "first, or use the single-process simulation (distributed=False)."
            )
        backend = str(dist.get_backend())
        if "gloo" not in backend and "mpi" not in backend:
            raise RuntimeError(
                f"{name}: the process group uses backend {backend!r}, which cannot exchange CPU "
                "tensors; initialise it with backend='gloo' (chains may still live on a GPU)."
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_shards = [self.rank]

    def agree(self, error: BaseException | None, name: str) -> None:
        """Raise on every rank if any rank failed (so that no rank waits for the others)."""
        message = None if error is None else f"{type(error).__name__}: {error}"
        messages = self.gather_objects(message)
        if error is not None:
            raise error
        failed = {rank: m for rank, m in enumerate(messages) if m is not None}
        if failed:
            details = "; ".join(f"rank {rank}: {m}" for rank, m in failed.items())
            raise RuntimeError(f"{name}: another rank failed, so this one stops too ({details})")

    def gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        buffer = tensor.detach().to("cpu", copy=True).contiguous()
        dist.broadcast(buffer, src=0)
        return buffer.to(tensor.device)

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        buffer = tensor.detach().to("cpu").contiguous()
        out = [torch.empty_like(buffer) for _ in range(self.world_size)]
        dist.all_gather(out, buffer)
        return [t.to(tensor.device) for t in out]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        buffer = tensor.detach().to("cpu", copy=True).contiguous()
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer.to(tensor.device)


# ---------------------------------------------------------------------- shard models


class _ScaleLikelihood(Messenger):
    """Multiply the log-density of the named (observed) sites by ``scale``."""

    def __init__(self, names: frozenset[str], scale: float) -> None:
        super().__init__()
        self.names = names
        self.scale = scale

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["scale"] = self.scale * msg["scale"]


class _ShardModel:
    """The user's model on (a minibatch of) one shard, with its likelihood rescaled.

    ``batch`` and ``scale`` are read at every call, so one traced :class:`Potential` serves the
    full shard, any minibatch, and the prior alone (``scale = 0`` hides the observed sites).
    """

    def __init__(self, model: Callable, data: tuple[torch.Tensor, ...], args: tuple, kwargs: dict):
        self.model = model
        self.__name__ = getattr(model, "__name__", type(model).__name__)
        self.data = data
        self.size = data[0].shape[0]
        self.args = args
        self.kwargs = kwargs
        self.batch = data
        self.scale = 1.0
        self.observed: frozenset[str] = frozenset()

    def use(self, indices: torch.Tensor | None, scale: float) -> None:
        if indices is None:
            self.batch = self.data
        else:
            self.batch = tuple(p[indices.to(p.device)] for p in self.data)
        self.scale = scale

    def __call__(self) -> Any:
        if self.scale == 0:
            with poutine.block(hide=list(self.observed)):
                return self.model(*self.batch, *self.args, **self.kwargs)
        with _ScaleLikelihood(self.observed, self.scale):
            return self.model(*self.batch, *self.args, **self.kwargs)


def _as_shard(shard: Any, index: int, name: str) -> tuple[torch.Tensor, ...]:
    """Check one shard and return it as a tuple of tensors."""
    if isinstance(shard, torch.Tensor):
        parts: tuple = (shard,)
    elif (
        isinstance(shard, (tuple, list))
        and shard
        and all(isinstance(p, torch.Tensor) for p in shard)
    ):
        parts = tuple(shard)
    else:
        raise TypeError(
            f"{name}: shard {index} must be a tensor or a tuple of tensors whose first dimension "
            f"indexes the data points, got {type(shard).__name__}"
        )
    if any(p.dim() == 0 for p in parts):
        raise ValueError(
            f"{name}: shard {index} holds a scalar tensor; every tensor of a shard needs a first "
            "dimension that indexes the data points (pass other model arguments after the shards)"
        )
    sizes = [p.shape[0] for p in parts]
    if len(set(sizes)) > 1:
        raise ValueError(
            f"{name}: the tensors of shard {index} have different first dimensions {sizes}; each "
            "must hold one row per data point of the shard"
        )
    if sizes[0] == 0:
        raise ValueError(
            f"{name}: shard {index} has no data (its first dimension is 0); drop the shard, or "
            "give it data"
        )
    return parts


# ---------------------------------------------------------------------- approximations


@dataclass
class LocalGaussian:
    r"""A Gaussian approximation of one shard's likelihood in unconstrained coordinates.

    :math:`\log q(z) = c + h^\top z - \frac12 z^\top P z`, an unnormalised Gaussian (or, where
    :math:`P` is singular, a Gaussian in the directions the shard informs and flat in the
    others).

    Attributes:
        precision: :math:`P`, ``(D, D)``, symmetric positive semi-definite.
        linear: :math:`h`, ``(D,)``.
        offset: :math:`c`, a scalar tensor (only the reported log density depends on it).
    """

    precision: torch.Tensor
    linear: torch.Tensor
    offset: torch.Tensor

    @classmethod
    def from_mean(cls, mean: torch.Tensor, precision: torch.Tensor) -> LocalGaussian:
        r"""The approximation :math:`N(z; m, P^{-1})` up to a constant (:math:`\log q(m) = 0`)."""
        linear = precision @ mean
        return cls(precision, linear, -0.5 * (mean @ linear))

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log q` at each row of ``z`` ``(P, D)``: ``(P,)``."""
        return self.offset + z @ self.linear - 0.5 * ((z @ self.precision) * z).sum(-1)

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla\log q(z) = h - P z` at each row of ``z``: ``(P, D)``."""
        return self.linear - z @ self.precision

    def flatten(self) -> torch.Tensor:
        """``[P.flatten(), h, c]`` as one vector (what the ranks exchange)."""
        return torch.cat([self.precision.reshape(-1), self.linear, self.offset.reshape(1)])

    @classmethod
    def unflatten(cls, flat: torch.Tensor, dim: int) -> LocalGaussian:
        """Inverse of :meth:`flatten`."""
        square = dim * dim
        return cls(
            flat[:square].reshape(dim, dim), flat[square : square + dim], flat[square + dim]
        )


# ---------------------------------------------------------------------- state


@dataclass
class FederatedState:
    """State of a federated (FSGLD / DSGLD) run.

    Attributes:
        step: Local steps taken by every chain (warm-up included).
        round: Rounds completed.
        position: ``(C, D)`` unconstrained positions of the chains.
        probabilities: ``(K,)`` probability that a chain picks each shard in a round (float64).
        sizes: Number of data points of each shard.
        seed: The seed the shard choice and every shard's generator derive from.
        selection: Generator of the shard choices (the same on every rank).
        generators: Each shard's generator (minibatches, Langevin noise); in a distributed run
            a rank holds only its own (the others are ``None``).
        approximations: The shards' likelihood approximations (``None`` for DSGLD).
        draws: Kept draws so far, each ``(C, D)``.
        draw_log_density: Each kept draw's log density estimate, ``(C,)``.
        draw_shard: The shard each chain was at for each kept draw, ``(C,)``.
        step_sizes: Step size at each kept draw.
    """

    step: int
    round: int
    position: torch.Tensor
    probabilities: torch.Tensor
    sizes: list[int]
    seed: int
    selection: torch.Generator
    generators: list[torch.Generator | None]
    approximations: list[LocalGaussian] | None = None
    draws: list[torch.Tensor] = field(default_factory=list)
    draw_log_density: list[torch.Tensor] = field(default_factory=list)
    draw_shard: list[torch.Tensor] = field(default_factory=list)
    step_sizes: list[float] = field(default_factory=list)

    @property
    def num_shards(self) -> int:
        """Number of shards :math:`K`."""
        return len(self.sizes)

    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot for checkpoints (generators as their states)."""
        return {
            "step": self.step,
            "round": self.round,
            "position": self.position.clone(),
            "probabilities": self.probabilities.clone(),
            "sizes": list(self.sizes),
            "seed": self.seed,
            "selection": self.selection.get_state(),
            "generators": [None if g is None else g.get_state() for g in self.generators],
            "approximations": None
            if self.approximations is None
            else [dataclasses.astuple(q) for q in self.approximations],
            "draws": [d.clone() for d in self.draws],
            "draw_log_density": [d.clone() for d in self.draw_log_density],
            "draw_shard": [d.clone() for d in self.draw_shard],
            "step_sizes": list(self.step_sizes),
        }

    @classmethod
    def from_state_dict(cls, payload: Mapping[str, Any]) -> FederatedState:
        """Inverse of :meth:`state_dict`."""
        values = dict(payload)
        device = values["position"].device
        selection = torch.Generator()
        selection.set_state(values["selection"])
        generators = []
        for saved in values["generators"]:
            if saved is None:
                generators.append(None)
            else:
                generator = torch.Generator(device=device)
                generator.set_state(saved)
                generators.append(generator)
        values["selection"], values["generators"] = selection, generators
        if values["approximations"] is not None:
            values["approximations"] = [LocalGaussian(*q) for q in values["approximations"]]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class _RoundCounter:
    """What :func:`run_steps` counts: rounds, not local steps."""

    def __init__(self, state: FederatedState) -> None:
        self.state = state

    @property
    def step(self) -> int:
        return self.state.round


@dataclass
class _Context:
    """The shards of one run: potentials of the local shards and facts about all of them."""

    key: tuple
    backend: _Simulation | _Collective
    models: dict[int, _ShardModel]
    potentials: dict[int, Potential]
    sizes: list[int]
    dim: int

    @property
    def any_potential(self) -> Potential:
        return next(iter(self.potentials.values()))


# ---------------------------------------------------------------------- samplers


class FSGLD:
    r"""Federated SGLD with conducive gradients (El Mekkaoui et al., UAI 2021).

    See the module documentation for the algorithm. Chains are rows of one ``(C, D)`` tensor in
    the unconstrained space of Pyro's bijections; chains that pick the same shard in a round are
    moved together by one vectorized evaluation of the model per local step.

    Args:
        model: A Pyro model with continuous global latent sites, called as
            ``model(*shard, *args, **kwargs)`` where ``shard`` is one shard's tensor(s) (or a
            minibatch of it). Its data plate must take its size from the data
            (``pyro.plate("data", len(x))``) and must not subsample: FSGLD draws the
            minibatches itself (``batch_size``) and rescales the likelihood.
        step_size: Step size :math:`\epsilon`, or a schedule ``t -> step size`` over local
            steps (see :mod:`pplx.inference.sgmcmc`).
        local_steps: Local steps :math:`L` per round (communication happens once per round).
        batch_size: Minibatch size :math:`n` of each local step, drawn without replacement
            from the chain's shard (shared by the chains at that shard); ``None``: the whole
            shard.
        shard_probabilities: :math:`f_s`, the probability that a chain picks shard ``s`` in a
            round: ``None`` (proportional to the shards' sizes), ``"uniform"``, or ``K``
            positive weights (normalised).
        init: ``"prior"`` or ``"uniform"`` (unconstrained coordinates in ``(-2, 2)``), a
            ``(C, D)`` tensor, or a dict of constrained site values.
        transforms: Site name to a ``Transform`` overriding Pyro's bijection.
        distributed: Run across the ranks of the ``torch.distributed`` process group, one shard
            per rank (each rank passes its own shard); see :func:`init_distributed`.
        laplace_iterations: L-BFGS iterations of each shard's Laplace fit.
        divergence_threshold: A draw whose log density is this many nats below the median of
            its chain's draws at the same shard is flagged as divergent.
        checkpoint: Checkpoint file, written every ``checkpoint_every`` rounds and at the end
            (in a distributed run each rank writes ``<checkpoint>.rank<r>``).
        checkpoint_every: Rounds between checkpoints.
        progress_bar: Show a progress bar over rounds (``None``: on a terminal).
        name: Engine name in results and checkpoints.
    """

    default_name = "fsgld"
    #: Whether the conducive correction is applied (False gives DSGLD).
    conducive = True

    def __init__(
        self,
        model: Callable,
        step_size: float | Callable[[int], float] = 1e-3,
        local_steps: int = 10,
        batch_size: int | None = None,
        shard_probabilities: str | Sequence[float] | torch.Tensor | None = None,
        init: str | torch.Tensor | Mapping[str, torch.Tensor] = "prior",
        transforms: Mapping[str, Transform] | None = None,
        distributed: bool = False,
        laplace_iterations: int = 200,
        divergence_threshold: float = 1000.0,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 100,
        progress_bar: bool | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or self.default_name
        try:
            self.schedule = _schedule(step_size)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None
        for label, value in (
            ("local_steps", local_steps),
            ("laplace_iterations", laplace_iterations),
            ("checkpoint_every", checkpoint_every),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {label} must be an integer >= 1, got {value!r}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(
                f"{self.name}: batch_size must be None (whole shards) or an integer >= 1, got "
                f"{batch_size!r}"
            )
        self.weights = self._check_weights(shard_probabilities)
        if not divergence_threshold > 0:
            raise ValueError(
                f"{self.name}: divergence_threshold must be positive, got {divergence_threshold}"
            )
        self.model = model
        self.local_steps = local_steps
        self.batch_size = batch_size
        self.init_strategy = init
        self.transforms = dict(transforms or {})
        self.distributed = bool(distributed)
        self.laplace_iterations = laplace_iterations
        self.divergence_threshold = divergence_threshold
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every = checkpoint_every
        self.progress_bar = progress_bar
        self._context_cache: _Context | None = None

    def _check_weights(self, weights: Any) -> torch.Tensor | str | None:
        if weights is None:
            return None
        if isinstance(weights, str):
            if weights != "uniform":
                raise ValueError(
                    f"{self.name}: shard_probabilities must be None (proportional to shard "
                    f"sizes), 'uniform' or a sequence of positive weights, got {weights!r}"
                )
            return weights
        try:
            tensor = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{self.name}: shard_probabilities must be a sequence of positive numbers, got "
                f"{weights!r}"
            ) from None
        if tensor.dim() != 1 or tensor.numel() == 0:
            raise ValueError(
                f"{self.name}: shard_probabilities must be a flat sequence with one weight per "
                f"shard, got shape {tuple(tensor.shape)}"
            )
        if not (torch.isfinite(tensor).all() and (tensor > 0).all()):
            raise ValueError(
                f"{self.name}: every shard needs a positive, finite probability (a shard that is "
                f"never picked would get weight 1/0), got {tensor.tolist()}"
            )
        return tensor

    def _probabilities(self, sizes: list[int]) -> torch.Tensor:
        if self.weights is None:
            weights = torch.tensor(sizes, dtype=torch.float64)
        elif isinstance(self.weights, str):
            weights = torch.ones(len(sizes), dtype=torch.float64)
        else:
            if self.weights.numel() != len(sizes):
                raise ValueError(
                    f"{self.name}: shard_probabilities has {self.weights.numel()} entries but "
                    f"there are {len(sizes)} shards; give one weight per shard"
                )
            weights = self.weights
        return weights / weights.sum()

    # ------------------------------------------------------------------ set-up
    def _backend(self, num_shards: int) -> _Simulation | _Collective:
        return _Collective(self.name) if self.distributed else _Simulation(num_shards)

    def _local_shards(self, shards: Any) -> list[tuple[torch.Tensor, ...]]:
        if self.distributed:
            return [_as_shard(shards, dist.get_rank() if dist.is_initialized() else 0, self.name)]
        if isinstance(shards, torch.Tensor) or not isinstance(shards, Sequence):
            raise TypeError(
                f"{self.name}: shards must be a list of shards (each a tensor or a tuple of "
                f"tensors), got {type(shards).__name__}; to split one data set use e.g. "
                "list(x.chunk(4)). With distributed=True pass this rank's shard instead."
            )
        if len(shards) == 0:
            raise ValueError(f"{self.name}: shards is empty; give at least one shard")
        return [_as_shard(shard, s, self.name) for s, shard in enumerate(shards)]

    def _context(self, shards: Any, args: tuple, kwargs: dict) -> _Context:
        """Potentials of the local shards (cached while the same tensors are passed)."""
        num = 1 if self.distributed else (len(shards) if isinstance(shards, Sequence) else 0)
        backend = self._backend(num)
        error: BaseException | None = None
        try:
            local = self._local_shards(shards)
        except (TypeError, ValueError) as exc:
            local, error = [], exc
        backend.agree(error, self.name)
        key = (
            tuple(tuple(id(p) for p in shard) for shard in local),
            tuple(id(a) for a in args),
            tuple((k, id(v)) for k, v in sorted(kwargs.items())),
            backend.rank,
            backend.world_size,
        )
        cached = self._context_cache is not None and self._context_cache.key == key
        if all(backend.gather_objects(cached)):  # every rank must take the same path
            return self._context_cache
        models, potentials = {}, {}
        try:
            for s, data in zip(backend.local_shards, local):
                models[s], potentials[s] = self._shard_potential(s, data, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - every rank must learn of it (agree re-raises)
            error = exc
        backend.agree(error, self.name)
        facts = backend.gather_objects(
            [(s, models[s].size, potentials[s].dim, str(potentials[s].dtype)) for s in models]
        )
        facts = [fact for group in facts for fact in group]
        sizes = [size for _, size, _, _ in facts]
        dims = {dim for _, _, dim, _ in facts}
        if len(dims) > 1 or len({dtype for *_, dtype in facts}) > 1:
            raise ModelError(
                f"{self.name}: the model gives different latent spaces on different shards "
                f"(shard, size, dimension, dtype: {facts}); every shard must have the same "
                "latent sites with the same shapes and dtype"
            )
        if self.batch_size is not None:
            small = [s for s, size in enumerate(sizes) if size < self.batch_size]
            if small:
                raise ValueError(
                    f"{self.name}: batch_size={self.batch_size} is larger than shard(s) {small} "
                    f"(sizes {[sizes[s] for s in small]}); lower batch_size to at most "
                    f"{min(sizes)} or use batch_size=None for whole shards"
                )
        self._context_cache = _Context(key, backend, models, potentials, sizes, dims.pop())
        return self._context_cache

    def _shard_potential(
        self, index: int, data: tuple[torch.Tensor, ...], args: tuple, kwargs: dict
    ) -> tuple[_ShardModel, Potential]:
        shard_model = _ShardModel(self.model, data, args, kwargs)
        # Tracing draws latents from the prior: keep the caller's random stream (and module
        # buffers) untouched, so that the run does not depend on how many shards it builds.
        with untouched_state():
            trace = trace_or_explain(shard_model, "model")
            shard_model.observed = frozenset(
                name for name, site in sample_sites(trace).items() if is_data(site)
            )
            potential = Potential(shard_model, transforms=self.transforms, engine=self.name)
        if potential.subsamples:
            plates = ", ".join(
                f"{name!r} (subsample_size={batch})"
                for name, (_, batch) in potential.subsample_plates.items()
            )
            raise ModelError(
                f"{self.name}: the model subsamples its data plate {plates}; {self.name} draws "
                "each shard's minibatches itself. Remove subsample_size from the model and pass "
                "batch_size= to the sampler."
            )
        if self.batch_size is not None and self.batch_size < shard_model.size:
            shard_model.use(torch.arange(self.batch_size), 1.0)
            try:
                with untouched_state():
                    potential.log_density(potential.init_particles(1, "uniform"))
            except Exception as exc:  # noqa: BLE001 - re-raised with advice
                raise ModelError(
                    f"{self.name}: the model fails on a minibatch of {self.batch_size} rows of "
                    f"shard {index} ({type(exc).__name__}: {exc}). {self.name} calls the model "
                    "on minibatches of the shard: take sizes from the data (pyro.plate('data', "
                    "len(x))) and index every per-datum tensor by its first dimension."
                ) from exc
            finally:
                shard_model.use(None, 1.0)
        return shard_model, potential

    def _fit(self, ctx: _Context, index: int, start: torch.Tensor) -> LocalGaussian:
        """Laplace approximation of shard ``index``'s likelihood (see the module docs)."""
        shard_model, potential = ctx.models[index], ctx.potentials[index]
        shard_model.use(None, 1.0)
        z = start.detach().clone()
        if not torch.isfinite(z).all():
            z = torch.zeros_like(z)
        z.requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [z],
            lr=1.0,
            max_iter=self.laplace_iterations,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = -potential.log_density(z.unsqueeze(0))[0]
            loss.backward()
            return loss

        optimizer.step(closure)
        mode = z.detach()
        if not torch.isfinite(mode).all():
            raise FloatingPointError(
                f"{self.name}: the Laplace fit of shard {index} diverged (non-finite mode); "
                "check the model on that shard, or start the chains (init=) nearer the posterior"
            )
        if optimizer.state[z].get("n_iter", 0) >= self.laplace_iterations:
            warnings.warn(
                f"{self.name}: the Laplace fit of shard {index} stopped after "
                f"laplace_iterations={self.laplace_iterations} L-BFGS iterations before "
                "converging; its Gaussian approximation is still a valid Taylor expansion, but "
                "the conducive gradient may be noisier. Raise laplace_iterations.",
                RuntimeWarning,
                stacklevel=4,
            )

        def log_likelihood(point: torch.Tensor) -> torch.Tensor:
            shard_model.use(None, 1.0)
            full = potential.log_density(point.unsqueeze(0))[0]
            shard_model.use(None, 0.0)
            prior = potential.log_density(point.unsqueeze(0))[0]
            shard_model.use(None, 1.0)
            return full - prior

        with torch.enable_grad():
            value = log_likelihood(mode).detach()
            grad = torch.autograd.functional.jacobian(log_likelihood, mode)
            hessian = torch.autograd.functional.hessian(log_likelihood, mode)
        precision = -0.5 * (hessian + hessian.T)
        if not (torch.isfinite(precision).all() and torch.isfinite(grad).all()):
            raise FloatingPointError(
                f"{self.name}: the likelihood of shard {index} has a non-finite gradient or "
                "curvature at its local posterior mode"
            )
        eigenvalues, vectors = torch.linalg.eigh(precision)
        scale = float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
        if eigenvalues.numel() and float(eigenvalues.min()) < -1e-8 * max(scale, 1.0):
            warnings.warn(
                f"{self.name}: the log-likelihood of shard {index} is not concave at its local "
                f"posterior mode (curvature down to {float(eigenvalues.min()):.3g}); the "
                "negative curvature is dropped from its Gaussian approximation.",
                RuntimeWarning,
                stacklevel=4,
            )
            precision = (vectors * eigenvalues.clamp(min=0)) @ vectors.T
        linear = grad + precision @ mode
        offset = value - linear @ mode + 0.5 * (mode @ precision @ mode)
        return LocalGaussian(precision, linear, offset)

    def approximate(
        self, shards: Sequence[Shard] | Shard, *args: Any, **kwargs: Any
    ) -> list[LocalGaussian]:
        """The Laplace approximations of the shards' likelihoods (one per shard).

        In a distributed run (collective: every rank calls it) each rank fits its own shard
        and the fits are all-gathered. The mode search starts at zero in unconstrained space
        (:meth:`init` starts it at the mean of the chains' initial positions).
        """
        ctx = self._context(shards, args, kwargs)
        potential = ctx.any_potential
        start = torch.zeros(ctx.dim, dtype=potential.dtype, device=potential.device)
        return self._fit_all(ctx, start)

    def _fit_all(self, ctx: _Context, start: torch.Tensor) -> list[LocalGaussian]:
        error, local = None, {}
        try:
            for s in ctx.backend.local_shards:
                local[s] = self._fit(ctx, s, start)
        except Exception as exc:  # noqa: BLE001 - every rank must learn of it
            error = exc
        ctx.backend.agree(error, self.name)
        if not ctx.backend.distributed:
            return [local[s] for s in range(len(ctx.sizes))]
        (own,) = local.values()
        return [LocalGaussian.unflatten(f, ctx.dim) for f in ctx.backend.gather(own.flatten())]

    # ------------------------------------------------------------------ functional core
    def init(
        self, shards: Sequence[Shard] | Shard, *args: Any, num_chains: int = 1, **kwargs: Any
    ) -> FederatedState:
        """Initial state: starting positions, shard probabilities, likelihood approximations.

        Args:
            shards: The list of shards (simulation), or this rank's shard (distributed).
            *args: Further model arguments (after the shard's tensors).
            num_chains: Number of chains.
            **kwargs: Model keyword arguments.

        Raises:
            ValueError, TypeError: A shard with no data, tensors of different lengths in a
                shard, a minibatch larger than a shard, a wrong number of shard probabilities.
            ModelError: Discrete latent sites, a model that subsamples its data plate or fails
                on a minibatch, or shards that give different latent spaces.
        """
        if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(
                f"{self.name}: num_chains must be an integer >= 1, got {num_chains!r}"
            )
        ctx = self._context(shards, args, kwargs)
        backend = ctx.backend
        probabilities = self._probabilities(ctx.sizes)
        potential = ctx.any_potential
        position = torch.zeros(num_chains, ctx.dim, dtype=potential.dtype, device=potential.device)
        seed = torch.zeros((), dtype=torch.int64)
        error = None
        if backend.rank == 0:
            try:
                position = potential.initial_points(self.init_strategy, num_chains, "positions")
                position = position.detach().clone()
                seed = torch.randint(0, 2**62, (), dtype=torch.int64)
            except Exception as exc:  # noqa: BLE001 - every rank must learn of it
                error = exc
        backend.agree(error, self.name)
        position = backend.broadcast(position)
        seed = int(backend.broadcast(seed))
        approximations = None
        if self.conducive:
            approximations = self._fit_all(ctx, position.mean(0))
        selection = torch.Generator().manual_seed(seed)
        generators: list[torch.Generator | None] = [None] * len(ctx.sizes)
        for s in backend.local_shards:
            generators[s] = torch.Generator(device=position.device).manual_seed(seed + 1 + s)
        return FederatedState(
            step=0,
            round=0,
            position=position,
            probabilities=probabilities,
            sizes=list(ctx.sizes),
            seed=seed,
            selection=selection,
            generators=generators,
            approximations=approximations,
        )

    def _conducive_terms(
        self, state: FederatedState, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""The conducive terms of shard ``index`` as a quadratic ``(A, b, c)``.

        :math:`\sum_k \log q_k(z) - \frac1{f_s}\log q_s(z) = c + b^\top z - \frac12 z^\top A z`.
        """
        qs = state.approximations
        assert qs is not None
        inverse = 1.0 / float(state.probabilities[index])
        precision = torch.stack([q.precision for q in qs]).sum(0)
        linear = torch.stack([q.linear for q in qs]).sum(0)
        offset = torch.stack([q.offset for q in qs]).sum(0)
        own = qs[index]
        return (
            precision - inverse * own.precision,
            linear - inverse * own.linear,
            offset - inverse * own.offset,
        )

    def _estimate(
        self,
        ctx: _Context,
        state: FederatedState,
        index: int,
        z: torch.Tensor,
        indices: torch.Tensor | None,
        terms: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shard_model, potential = ctx.models[index], ctx.potentials[index]
        size = shard_model.size
        batch = size if indices is None else int(indices.numel())
        shard_model.use(indices, size / (batch * float(state.probabilities[index])))
        log_p, grad = potential.value_and_grad(z)
        if terms is not None:
            a, b, c = terms
            za = z @ a
            grad = grad + (b - za)
            log_p = log_p + (c + z @ b - 0.5 * (za * z).sum(-1))
        return log_p, grad

    def gradient(
        self,
        state: FederatedState,
        shard: int,
        z: torch.Tensor,
        indices: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The local log density estimate and gradient at shard ``shard`` for positions ``z``.

        Uses the shards of the last :meth:`init` / :meth:`run` (in a distributed run only this
        rank's shard is available).

        Args:
            state: A state from :meth:`init` (for :math:`f_s` and the approximations).
            shard: Shard index :math:`s`.
            z: ``(P, D)`` unconstrained positions.
            indices: Minibatch of data-point indices of the shard (``None``: all of them).

        Returns:
            ``(log_density (P,), grad (P, D))``: :math:`\log p(z) + \frac{N_s}{f_s n}\sum_{i\in
            \mathcal B}\log p(x_{s,i}\mid z)` (plus the conducive terms for FSGLD) and its
            gradient.
        """
        ctx = self._context_cache
        if ctx is None or shard not in ctx.potentials:
            raise ValueError(
                f"{self.name}: shard {shard} is not loaded here; call init() or run() with the "
                "shards first"
            )
        terms = self._conducive_terms(state, shard) if self.conducive else None
        return self._estimate(ctx, state, shard, z, indices, terms)

    def step(
        self,
        state: FederatedState,
        shards: Sequence[Shard] | Shard,
        *args: Any,
        num_steps: int | None = None,
        keep: Callable[[int], bool] | None = None,
        **kwargs: Any,
    ) -> FederatedState:
        """One round: every chain picks a shard and takes ``num_steps`` local steps there.

        ``state`` is updated in place and returned. In a distributed run this is collective.

        Args:
            state: The current state.
            shards: The shards given to :meth:`init`.
            *args: Further model arguments.
            num_steps: Local steps of this round (default ``local_steps``).
            keep: ``t -> bool``: keep the draw of global local step ``t`` (the position that
                step evaluated); by default nothing is kept.
            **kwargs: Model keyword arguments.
        """
        return self._round(self._context(shards, args, kwargs), state, num_steps, keep)

    def _round(
        self,
        ctx: _Context,
        state: FederatedState,
        num_steps: int | None,
        keep: Callable[[int], bool] | None,
    ) -> FederatedState:
        backend = ctx.backend
        if state.sizes != ctx.sizes:
            raise ValueError(
                f"{self.name}: the state was made for {len(state.sizes)} shard(s) of sizes "
                f"{state.sizes}, but these shards have sizes {ctx.sizes}; resume with the same "
                "shards (and, distributed, the same number of ranks)"
            )
        length = self.local_steps if num_steps is None else num_steps
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"{self.name}: num_steps must be an integer >= 1, got {length!r}")
        chains, dim = state.position.shape
        times = range(state.step, state.step + length)
        step_sizes = [float(self.schedule(t)) for t in times]
        for t, eps in zip(times, step_sizes):
            if not (eps > 0 and math.isfinite(eps)):
                raise ValueError(f"{self.name}: the step-size schedule gave {eps} at step {t}")
        rows = {t - state.step: r for r, t in enumerate(t for t in times if keep and keep(t))}
        assignment = torch.multinomial(
            state.probabilities, chains, replacement=True, generator=state.selection
        ).to(state.position.device)
        dtype, device = state.position.dtype, state.position.device
        position = torch.zeros_like(state.position)
        draws = torch.zeros(len(rows), chains, dim, dtype=dtype, device=device)
        log_density = torch.zeros(len(rows), chains, dtype=dtype, device=device)
        failed = torch.zeros(len(ctx.sizes), dtype=dtype, device=device)
        error: BaseException | None = None
        try:
            for s in backend.local_shards:
                members = (assignment == s).nonzero().squeeze(-1)
                if members.numel():
                    z = self._local_steps(
                        ctx, state, s, members, times, step_sizes, rows, draws, log_density
                    )
                    position[members] = z
        except Exception as exc:  # noqa: BLE001 - re-raised below (after telling the others)
            if not backend.distributed:
                raise
            error = exc
            failed[backend.rank] = 1
        if backend.distributed:
            flat = backend.sum(
                torch.cat(
                    [position.reshape(-1), draws.reshape(-1), log_density.reshape(-1), failed]
                )
            )
            sizes = [position.numel(), draws.numel(), log_density.numel()]
            position, draws, log_density, failed = flat.split(sizes + [failed.numel()])
            position = position.reshape(chains, dim)
            draws = draws.reshape(len(rows), chains, dim)
            log_density = log_density.reshape(len(rows), chains)
            if error is not None:
                raise error
            if failed.any():
                ranks = failed.nonzero().flatten().tolist()
                raise RuntimeError(
                    f"{self.name}: rank(s) {ranks} failed in round {state.round} (see their "
                    "error); this rank stops too"
                )
        shard_of_chain = assignment.to("cpu")
        for local, row in rows.items():
            state.draws.append(draws[row])
            state.draw_log_density.append(log_density[row])
            state.draw_shard.append(shard_of_chain)
            state.step_sizes.append(step_sizes[local])
        state.position = position
        state.step += length
        state.round += 1
        return state

    def _local_steps(
        self,
        ctx: _Context,
        state: FederatedState,
        index: int,
        members: torch.Tensor,
        times: range,
        step_sizes: list[float],
        rows: dict[int, int],
        draws: torch.Tensor,
        log_density: torch.Tensor,
    ) -> torch.Tensor:
        """Move the chains ``members`` through ``len(times)`` local steps at shard ``index``."""
        generator = state.generators[index]
        assert generator is not None, f"shard {index} is not held by this process"
        terms = self._conducive_terms(state, index) if self.conducive else None
        size = ctx.sizes[index]
        z = state.position[members]
        for local, (t, eps) in enumerate(zip(times, step_sizes)):
            indices = None
            if self.batch_size is not None and self.batch_size < size:
                indices = torch.randperm(size, generator=generator, device=z.device)
                indices = indices[: self.batch_size].to(ctx.models[index].data[0].device)
            try:
                log_p, grad = self._estimate(ctx, state, index, z, indices, terms)
            except (ValueError, RuntimeError) as error:
                if t == 0:
                    raise
                raise FloatingPointError(
                    f"{self.name}: evaluating the model at shard {index} failed at step {t} "
                    f"({type(error).__name__}); the chains have most likely diverged to values "
                    "where a distribution is no longer defined. Lower the step size."
                ) from error
            if not torch.isfinite(grad).all():
                bad = int((~torch.isfinite(grad).all(-1)).sum())
                raise FloatingPointError(
                    f"{self.name}: non-finite gradient in {bad} chain(s) at shard {index}, step "
                    f"{t}; lower the step size or initialise closer to the posterior."
                )
            row = rows.get(local)
            if row is not None:
                draws[row, members] = z
                log_density[row, members] = log_p.detach()
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
            z = (z + 0.5 * eps * grad + math.sqrt(eps) * noise).detach()
        ctx.models[index].use(None, 1.0)
        return z

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_path(self, backend: _Simulation | _Collective) -> Path | None:
        if self.checkpoint is None:
            return None
        if backend.distributed:
            return self.checkpoint.with_name(f"{self.checkpoint.name}.rank{backend.rank}")
        return self.checkpoint

    def save(self, state: FederatedState, path: str | Path) -> None:
        """Write ``state`` to ``path`` atomically."""
        save_checkpoint(path, self.name, state.state_dict())

    def load(self, path: str | Path) -> FederatedState:
        """Read a state written by :meth:`save`."""
        return FederatedState.from_state_dict(load_checkpoint(path, self.name))

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        shards: Sequence[Shard] | Shard,
        *args: Any,
        num_samples: int = 1000,
        warmup_steps: int = 1000,
        num_chains: int = 1,
        thinning: int = 1,
        resume: bool = False,
        state: FederatedState | None = None,
        **kwargs: Any,
    ) -> Result:
        """Run ``num_chains`` chains for ``warmup_steps + num_samples * thinning`` local steps.

        Steps are grouped in rounds of ``local_steps`` (the last round may be shorter). In a
        distributed run every rank calls this with its own shard and gets the same Result.

        Args:
            shards: The list of shards (simulation), or this rank's shard (distributed).
            *args: Further model arguments (after the shard's tensors).
            num_samples: Draws kept per chain.
            warmup_steps: Local steps discarded before the first kept draw.
            num_chains: Number of chains, run as one batch.
            thinning: Keep every ``thinning``-th local step after warm-up.
            resume: Continue from ``checkpoint`` if that file exists.
            state: Continue from this state.
            **kwargs: Model keyword arguments.

        Returns:
            A :class:`~pplx.inference.Result` with draws ``(num_chains, num_samples, ...)`` and
            ``sample_stats`` ``lp`` (the local log density estimate at each draw, see
            :meth:`gradient`), ``step_size``, ``shard`` (the shard each draw was made at) and
            ``diverging``.
        """
        for label, value, low in (
            ("num_samples", num_samples, 1),
            ("warmup_steps", warmup_steps, 0),
            ("thinning", thinning, 1),
            ("num_chains", num_chains, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"{self.name}: {label} must be an integer >= {low}, got {value!r}"
                )
        ctx = self._context(shards, args, kwargs)
        backend = ctx.backend
        self._same_on_every_rank(
            backend,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            num_chains=num_chains,
            thinning=thinning,
            resume=resume,
            continued=state is not None and (state.step, state.round),
        )
        path = self._checkpoint_path(backend)
        error: BaseException | None = None
        try:
            if path is not None:
                check_writable(path)
        except OSError as exc:
            error = exc
        backend.agree(error, self.name)
        if state is None:
            found = backend.gather_objects(bool(resume and path is not None and path.exists()))
            if all(found):
                try:
                    state = self.load(path)
                except Exception as exc:  # noqa: BLE001 - every rank must learn of it
                    error = exc
                backend.agree(error, self.name)
                self._check_resumed(ctx, state)
            elif any(found):
                raise RuntimeError(
                    f"{self.name}: only rank(s) {[r for r, f in enumerate(found) if f]} have a "
                    "checkpoint to resume from; give every rank its checkpoint or none"
                )
            else:
                state = self.init(shards, *args, num_chains=num_chains, **kwargs)
        total = warmup_steps + num_samples * thinning

        def keep(t: int) -> bool:
            kept = t + 1 - warmup_steps
            return kept > 0 and kept % thinning == 0

        rounds = state.round + math.ceil(max(total - state.step, 0) / self.local_steps)

        def advance(counter: _RoundCounter) -> tuple[None, bool]:
            self._round(ctx, state, min(self.local_steps, total - state.step), keep)
            return None, state.step >= total

        wall_time = run_steps(
            _RoundCounter(state),
            rounds,
            advance,
            name=self.name,
            progress=self.progress_bar,
            checkpoint=path,
            checkpoint_every=self.checkpoint_every,
            save=lambda counter, where: self.save(counter.state, where),
        )
        return self.result(state, wall_time=wall_time)

    def _same_on_every_rank(self, backend: _Simulation | _Collective, **settings: Any) -> None:
        """Refuse to start when the ranks were given different settings (they would hang)."""
        if not backend.distributed:
            return
        settings.update(
            engine=self.name,
            local_steps=self.local_steps,
            batch_size=self.batch_size,
            step_sizes=[float(self.schedule(t)) for t in (0, 1, 1000)],
            weights=None if self.weights is None else repr(self.weights),
        )
        every = backend.gather_objects(settings)
        differ = sorted(k for k in settings if len({repr(s[k]) for s in every}) > 1)
        if differ:
            values = {k: [s[k] for s in every] for k in differ}
            raise ValueError(
                f"{self.name}: the ranks were given different settings {values} (by rank); "
                "every rank must run the same sampler with the same arguments"
            )

    def _check_resumed(self, ctx: _Context, state: FederatedState) -> None:
        rounds = ctx.backend.gather_objects((state.step, state.round))
        if len(set(rounds)) > 1:
            raise ValueError(
                f"{self.name}: the ranks' checkpoints are at different (step, round): {rounds}; "
                "resume from checkpoints written by one run"
            )
        if state.sizes != ctx.sizes:
            raise ValueError(
                f"{self.name}: the checkpoint was written for {len(state.sizes)} shard(s) of "
                f"sizes {state.sizes}, not {len(ctx.sizes)} of sizes {ctx.sizes}"
            )

    def result(self, state: FederatedState, wall_time: float = math.nan) -> Result:
        """The kept draws of ``state`` as a :class:`~pplx.inference.Result`."""
        if not state.draws:
            raise ValueError(f"{self.name}: no draws kept yet (run past the warm-up first)")
        ctx = self._context_cache
        if ctx is None:
            raise ValueError(f"{self.name}: no shards loaded; call init() or run() first")
        potential = ctx.any_potential
        positions = torch.stack(state.draws, 1)  # (C, S, D)
        chains, draws = positions.shape[:2]
        values = potential.to_samples(positions.reshape(chains * draws, -1))
        samples = {k: v.reshape((chains, draws) + v.shape[1:]) for k, v in values.items()}
        lp = torch.stack(state.draw_log_density, 1)
        shard = torch.stack(state.draw_shard, 1).to(lp.device)
        diverging = ~torch.isfinite(lp)
        for s in range(state.num_shards):
            here = shard == s
            median = torch.where(here, lp, torch.nan).nanmedian(1, keepdim=True).values
            diverging |= here & (lp < median - self.divergence_threshold)
        if diverging.any():
            per_shard = ", ".join(
                f"shard {s}: {n}"
                for s in range(state.num_shards)
                if (n := int((diverging & (shard == s)).sum()))
            )
            warnings.warn(
                f"{self.name}: {int(diverging.sum())} draw(s) have a log density more than "
                f"{self.divergence_threshold:g} nats below the median of their chain at the same "
                f"shard ({per_shard}): the chain left the typical set. Lower the step size "
                "(see sample_stats['diverging'] and sample_stats['shard']).",
                RuntimeWarning,
                stacklevel=2,
            )
        step_sizes = torch.tensor(state.step_sizes, dtype=torch.float64).expand(chains, draws)
        return Result(
            self.name,
            samples,
            sample_stats={
                "lp": lp,
                "step_size": step_sizes,
                "shard": shard,
                "diverging": diverging,
            },
            wall_time=wall_time,
            info={
                "num_chains": chains,
                "num_samples": draws,
                "num_steps": state.step,
                "num_rounds": state.round,
                "local_steps": self.local_steps,
                "num_shards": state.num_shards,
                "shard_sizes": list(state.sizes),
                "shard_probabilities": state.probabilities.tolist(),
                "batch_size": self.batch_size,
                "world_size": ctx.backend.world_size,
                "divergences": int(diverging.sum()),
            },
            state=state,
        )


class DSGLD(FSGLD):
    r"""Distributed SGLD (Ahn, Shahbaba & Welling 2014), the baseline of El Mekkaoui et al.

    :class:`FSGLD` without the conducive gradient: each local step uses
    :math:`\nabla\log p(\theta) + \frac{N_s}{f_s n}\sum_{i\in\mathcal B}
    \nabla\log p(x_{s,i}\mid\theta)`. With non-IID shards and several local steps per round
    its chains drift toward each visited shard's own posterior, so their spread is far wider
    than the posterior's (the tests measure it). No likelihood approximations are fitted.
    Takes the arguments of :class:`FSGLD`.
    """

    default_name = "dsgld"
    conducive = False
