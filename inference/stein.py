r"""Stein variational inference on Pyro models: SVGD, SVNG, MSVGD and SVMD.

All four move ``num_particles`` points, held as one ``(P, D)`` tensor, along a kernelised Stein
direction. The model's log density and its gradient for all particles come from one vectorized
evaluation (:class:`~pplx.inference.potential.Potential`), optionally JIT-compiled.

- :class:`SVGD` (Liu & Wang 2016) moves particles in the unconstrained space of Pyro's
  bijections: :math:`z_j \leftarrow z_j + \epsilon\,\phi(z_j)`,
  :math:`\phi(z_j) = \frac1n\sum_i [k(z_i, z_j)\nabla\log\tilde p(z_i) + \nabla_{z_i}k(z_i, z_j)]`.
- :class:`SVNG`: SVGD with the matrix-valued kernel preconditioned by the particles' averaged
  Fisher information (Stein variational natural gradient; Wang et al. 2019).
- :class:`MSVGD` (mirrored SVGD, Shi, Liu & Mackey 2022) moves dual variables
  :math:`\eta = \nabla\psi(\theta)` of a mirror map chosen from each site's support:
  :math:`\eta_j \leftarrow \eta_j + \epsilon\frac1n\sum_i [k(\theta_i, \theta_j)
  (\nabla^2\psi(\theta_i)^{-1}\nabla\log p(\theta_i) + \nabla\cdot\nabla^2\psi(\theta_i)^{-1})
  + \nabla^2\psi(\theta_i)^{-1}\nabla_{\theta_i}k(\theta_i, \theta_j)]`.
- :class:`SVMD` (Stein variational mirror descent, same paper) replaces the kernel by
  :math:`k_\psi(\theta_k, \theta_l) = \frac1n\sum_m (G^{1/2})_{km}\nabla^2\psi(\theta_m)
  (G^{1/2})_{ml}`, with :math:`G` the Gram matrix: the square root comes from its leading
  eigenpairs (those holding ``eigen_threshold`` of the spectrum) and the eigenfunctions'
  gradients from the Nyström formula.

The update itself is applied by a torch optimizer on the particle tensor (default Adagrad,
as in Liu & Wang's code), whose gradient is set to :math:`-\phi`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Transform, biject_to, constraints

from pplx.inference.checkpoint import (
    check_writable,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pplx.inference.kernels import IMQKernel, Kernel, PreconditionedKernel, RBFKernel
from pplx.inference.loop import run_steps
from pplx.inference.mirror import MirrorMap, mirror_map_for
from pplx.inference.potential import Potential, PotentialCache
from pplx.inference.results import Result
from pplx.inference.validation import ModelError, latent_site_names, trace_or_explain
from pplx.traces import site_infos


@dataclass
class SteinState:
    """State of a Stein sampler.

    Attributes:
        step: Number of updates taken.
        particles: ``(P, D)`` tensor: unconstrained coordinates (SVGD, SVNG) or dual
            coordinates of the mirror maps (MSVGD, SVMD).
        optimizer: The torch optimizer that applies the updates.
        bandwidths: Kernel bandwidth per step.
        step_norms: Mean Euclidean norm of the Stein direction per step.
        last_direction: The direction of the last step, ``(P, D)``.
    """

    step: int
    particles: torch.Tensor
    optimizer: torch.optim.Optimizer
    bandwidths: list[float] = field(default_factory=list)
    step_norms: list[float] = field(default_factory=list)
    last_direction: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot for checkpoints."""
        return {
            "step": self.step,
            "particles": self.particles.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "bandwidths": list(self.bandwidths),
            "step_norms": list(self.step_norms),
            "rng": rng_state(),
        }


