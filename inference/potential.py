r"""A Pyro model's log density as a function of a flat matrix of particles.

Particle engines (SVGD, SG-MCMC) move ``P`` points in an unconstrained space
:math:`z \in \mathbb{R}^{P \times D}`. :class:`Potential` maps each row to the model's latent
sites through Pyro's bijections (``biject_to(site.support)``) and evaluates

.. math::

    \log \tilde p(z) = \log p(x, T(z)) + \log |\det J_T(z)|

for all particles in *one* execution of the model, with a particle plate left of the model's
own plates. The model is traced once up front to learn the sites, their shapes and supports;
optionally (``jit=True``) the evaluation and its gradient are captured once as a graph of ATen
operations (:func:`~pplx.capture.capture`), so later calls run neither the Python
model nor Pyro's handlers nor autograd's bookkeeping.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, Transform, biject_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform

from pplx.capture import CaptureError, capture
from pplx.inference.validation import ModelError, check_model, latent_site_names, trace_or_explain
from pplx.rng import untouched_state
from pplx.traces import (
    SiteInfo,
    max_plate_nesting,
    per_particle_sum,
    sample_sites,
    site_infos,
    to_particle_layout,
    vectorized_trace,
)


def _is_identity(transform: Transform) -> bool:
    """Whether ``transform`` is the identity (so its log-Jacobian is zero)."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


@dataclass(frozen=True)
class LatentBlock:
    """Where one latent site lives in the flat particle vector.

    Attributes:
        info: The site (name, constrained shape, support...).
        transform: Bijection from the unconstrained block to the site's support.
        unconstrained_shape: Shape of the unconstrained block (e.g. ``K - 1`` for a
            ``K``-simplex).
        offset: First column of the block in the flat vector.
        size: Number of columns.
    """

    info: SiteInfo
    transform: Transform
    unconstrained_shape: torch.Size
    offset: int
    size: int

    @property
    def name(self) -> str:
        """The site name."""
        return self.info.name


def _subsampling_plates(trace: poutine.Trace) -> dict[str, tuple[int, int]]:
    """Plates that draw minibatches: plate name -> (full size, minibatch size)."""
    plates = {}
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site_is_subsample(site):
            fn = site["fn"]
            if fn.subsample_size is not None and fn.subsample_size < fn.size:
                plates[name] = (fn.size, fn.subsample_size)
    return plates


@contextlib.contextmanager
def _without_validation() -> Iterator[None]:
    """Turn off the argument checks of distributions (Pyro's and torch's), then restore them.

    The checks branch on tensor values, which :func:`torch.func.vmap` cannot batch.
    """
    saved = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        Distribution.set_default_validate_args(saved)


def _subsets(rows: int, size: int, batch: int, device: torch.device) -> torch.Tensor:
    """``(rows, batch)`` indices: per row a uniformly random ``batch``-subset of ``range(size)``.

    For ``batch`` small against ``size`` (what minibatching is for) the indices are drawn with
    replacement and repeated ones drawn again until none is left: work of order
    ``rows * batch`` instead of the ``rows * size`` of one permutation per row. The procedure
    treats all labels alike, so each subset is equally likely. Rows come out sorted.
    """
    if 4 * batch > size:
        return torch.rand(rows, size, device=device).topk(batch, -1, sorted=False).indices
    idx = torch.randint(size, (rows, batch), device=device).sort(-1).values
    repeated = idx[:, 1:] == idx[:, :-1]
    while repeated.any():
        tail = idx[:, 1:]
        tail[repeated] = torch.randint(size, (int(repeated.sum()),), device=device)
        idx = idx.sort(-1).values
        repeated = idx[:, 1:] == idx[:, :-1]
    return idx


class PotentialCache:
    """Keeps the :class:`Potential` of the last model arguments, rebuilt when they change.

    Arguments are compared by identity: passing the same data tensors again reuses the traced
    model; new tensors trace it again.
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple, Potential] | None = None

    def get(self, build: Callable[[], Potential], args: tuple, kwargs: Mapping) -> Potential:
        """The cached potential for ``(args, kwargs)``, or ``build()`` for new arguments."""
        key = (tuple(id(a) for a in args), tuple((k, id(v)) for k, v in sorted(kwargs.items())))
        if self._entry is None or self._entry[0] != key:
            self._entry = (key, build())
        return self._entry[1]


class Potential:
    """Vectorized log density of a Pyro model over flat unconstrained particles.

    Args:
        model: A Pyro model whose latent sites are all continuous.
        args: Positional arguments of the model (the data).
        kwargs: Keyword arguments of the model.
        transforms: Optional site name to ``Transform`` (unconstrained -> support) overriding
            ``biject_to(support)``.
        engine: Engine name for error messages.
        jit: Capture the evaluation (and, for :meth:`value_and_grad`, its gradient) once per
            particle shape as a graph of ATen operations and replay it. Minibatch indices are
            inputs of the graph, so models that subsample their data get a fresh minibatch at
            every call. Capture refuses models that read tensor values in Python (``.item()``,
            a branch on a value), so a replayed graph never silently follows a stale branch;
            such models are evaluated eagerly instead, with a warning for ``jit=True`` and
            silently for ``jit=None`` ("where the model allows it"). ``False``: always eager.
        check_vectorized: Compare one vectorized evaluation against per-particle evaluations
            and name the first site that does not broadcast over particles.

    Raises:
        ModelError: No latent sites, a discrete latent site, or a model that does not
            broadcast over a batch dimension left of its plates.
    """

    def __init__(
        self,
        model: Callable,
        args: tuple = (),
        kwargs: Mapping[str, Any] | None = None,
        transforms: Mapping[str, Transform] | None = None,
        engine: str = "potential",
        jit: bool | None = False,
        check_vectorized: bool = True,
    ) -> None:
        self.model = model
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.engine = engine
        trace = trace_or_explain(model, "model", *self.args, **self.kwargs)
        latents = check_model(trace, engine)
        infos = site_infos(trace)
        discrete = [n for n in latents if infos[n].discrete]
        if discrete:
            raise ModelError(
                f"{engine}: latent site(s) {discrete} are discrete; {engine} moves particles in a "
                "continuous space. Marginalise them out (infer={'enumerate': 'parallel'} with "
                "an enumerating loss), or fit them with SVI."
            )
        enumerated = [
            n
            for n, s in sample_sites(trace).items()
            if not s["is_observed"] and n not in latent_site_names(trace)
        ]
        if enumerated:
            raise ModelError(
                f"{engine}: site(s) {enumerated} are marked for enumeration, which {engine} does "
                "not support; remove the marker or use SVI with TraceEnum_ELBO."
            )
        transforms = dict(transforms or {})
        unknown = sorted(set(transforms) - set(latents))
        if unknown:
            raise ModelError(f"{engine}: transforms given for unknown latent site(s) {unknown}")
        self.plate_nesting = max_plate_nesting(trace)
        first = trace.nodes[latents[0]]["value"]
        self.dtype = first.dtype if first.is_floating_point() else torch.get_default_dtype()
        self.device = first.device
        blocks, offset = [], 0
        for name in latents:
            info = infos[name]
            try:
                transform = transforms.get(name) or biject_to(info.support)
            except NotImplementedError:
                raise ModelError(
                    f"{engine}: site {name!r} has support {info.support}, which has no bijection "
                    "from unconstrained space in torch; pass transforms={"
                    f"{name!r}: <a Transform onto that support>}}"
                ) from None
            unconstrained_shape = transform.inv.forward_shape(info.shape)
            size = math.prod(unconstrained_shape)
            blocks.append(
                LatentBlock(info, transform, torch.Size(unconstrained_shape), offset, size)
            )
            offset += size
        self.blocks: list[LatentBlock] = blocks
        self.dim = offset
        # Minibatch indices are drawn outside the model (as Pyro's plate would) and passed in,
        # so that a compiled evaluation still sees a fresh minibatch at every call.
        self.subsample_plates = _subsampling_plates(trace)
        self.subsamples = bool(self.subsample_plates)
        self._jit = jit
        self._compiled: dict[tuple, Callable] = {}
        if check_vectorized:
            self._check_vectorized(trace)

    # ------------------------------------------------------------------ packing
    def unpack(self, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Constrained site values ``site -> (P, *shape)`` and ``log|det J|`` of shape ``(P,)``."""
        values, log_jac = self._unpack(z)
        return values, z.new_zeros(z.shape[0]) if log_jac is None else log_jac

    def _unpack(self, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """:meth:`unpack` with ``None`` for a Jacobian that is identically zero."""
        if z.dim() != 2 or z.shape[-1] != self.dim:
            raise ValueError(
                f"{self.engine}: particles must have shape (num_particles, {self.dim}), "
                f"got {tuple(z.shape)}"
            )
        num = z.shape[0]
        values, log_jac = {}, None
        for block in self.blocks:
            u = z[:, block.offset : block.offset + block.size].reshape(
                (num,) + tuple(block.unconstrained_shape)
            )
            x = block.transform(u)
            values[block.name] = x
            if _is_identity(block.transform):
                continue
            ldj = per_particle_sum(block.transform.log_abs_det_jacobian(u, x), num)
            log_jac = ldj if log_jac is None else log_jac + ldj
        return values, log_jac

    def pack(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`unpack`: flat unconstrained particles from constrained values."""
        columns = []
        for block in self.blocks:
            if block.name not in values:
                raise ValueError(f"{self.engine}: no values for latent site {block.name!r}")
            x = values[block.name]
            u = block.transform.inv(x)
            columns.append(u.reshape(u.shape[0], -1))
        return torch.cat(columns, -1)

    def to_samples(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained draws ``site -> (P, *shape)``, detached."""
        with torch.no_grad():
            return {k: v.detach() for k, v in self.unpack(z)[0].items()}

    # ------------------------------------------------------------------ evaluation
    def _log_joint_terms(
        self,
        values: Mapping[str, torch.Tensor],
        num: int,
        minibatch: Mapping[str, torch.Tensor] | None = None,
    ) -> dict:
        layout = {
            b.name: to_particle_layout(values[b.name], b.info, self.plate_nesting)
            for b in self.blocks
        }
        layout.update(minibatch or {})
        trace = vectorized_trace(
            poutine.condition(self.model, layout),
            num,
            self.plate_nesting,
            self.args,
            self.kwargs,
        )
        trace.compute_log_prob()
        return {
            name: per_particle_sum(s["log_prob"], num) for name, s in sample_sites(trace).items()
        }

    def draw_minibatch(self, rows: int | None = None) -> list[torch.Tensor]:
        """Fresh minibatch indices for every subsampling plate (what ``pyro.plate`` draws).

        Args:
            rows: ``None``: one minibatch ``(B,)`` per plate, shared by all particles. An
                integer: an independent minibatch per row of the particles, ``(rows, B)``
                per plate (pass them to :meth:`value_and_grad`).
        """
        if rows is None:
            return [
                torch.randperm(size, device=self.device)[:batch].clone()
                for size, batch in self.subsample_plates.values()
            ]
        return [
            _subsets(rows, size, batch, self.device)
            for size, batch in self.subsample_plates.values()
        ]

    def _log_density_eager(self, z: torch.Tensor, *indices: torch.Tensor) -> torch.Tensor:
        values, log_jac = self._unpack(z)
        minibatch = dict(zip(self.subsample_plates, indices))
        terms = list(self._log_joint_terms(values, z.shape[0], minibatch).values())
        if log_jac is not None:
            terms.append(log_jac)
        return functools.reduce(operator.add, terms)

    def _row_log_density(self, z_row: torch.Tensor, *indices: torch.Tensor) -> torch.Tensor:
        """Log density of one particle ``(D,)`` on minibatch ``indices`` ``(B,)``: a scalar."""
        return self._log_density_eager(z_row.unsqueeze(0), *indices)[0]

    def _log_density_per_row_eager(self, z: torch.Tensor, *indices: torch.Tensor) -> torch.Tensor:
        """:meth:`_log_density_eager` with minibatch indices ``(P, B)``: row ``p`` sees its own."""
        with _without_validation():
            return torch.func.vmap(self._row_log_density)(z, *indices)

    def _minibatch(self, z: torch.Tensor, indices: list[torch.Tensor] | None) -> tuple:
        """``(indices, per_row)``: a fresh shared minibatch unless ``indices`` are given."""
        if indices is None:
            return self.draw_minibatch(), False
        indices = list(indices)
        if len(indices) != len(self.subsample_plates):
            raise ValueError(
                f"{self.engine}: expected minibatch indices for the subsampling plates "
                f"{list(self.subsample_plates)}, got {len(indices)} tensor(s)"
            )
        per_row = bool(indices) and indices[0].dim() == 2
        for (name, (_, batch)), idx in zip(self.subsample_plates.items(), indices):
            expected = (z.shape[0], batch) if per_row else (batch,)
            if tuple(idx.shape) != expected:
                raise ValueError(
                    f"{self.engine}: minibatch indices of plate {name!r} must have shape "
                    f"{expected} (draw them with draw_minibatch), got {tuple(idx.shape)}"
                )
        return indices, per_row

    def log_density(
        self, z: torch.Tensor, indices: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Unnormalised log posterior density of each particle (unconstrained space): ``(P,)``.

        For a model that subsamples its data this is the minibatch estimate Pyro's plates
        give (likelihood scaled by ``N / B``), with a fresh minibatch at every call, shared by
        all particles; ``indices`` from :meth:`draw_minibatch` choose the minibatches instead
        (``draw_minibatch(P)``: one per particle, evaluated with :func:`torch.func.vmap`). The
        result is differentiable in ``z`` (captured graphs replay differentiable ATen
        operations).
        """
        indices, per_row = self._minibatch(z, indices)
        if per_row:
            fn = self._captured("log_density/rows", self._log_density_per_row_eager, z, indices)
        else:
            fn = self._captured("log_density", self._log_density_eager, z, indices)
        return fn(z, *indices)

    def _value_and_grad_eager(
        self, z: torch.Tensor, *indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p = self._log_density_eager(z, *indices)
            (grad,) = torch.autograd.grad(log_p.sum(), z)
        return log_p.detach(), grad

    def _value_and_grad_per_row_eager(
        self, z: torch.Tensor, *indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_value_and_grad_eager` with minibatch indices ``(P, B)``, one per row."""
        value_and_grad = torch.func.vmap(torch.func.grad_and_value(self._row_log_density))
        with torch.enable_grad(), _without_validation():
            grad, log_p = value_and_grad(z.detach(), *indices)
        return log_p.detach(), grad.detach()

    def value_and_grad(
        self, z: torch.Tensor, indices: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log density ``(P,)`` and its gradient ``(P, D)`` with respect to the particles.

        ``indices``: minibatches as for :meth:`log_density` (default: a fresh one, shared).
        """
        indices, per_row = self._minibatch(z, indices)
        if per_row:
            what, eager = "value_and_grad/rows", self._value_and_grad_per_row_eager
        else:
            what, eager = "value_and_grad", self._value_and_grad_eager
        fn = self._captured(what, eager, z, indices)
        with torch.no_grad():  # a graph holds the backward pass; eager enables grad itself
            return fn(z.detach(), *indices)

    def check_per_row_minibatches(self, z: torch.Tensor) -> None:
        """Check that the model evaluates with one minibatch per row, before a long run.

        Compares the per-row evaluation (:func:`torch.func.vmap` over rows) of the first two
        rows of ``z`` with evaluating each row alone on its minibatch.

        Raises:
            ModelError: The model cannot be evaluated under ``vmap`` (it reads tensor values
                in Python, or validates its arguments explicitly), or the results differ.
        """
        if not self.subsamples:
            return
        z = z[:2].detach()
        with untouched_state():  # a check: a resumed run must draw what an unbroken one does
            indices = self.draw_minibatch(len(z))
        try:
            with torch.no_grad(), untouched_state():
                batched = self._log_density_per_row_eager(z, *indices)
        except Exception as error:  # noqa: BLE001 - re-raised with advice
            raise ModelError(
                f"{self.engine}: the model cannot be evaluated with one minibatch per chain "
                f"({type(error).__name__}: {str(error).splitlines()[0]}); that runs it under "
                "torch.func.vmap, which refuses Python reads of tensor values (.item(), "
                "branches on values) and explicit validate_args=True. Pass "
                "minibatches='shared' to let all chains share each step's minibatch."
            ) from error
        with torch.no_grad(), untouched_state():
            singles = torch.cat(
                [
                    self._log_density_eager(z[i : i + 1], *[idx[i] for idx in indices])
                    for i in range(len(z))
                ]
            )
        if not torch.allclose(batched, singles.to(batched.dtype), rtol=1e-4, atol=1e-4):
            raise ModelError(
                f"{self.engine}: evaluating the model with one minibatch per chain gives "
                f"{batched.tolist()}, evaluating the chains one by one {singles.tolist()}. "
                "Pass minibatches='shared' to let all chains share each step's minibatch."
            )

    def _captured(
        self, what: str, eager: Callable, z: torch.Tensor, indices: list[torch.Tensor]
    ) -> Callable:
        """``eager``, or (``jit``) its graph captured for this shape, dtype and device."""
        if self._jit is False:
            return eager
        key = (what, tuple(z.shape), z.dtype, z.device)
        fn = self._compiled.get(key)
        if fn is None:
            try:  # a bookkeeping run: the graph computes this step
                with untouched_state():
                    fn = capture(eager, z.detach(), *indices)
            except CaptureError as error:
                fn = eager
                if self._jit:  # None means "where the model allows it": no warning
                    warnings.warn(
                        f"{self.engine}: jit=True could not capture the model: {error}. "
                        "Evaluating it eagerly instead; models that compute with tensor "
                        "operations only (no .item(), no Python branches on values) can be "
                        "captured.",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            self._compiled[key] = fn
        return fn

    # ------------------------------------------------------------------ set-up helpers
    def init_particles(
        self, num_particles: int, strategy: str = "prior", radius: float = 2.0
    ) -> torch.Tensor:
        """Initial particles, shape ``(num_particles, dim)``.

        ``"prior"`` draws the latents from the model (vectorized); ``"uniform"`` draws each
        unconstrained coordinate from ``Uniform(-radius, radius)`` (Stan's convention).
        """
        if strategy == "uniform":
            return (
                2 * torch.rand(num_particles, self.dim, dtype=self.dtype, device=self.device) - 1
            ) * radius
        if strategy != "prior":
            raise ValueError(f"{self.engine}: init must be 'prior' or 'uniform', got {strategy!r}")
        with torch.no_grad():
            trace = vectorized_trace(
                self.model,
                num_particles,
                self.plate_nesting,
                self.args,
                self.kwargs,
            )
            values = {}
            for block in self.blocks:
                v = trace.nodes[block.name]["value"]
                values[block.name] = v.expand((num_particles,) + v.shape[1:]).reshape(
                    (num_particles,) + tuple(block.info.shape)
                )
            return self.pack(values)

    def initial_points(
        self, init: str | torch.Tensor | Mapping[str, torch.Tensor], num: int, what: str
    ) -> torch.Tensor:
        """``(num, dim)`` starting points from an engine's ``init`` argument.

        ``init`` is a strategy for :meth:`init_particles`, a dict of constrained site values
        (packed with :meth:`pack`), or a tensor of this potential's coordinates.

        Raises:
            ValueError: The result does not have shape ``(num, dim)`` (``what`` names the
                points in the message: particles, positions...).
        """
        if isinstance(init, torch.Tensor):
            z = init.to(dtype=self.dtype, device=self.device)
        elif isinstance(init, Mapping):
            z = self.pack(init)
        else:
            z = self.init_particles(num, init)
        if z.shape != (num, self.dim):
            raise ValueError(
                f"{self.engine}: initial {what} must have shape ({num}, {self.dim}), "
                f"got {tuple(z.shape)}"
            )
        return z

    def _check_vectorized(self, trace: poutine.Trace) -> None:
        """Name the first site whose vectorized log-density differs from a per-particle one."""
        with torch.no_grad():
            traces = [
                poutine.trace(self.model).get_trace(*self.args, **self.kwargs) for _ in range(2)
            ]
            values = {
                b.name: torch.stack([t.nodes[b.name]["value"] for t in traces])
                for b in self.blocks
            }
            try:
                batched = self._log_joint_terms(values, 2)
            except Exception as error:  # noqa: BLE001 - re-raised with the site named below
                batched, batch_error = None, error
            singles = []
            for i in range(2):
                one = {k: v[i] for k, v in values.items()}
                t = poutine.trace(poutine.condition(self.model, one)).get_trace(
                    *self.args, **self.kwargs
                )
                t.compute_log_prob()
                singles.append({n: s["log_prob_sum"] for n, s in sample_sites(t).items()})
        if batched is None:
            raise ModelError(
                f"{self.engine}: the model does not broadcast over particles "
                f"({type(batch_error).__name__}: {batch_error}). Write it so that a batch "
                "dimension left of its plates flows through (use tensor ops, not .item() or "
                "Python branches on latent values; index with [..., i])."
            ) from batch_error
        if self.subsamples:
            return  # per-particle evaluations see other minibatches
        for name in singles[0]:
            if name not in batched:
                raise ModelError(
                    f"{self.engine}: site {name!r} disappears when the model runs for several "
                    "particles at once; the model must take the same path for every particle."
                )
            expected = torch.stack([s[name] for s in singles]).to(batched[name].dtype)
            if not torch.allclose(batched[name], expected, rtol=1e-4, atol=1e-4):
                raise ModelError(
                    f"{self.engine}: site {name!r} does not broadcast over particles: its "
                    "log-density evaluated for two particles at once differs from evaluating "
                    "them one by one. Keep a batch dimension left of the model's plates "
                    "(e.g. x @ w -> (x * w).sum(-1), index with [..., i])."
                )