class _PrimalCoordinates(Transform):
    """Site value from a mirror map's primal coordinates, with no Jacobian term.

    The log density of a site in its primal coordinates is the Lebesgue density the
    distribution already reports (for the simplex: the density of the first ``K - 1``
    coordinates), so the transform contributes nothing to it.
    """

    bijective = True

    def __init__(self, mirror: MirrorMap, site_shape: torch.Size, support: Any) -> None:
        super().__init__()
        self.mirror = mirror
        self.site_shape = torch.Size(site_shape)
        self.dim = mirror.primal_dim(self.site_shape)
        self.domain = constraints.independent(constraints.real, 1)
        self.codomain = support

    def _call(self, theta: torch.Tensor) -> torch.Tensor:
        return self.mirror.to_site(theta, self.site_shape)

    def _inverse(self, value: torch.Tensor) -> torch.Tensor:
        return self.mirror.from_site(value, self.site_shape)

    def log_abs_det_jacobian(self, theta: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return theta.new_zeros(theta.shape[:-1])

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size(shape[:-1]) + self.site_shape

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size(shape[: len(shape) - len(self.site_shape)]) + (self.dim,)


class SVGD:
    r"""Stein variational gradient descent on any Pyro model with continuous latents.

    Args:
        model: A Pyro model; it must broadcast over a batch dimension left of its plates.
        kernel: A :class:`~pplx.inference.kernels.Kernel` (default: RBF, median heuristic).
        num_particles: Number of particles (at least 2).
        optimizer: Torch optimizer class applied to the particles (gradient :math:`-\phi`).
        optim_args: Its keyword arguments (default ``{"lr": 0.1}``).
        init: ``"prior"`` (draw particles from the model) or ``"uniform"`` (unconstrained
            coordinates uniform in ``(-2, 2)``), a dict of constrained site values, or a
            ``(P, D)`` tensor of the potential's coordinates: unconstrained coordinates for
            SVGD and SVNG, primal (constrained) coordinates for MSVGD and SVMD.
        transforms: Site name to a ``Transform`` overriding Pyro's bijection for that site.
        jit: Capture the log density and its gradient once as a graph of ATen operations and
            replay it (:class:`~pplx.inference.potential.Potential`): no Python model code, Pyro
            handler or autograd bookkeeping per step; minibatches drawn by the model's plates
            stay fresh. ``None`` (default): capture where the model allows it, else evaluate
            eagerly; ``True``: the same, with a warning when the model cannot be captured
            (it reads tensor values in Python); ``False``: always eager (easier debugging).
        checkpoint: Checkpoint file, written every ``checkpoint_every`` steps and at the end.
        checkpoint_every: Steps between checkpoints.
        progress_bar: Show a progress bar (``None``: on a terminal).
        name: Engine name in results and checkpoints.
    """

    default_name = "svgd"

    def __init__(
        self,
        model: Callable,
        kernel: Kernel | None = None,
        num_particles: int = 100,
        optimizer: type[torch.optim.Optimizer] = torch.optim.Adagrad,
        optim_args: Mapping[str, Any] | None = None,
        init: str | torch.Tensor | Mapping[str, torch.Tensor] = "prior",
        transforms: Mapping[str, Transform] | None = None,
        jit: bool | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 100,
        progress_bar: bool | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or self.default_name
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(
                f"{self.name}: num_particles must be an integer >= 2 (Stein methods need "
                f"particles to interact), got {num_particles!r}"
            )
        if checkpoint_every < 1:
            raise ValueError(f"{self.name}: checkpoint_every must be >= 1, got {checkpoint_every}")
        self.model = model
        self.kernel = self.default_kernel() if kernel is None else kernel
        self.num_particles = num_particles
        self.optimizer_class = optimizer
        self.optim_args = {"lr": 0.1} if optim_args is None else dict(optim_args)
        self.init_strategy = init
        self.transforms = dict(transforms or {})
        self.jit = jit
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every = checkpoint_every
        self.progress_bar = progress_bar
        self._potentials = PotentialCache()

    def default_kernel(self) -> Kernel:
        """The kernel used when none is given."""
        return RBFKernel()

    # ------------------------------------------------------------------ model -> potential
    def _site_transforms(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Transform]:
        return self.transforms

    def potential(self, *args: Any, **kwargs: Any) -> Potential:
        """The compiled log density of the model on these arguments (cached per arguments)."""
        return self._potentials.get(
            lambda: Potential(
                self.model,
                args,
                kwargs,
                transforms=self._site_transforms(args, kwargs),
                engine=self.name,
                jit=self.jit,
            ),
            args,
            kwargs,
        )

    # ------------------------------------------------------------------ coordinates
    def _initial_coordinates(self, potential: Potential) -> torch.Tensor:
        return potential.initial_points(self.init_strategy, self.num_particles, "particles")

    def to_state_coordinates(self, potential: Potential, z: torch.Tensor) -> torch.Tensor:
        """Coordinates the optimizer moves, from the potential's coordinates."""
        return z

    def to_potential_coordinates(self, potential: Potential, x: torch.Tensor) -> torch.Tensor:
        """The potential's coordinates from the optimizer's."""
        return x

    def direction(
        self, potential: Potential, x: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The update direction for particles ``x`` and the kernel bandwidth."""
        _, score = potential.value_and_grad(x)
        return self.kernel.stein_direction(x, score, step)

    # ------------------------------------------------------------------ functional core
    def init(self, *args: Any, **kwargs: Any) -> SteinState:
        """Initial particles and optimizer.

        Raises:
            ModelError: Discrete latent sites, no latent sites, a model that does not broadcast
                over particles, or a mirror map that does not fit a site.
        """
        potential = self.potential(*args, **kwargs)
        x = self.to_state_coordinates(potential, self._initial_coordinates(potential))
        particles = x.detach().clone().requires_grad_(True)
        optimizer = self.optimizer_class([particles], **self.optim_args)
        return SteinState(step=0, particles=particles, optimizer=optimizer)

    def step(self, state: SteinState, *args: Any, **kwargs: Any) -> SteinState:
        """One update of all particles (``state`` is updated in place and returned)."""
        potential = self.potential(*args, **kwargs)
        with torch.no_grad():
            x = state.particles.detach()
        phi, bandwidth = self.direction(potential, x, state.step)
        phi = phi.detach()
        mean_norm = float(phi.norm(dim=-1).mean())  # non-finite if any entry of phi is
        if not math.isfinite(mean_norm):
            raise FloatingPointError(
                f"{self.name}: the Stein direction became non-finite at step {state.step}; "
                "lower the learning rate or start the particles closer to the posterior."
            )
        state.particles.grad = phi.neg().to(state.particles)
        state.optimizer.step()
        state.step += 1
        state.bandwidths.append(float(bandwidth))
        state.step_norms.append(mean_norm)
        state.last_direction = phi
        return state

    def samples(self, state: SteinState, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Constrained site values of the particles: ``site -> (P, *shape)``."""
        potential = self.potential(*args, **kwargs)
        z = self.to_potential_coordinates(potential, state.particles.detach())
        return potential.to_samples(z)

    # ------------------------------------------------------------------ checkpoints
    def save(self, state: SteinState, path: str | Path) -> None:
        """Write ``state`` (and the random-number state) to ``path`` atomically."""
        save_checkpoint(path, self.name, state.state_dict())

    def load(self, path: str | Path, *args: Any, **kwargs: Any) -> SteinState:
        """Rebuild a state saved by :meth:`save` (args as for :meth:`init`)."""
        payload = load_checkpoint(path, self.name)
        state = self.init(*args, **kwargs)
        if payload["particles"].shape != state.particles.shape:
            raise ValueError(
                f"{self.name}: checkpoint {str(path)!r} holds particles of shape "
                f"{tuple(payload['particles'].shape)}, this sampler has "
                f"{tuple(state.particles.shape)}"
            )
        with torch.no_grad():
            state.particles.copy_(payload["particles"])
        state.optimizer.load_state_dict(payload["optimizer"])
        state.step = payload["step"]
        state.bandwidths = list(payload["bandwidths"])
        state.step_norms = list(payload["step_norms"])
        set_rng_state(payload["rng"])
        return state

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        *args: Any,
        num_steps: int = 1000,
        resume: bool = False,
        state: SteinState | None = None,
        callback: Callable[[SteinState], None] | None = None,
        **kwargs: Any,
    ) -> Result:
        """Move the particles for ``num_steps`` updates and return them as a Result.

        Args:
            *args: Model arguments.
            num_steps: Total number of updates (a resumed run counts earlier ones).
            resume: Continue from ``checkpoint`` if that file exists.
            state: Continue from this state.
            callback: Called after every step with the state (e.g. to track a metric).
            **kwargs: Model keyword arguments.

        Returns:
            A :class:`~pplx.inference.Result`: the particles as the draws of one chain,
            ``sample_stats`` ``step_norm`` (each particle's last update norm) and
            ``bandwidth``, ``trace`` ``bandwidth`` and ``step_norm`` per step, and the final
            :class:`SteinState` in ``state``.
        """
        if num_steps < 0:
            raise ValueError(f"{self.name}: num_steps must be >= 0, got {num_steps}")
        if self.checkpoint is not None:
            check_writable(self.checkpoint)
        if state is None:
            if resume and self.checkpoint is not None and self.checkpoint.exists():
                state = self.load(self.checkpoint, *args, **kwargs)
            else:
                state = self.init(*args, **kwargs)

        def advance(state: SteinState) -> tuple[dict[str, str], bool]:
            self.step(state, *args, **kwargs)
            return {"step_norm": f"{state.step_norms[-1]:.3g}"}, False

        wall_time = run_steps(
            state,
            num_steps,
            advance,
            name=self.name,
            progress=self.progress_bar,
            checkpoint=self.checkpoint,
            checkpoint_every=self.checkpoint_every,
            save=self.save,
            after=callback,
        )
        return self.result(state, *args, wall_time=wall_time, **kwargs)

    def result(
        self, state: SteinState, *args: Any, wall_time: float = math.nan, **kwargs: Any
    ) -> Result:
        """The particles of ``state`` as a one-chain :class:`~pplx.inference.Result`."""
        draws = self.samples(state, *args, **kwargs)
        num = self.num_particles
        stats = {}
        if state.last_direction is not None:
            stats["step_norm"] = state.last_direction.norm(dim=-1).double().cpu()
        if state.bandwidths:
            stats["bandwidth"] = torch.full((num,), state.bandwidths[-1], dtype=torch.float64)
        return Result.from_draws(
            self.name,
            draws,
            sample_stats=stats,
            trace={
                "bandwidth": torch.tensor(state.bandwidths, dtype=torch.float64),
                "step_norm": torch.tensor(state.step_norms, dtype=torch.float64),
            },
            wall_time=wall_time,
            info={
                "num_particles": num,
                "num_steps": state.step,
                "kernel": type(self.kernel).__name__,
                "optimizer": self.optimizer_class.__name__,
            },
            state=state,
        )


class SVNG(SVGD):
    r"""Stein variational natural gradient: SVGD with an averaged-Fisher preconditioned kernel.

    The direction is :math:`Q^{-1}\phi_Q` with :math:`Q` the particles' averaged Fisher
    information (see :class:`~pplx.inference.kernels.PreconditionedKernel`), so that badly
    scaled or correlated posteriors converge like well-conditioned ones. Takes the same
    arguments as :class:`SVGD`; ``kernel`` defaults to ``PreconditionedKernel(RBFKernel())``.
    """

    default_name = "svng"

    def default_kernel(self) -> Kernel:  # noqa: D102
        return PreconditionedKernel(RBFKernel(), metric="fisher")


class MSVGD(SVGD):
    """Mirrored SVGD for constrained targets (Shi, Liu & Mackey 2022).

    Each latent site gets the entropic mirror map of its support (simplex, positive orthant,
    box; the identity for real sites), or the one given in ``mirror_maps``. Particles move in
    the dual space, so they never leave the support and need no bijection. Takes the arguments
    of :class:`SVGD` plus ``mirror_maps`` (site name to
    :class:`~pplx.inference.mirror.MirrorMap`); ``kernel`` defaults to IMQ.
    """

    default_name = "msvgd"

    def __init__(
        self,
        model: Callable,
        *args: Any,
        mirror_maps: Mapping[str, MirrorMap] | None = None,
        **kwargs: Any,
    ) -> None:
        self.mirror_maps = dict(mirror_maps or {})
        super().__init__(model, *args, **kwargs)
        if isinstance(self.kernel, PreconditionedKernel):
            raise ValueError(
                f"{self.name}: mirrored samplers take a scalar kernel (RBFKernel, IMQKernel); "
                "the preconditioned kernel is for SVGD (see SVNG)"
            )
        if self.transforms:
            raise ValueError(
                f"{self.name}: use mirror_maps=, not transforms=, for mirrored samplers"
            )

    def default_kernel(self) -> Kernel:  # noqa: D102
        return IMQKernel()

    def _site_transforms(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Transform]:
        trace = trace_or_explain(self.model, "model", *args, **kwargs)
        infos = site_infos(trace)
        latents = latent_site_names(trace)
        unknown = sorted(set(self.mirror_maps) - set(latents))
        if unknown:
            raise ModelError(
                f"{self.name}: mirror_maps names site(s) {unknown} that are not latent sites of "
                f"the model; latent sites: {latents}"
            )
        transforms = {}
        for name in latents:
            info = infos[name]
            if info.discrete:
                continue  # Potential reports these
            mirror = self.mirror_maps.get(name)
            try:
                if mirror is None:
                    mirror = mirror_map_for(info.support, name)
                else:
                    mirror.check(info.support, name)
                transforms[name] = _PrimalCoordinates(mirror, info.shape, info.support)
            except ValueError as error:
                raise ModelError(f"{self.name}: site {name!r}: {error}") from None
        return transforms

    # Blockwise application of each site's mirror map to the flat coordinates.
    def _blocks(self, potential: Potential) -> Iterator[tuple[slice, MirrorMap]]:
        for block in potential.blocks:
            yield slice(block.offset, block.offset + block.size), block.transform.mirror

    def _map(self, potential: Potential, method: str, theta: torch.Tensor, *v: torch.Tensor):
        parts = []
        for cols, mirror in self._blocks(potential):
            parts.append(getattr(mirror, method)(theta[..., cols], *(u[..., cols] for u in v)))
        return torch.cat(parts, -1)

    def _initial_coordinates(self, potential: Potential) -> torch.Tensor:
        if self.init_strategy != "uniform":
            return super()._initial_coordinates(potential)
        # "uniform" means Stan's convention in Pyro's unconstrained space, as for SVGD
        values = {}
        for block in potential.blocks:
            bijection = biject_to(block.info.support)
            shape = (self.num_particles, *bijection.inv.forward_shape(block.info.shape))
            u = torch.rand(shape, dtype=potential.dtype, device=potential.device) * 4 - 2
            values[block.name] = bijection(u)
        return potential.pack(values)

    def to_state_coordinates(self, potential: Potential, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._map(potential, "to_dual", z)

    def to_potential_coordinates(self, potential: Potential, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._map(potential, "to_primal", x)

    def dual_score(self, potential: Potential, theta: torch.Tensor) -> torch.Tensor:
        r"""Score of the particles' law in dual coordinates.

        :math:`\nabla^2\psi^{-1}\nabla\log p(\theta) + \nabla\cdot\nabla^2\psi^{-1}`.
        """
        _, score = potential.value_and_grad(theta)
        return self._map(potential, "hess_inv_matvec", theta, score) + self._map(
            potential, "div_hess_inv", theta
        )

    def direction(
        self, potential: Potential, eta: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MSVGD direction in the dual space."""
        theta = self.to_potential_coordinates(potential, eta)
        w = self.dual_score(potential, theta)
        kmat, dk, h = self.kernel.gram(theta, step)
        grad = self.kernel.grad_first(theta, dk)  # [i, j] = grad_{theta_i} k(theta_i, theta_j)
        repulse = self._map(potential, "hess_inv_matvec", theta.unsqueeze(1), grad).sum(0)
        return (kmat.T @ w + repulse) / theta.shape[0], h


class SVMD(MSVGD):
    """Stein variational mirror descent (Shi, Liu & Mackey 2022).

    Like :class:`MSVGD`, with the kernel adapted to the mirror map's geometry through the
    Gram matrix's leading eigenpairs (``eigen_threshold`` of the spectrum, default 0.98) and
    a ``jitter`` added to its diagonal. Takes the arguments of :class:`MSVGD` plus these two.
    """

    default_name = "svmd"

    def __init__(
        self,
        model: Callable,
        *args: Any,
        eigen_threshold: float = 0.98,
        jitter: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        if not 0 < eigen_threshold <= 1:
            raise ValueError(f"SVMD: eigen_threshold must be in (0, 1], got {eigen_threshold}")
        self.eigen_threshold = eigen_threshold
        self.jitter = jitter
        super().__init__(model, *args, **kwargs)

    def direction(
        self, potential: Potential, eta: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SVMD direction in the dual space."""
        theta = self.to_potential_coordinates(potential, eta)
        n = theta.shape[0]
        w = self.dual_score(potential, theta)
        kmat, dk, h = self.kernel.gram(theta, step)
        eye = torch.eye(n, dtype=kmat.dtype, device=kmat.device)
        eigval, eigvec = torch.linalg.eigh(kmat + self.jitter * eye)
        eigval, eigvec = eigval.flip(-1), eigvec.flip(-1)  # descending
        share = torch.cumsum(eigval / eigval.sum(), 0)
        keep = int((share < self.eigen_threshold).sum()) + 1
        eigval, eigvec = eigval[:keep], eigvec[:, :keep]
        mu_sqrt = (eigval / n).sqrt()
        v = eigvec * math.sqrt(n)  # eigenfunctions at the particles
        grad = self.kernel.grad_first(theta, dk)  # [l, m] = grad_{theta_l} k(theta_l, theta_m)
        grad_u = torch.einsum("lmd,mj->ljd", grad, eigvec) * (math.sqrt(n) / eigval)[:, None]
        h_inv_grad_u = self._map(potential, "hess_inv_matvec", theta.unsqueeze(1), grad_u)
        s = v.T @ w + h_inv_grad_u.sum(0)  # (J, D)
        r = (v * mu_sqrt) @ s  # (n, D)
        a = (v * mu_sqrt) @ v.T  # (n, n): sqrt(n) G^{1/2}
        return a @ self._map(potential, "hess_matvec", theta, r) / n**2, h
