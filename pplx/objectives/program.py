r"""Objectives as programs: the primitives and the values they produce.

An objective is an ordinary Python function ``objective(model, guide, *args, **kwargs)`` that
uses these primitives (Becker, Lew et al., PLDI 2024, "Probabilistic Programming with
Programmable Variational Inference"):

* :func:`simulate` runs a guide for :math:`K` vectorized particles, applying each site's
  gradient strategy, and returns a :class:`Draw` (values and log density :math:`\log q`).
* :func:`density` evaluates a model's log joint :math:`\log p(x, z)` on a draw's values.
* :func:`expectation` averages per-particle costs: :math:`\frac1K\sum_k c_k`.
* :func:`logmeanexp` and the :class:`Terms` arithmetic build everything else (IWAE, Rényi,
  CUBO, ...); :class:`Estimate` lets a program give its own score-function learning signal.
* :func:`marginal_density` (in :mod:`pplx.objectives.marginal`) estimates the density of a
  guide whose auxiliary variables are integrated out (HVI, IWHVI, DIWHVI).

Log densities are :class:`Terms`: one tensor per site, kept with its plate dimensions, and
tagged with the set of random choices it may depend on. Linear combinations keep that
structure, which is what lets :func:`~pplx.objectives.transform.surrogate` Rao-Blackwellise
score-function terms per plate slice. :meth:`Terms.total` sums everything but the particle
dimension, giving a tensor whose *last* dimension holds the particles (extra dimensions on the
left appear when the transform re-executes a program for measure-valued derivatives, so
reduce particles with ``dim=-1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pplx.estimators.strategies import (
    Enumerate,
    Reinforce,
    RejectionReparam,
    Strategy,
    StrategyError,
    as_strategy,
    default_strategy,
)
from pplx.objectives.kl import kl_at
from pplx.rng import untouched_state
from pplx.traces import particle_plate


class ObjectiveError(ValueError):
    """A model, guide or objective program that the transform cannot turn into an estimator."""


# ------------------------------------------------------------------------------------ records


@dataclass
class SiteRecord:
    """One random choice made by :func:`simulate` (bookkeeping for the transform).

    Attributes:
        key: ``(call, name)``: which :func:`simulate` call and which site.
        index: Position in the execution's sampling order (dependencies are prefixes of it).
        strategy: The resolved gradient strategy (``None`` for detached draws).
        fn: The site's (plate-expanded) distribution.
        value: The sampled (or enumerated) value.
        log_prob: The site's scaled log density, batch-shaped.
        score: The tensor whose gradient is the score-function term (REINFORCE: ``log_prob``;
            rejection reparameterisation: the log density of the accepted noise), else ``None``.
        frames: The site's ``cond_indep_stack``.
    """

    key: tuple[int, str]
    index: int
    strategy: Strategy | None
    fn: Any
    value: torch.Tensor
    log_prob: torch.Tensor
    score: torch.Tensor | None
    frames: tuple
    auxiliary: bool = False
    enum_dim: int | None = None
    unscaled_log_prob: torch.Tensor | None = None

    @property
    def name(self) -> str:
        """The site name (qualified by the simulate call when it is not the first)."""
        call, name = self.key
        return name if call == 0 else f"{name}@{call}"


class Execution:
    """One run of an objective program (the transform's bookkeeping).

    The *primal* run samples fresh values; a *re-run* (for a measure-valued derivative) replays
    every choice made before the forced site, forces the site to a batch of coupled values in
    extra dimensions on the left, and samples the rest afresh.
    """

    def __init__(
        self,
        num_particles: int,
        plate_nesting: int,
        primal: Execution | None = None,
        forced: tuple[tuple[int, str], torch.Tensor] | None = None,
    ) -> None:
        self.num_particles = int(num_particles)
        self.plate_nesting = int(plate_nesting)
        self.primal = primal
        self.forced = forced
        self.sites: list[SiteRecord] = []
        self.by_key: dict[tuple[int, str], SiteRecord] = {}
        self.subsamples: dict[tuple[str, int, str], torch.Tensor] = {}
        self.num_calls = 0
        self.num_density_calls = 0
        self.enum_dims = 0
        self.learned_losses: list[torch.Tensor] = []

    @property
    def rerun(self) -> bool:
        """Whether this is a re-execution for a measure-valued derivative."""
        return self.primal is not None

    def primal_site(self, key: tuple[int, str]) -> SiteRecord | None:
        """The primal run's record of a site."""
        return None if self.primal is None else self.primal.by_key.get(key)

    def __enter__(self) -> Execution:
        _STACK.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _STACK.pop()


_STACK: list[Execution] = []


def current_execution() -> Execution | None:
    """The innermost running :class:`Execution`, if any."""
    return _STACK[-1] if _STACK else None


# ------------------------------------------------------------------------------------ terms


def _align(tensor: torch.Tensor, ndim: int) -> torch.Tensor:
    """Left-pad ``tensor`` with singleton dims up to ``ndim`` dimensions."""
    if tensor.dim() >= ndim:
        return tensor
    return tensor.reshape((1,) * (ndim - tensor.dim()) + tuple(tensor.shape))


class Terms:
    """A sum of batch-shaped log-density terms that remembers what each term depends on.

    Each item is ``(tensor, horizon, origin)``: the tensor has Pyro's layout ``(..., K, *plates)``
    (particles at dimension ``-(plate_nesting + 1)``), and ``horizon`` is the index of the
    last random choice (in sampling order) it may depend on. Addition, subtraction and
    multiplication by numbers or particle-independent tensors keep the structure; anything
    nonlinear goes through :meth:`total`.
    """

    def __init__(
        self,
        items: Iterable[tuple],
        plate_nesting: int,
        num_particles: int,
        averaged: bool = False,
    ) -> None:
        # (tensor, horizon, origin); origin is the index of the guide site whose own log
        # density the term is (-1 for model terms), so the transform can treat it specially
        self.items = [item if len(item) == 3 else (*item, -1) for item in items]
        self.plate_nesting = plate_nesting
        self.num_particles = num_particles
        self.averaged = averaged

    def _new(self, items: Iterable[tuple], averaged: bool | None = None):
        return Terms(
            items,
            self.plate_nesting,
            self.num_particles,
            self.averaged if averaged is None else averaged,
        )

    def __add__(self, other: Any) -> Terms:
        if isinstance(other, Terms):
            if other.averaged != self.averaged:
                raise ObjectiveError(
                    "cannot add an expectation(...) to per-particle terms; take the "
                    "expectation of the whole sum"
                )
            return self._new(self.items + other.items)
        if isinstance(other, (int, float)) and other == 0:
            return self
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> Terms:
        return self._new([(-t, h, o) for t, h, o in self.items])

    def __sub__(self, other: Any) -> Terms:
        if isinstance(other, Terms):
            return self + (-other)
        return NotImplemented

    def __mul__(self, other: Any) -> Terms:
        if isinstance(other, (int, float)) or (
            isinstance(other, torch.Tensor) and other.dim() == 0
        ):
            return self._new([(t * other, h, o) for t, h, o in self.items])
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Terms:
        if isinstance(other, (int, float)) or (
            isinstance(other, torch.Tensor) and other.dim() == 0
        ):
            return self * (1.0 / other)
        return NotImplemented

    def total(self) -> torch.Tensor:
        """Sum every term over its plates: a tensor whose last dimension holds the particles.

        Raises:
            StrategyError: if a site is enumerated, because a nonlinear function of the total
                would need the joint sum over every particle's enumerated values.
        """
        execution = current_execution()
        if execution is not None:
            for record in execution.sites:
                if isinstance(record.strategy, Enumerate):
                    raise StrategyError(
                        f"site {record.name!r}: Enumerate() needs an objective that is an "
                        "expectation of per-site costs (ELBO, RWS wake-q); this objective "
                        "takes a nonlinear function of the particles' total log weights. Use "
                        "MVD() or Reinforce() for this site."
                    )
        depth = self.plate_nesting + 1
        result = None
        for tensor, *_ in self.items:
            tensor = _align(tensor, depth)
            if self.plate_nesting:
                tensor = tensor.sum(tuple(range(-self.plate_nesting, 0)))
            result = tensor if result is None else result + tensor
        if result is None:
            raise ObjectiveError("total() of an empty set of terms")
        if result.shape[-1] != self.num_particles:
            result = result.expand(result.shape[:-1] + (self.num_particles,))
        if self.averaged:
            result = result.sum(-1)
        return result

    def local_total(self, dim: int) -> torch.Tensor:
        """Sum every term over the plates except the one at ``dim``: shape ``(..., N, K)``.

        Every term must vary along that plate (latents and observations local to it);
        particles end up last, the plate's elements second to last.
        """
        depth = self.plate_nesting + 1
        others = tuple(d for d in range(-self.plate_nesting, 0) if d != dim)
        tensors = [_align(tensor, depth) for tensor, *_ in self.items]
        if not tensors:
            raise ObjectiveError("local_total() of an empty set of terms")
        size = max(t.shape[dim] for t in tensors)
        result = None
        for tensor in tensors:
            if tensor.shape[dim] != size:
                raise ObjectiveError(
                    "a per-data-point objective (local_plate=...) needs every model and guide "
                    "site inside that plate; a term outside it would be counted once per data "
                    "point. Use the global objective (local_plate=None) for this model."
                )
            if others:
                tensor = tensor.sum(others)
            tensor = tensor.transpose(-1, -2)
            result = tensor if result is None else result + tensor
        return result.expand(result.shape[:-1] + (self.num_particles,))

    def __repr__(self) -> str:
        shapes = [tuple(t.shape) for t, *_ in self.items]
        return f"Terms({len(self.items)} terms, shapes={shapes}, averaged={self.averaged})"


@dataclass
class Estimate:
    """What a nonlinear objective program returns.

    Attributes:
        value: The objective's estimate, differentiable along every pathwise gradient; a
            0-dimensional tensor in a normal run.
        signal: Optional learning signal, of shape ``(K,)`` or in the batch layout
            ``(K, *plates)`` of the sites (particles first), that
            replaces ``value`` as the downstream cost of score-function sites, e.g. VIMCO's
            leave-one-out signal. ``None`` uses ``value`` for every particle.
        elements: Optional per-element values of an objective that is a sum over the
            elements of one plate of independent terms (``value == elements.sum(-1)``; last
            dimension: the plate's elements), e.g. IWAE with ``local_plate``. It lets
            measure-valued derivatives force all elements of that plate at once.
        plate_dim: The batch dimension of that plate (negative, in the sites' layout).
    """

    value: torch.Tensor
    signal: torch.Tensor | None = None
    elements: torch.Tensor | None = None
    plate_dim: int | None = None


def expectation(x: Terms | torch.Tensor) -> Terms | torch.Tensor:
    r"""Average over particles, :math:`\frac1K\sum_k x_k`.

    On :class:`Terms` the result stays a sum of per-site terms (so the transform can
    Rao-Blackwellise); on a tensor it averages the last dimension.
    """
    if isinstance(x, Terms):
        if x.averaged:
            return x
        return Terms(
            [(t / x.num_particles, h, o) for t, h, o in x.items],
            x.plate_nesting,
            x.num_particles,
            averaged=True,
        )
    return x.mean(-1)


def logmeanexp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r""":math:`\log\frac1K\sum_k e^{x_k}` over ``dim`` (the particles by default)."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


# ------------------------------------------------------------------------------------ simulate


def _in_particle_plate(fn: Callable, num_particles: int, plate_nesting: int) -> Callable:
    """``fn`` run inside the particle plate.

    Replay handlers must wrap *this*, so that the plate still broadcasts replayed sites.
    """
    if num_particles == 1:  # one particle: its dimension is implicit (size 1 broadcasts)
        return fn

    def batched(*args: Any, **kwargs: Any) -> Any:
        with particle_plate(num_particles, plate_nesting):
            return fn(*args, **kwargs)

    return batched


class _StrategyMessenger(Messenger):
    """Applies each guide site's gradient strategy, and replays / forces values in re-runs."""

    def __init__(self, execution: Execution, call: int, detach: bool) -> None:
        super().__init__()
        self.execution = execution
        self.call = call
        self.detach = detach

    def _pyro_sample(self, msg: dict) -> None:
        ex = self.execution
        name = msg["name"]
        if site_is_subsample(msg):
            key = ("guide", self.call, name)
            if ex.rerun and key in ex.primal.subsamples:
                msg["value"] = ex.primal.subsamples[key]
            return
        if msg["is_observed"] or msg["value"] is not None:
            return
        fn = msg["fn"]
        key = (self.call, name)
        infer = dict(msg["infer"])
        msg["infer"] = infer
        if self.detach:
            strategy = None
        else:
            tagged = infer.get("estimator")
            strategy = as_strategy(tagged, name) if tagged is not None else default_strategy(fn)
            strategy.check(name, fn)
        infer["_pplx_strategy"] = strategy
        if ex.rerun:
            forced_key, forced_value = ex.forced
            primal = ex.primal_site(key)
            if key == forced_key:
                msg["value"] = forced_value
                return
            if primal is not None and primal.index < ex.primal_site(forced_key).index:
                if not isinstance(strategy, Enumerate):
                    msg["value"] = primal.value.detach()
                    return
        if isinstance(strategy, Enumerate):
            for frame in msg["cond_indep_stack"]:
                if not frame.vectorized:
                    raise StrategyError(
                        f"site {name!r}: Enumerate() inside the sequential plate "
                        f"{frame.name!r}; enumeration needs vectorized plates (use "
                        "`with pyro.plate(...)` instead of iterating), or use MVD() or "
                        "Reinforce() for this site."
                    )
            infer["enumerate"] = "parallel"
            return
        if self.detach or (strategy is not None and not strategy.pathwise):
            msg["value"] = fn.sample()
            return
        if isinstance(strategy, RejectionReparam) and not ex.rerun:
            from pplx.estimators.rejection import sample as rsvi_sample

            value, log_pi = rsvi_sample(fn, strategy.boost)
            infer["_pplx_score"] = log_pi
            msg["value"] = value


class _SubsampleReplay(Messenger):
    """Records a program's minibatch indices, and replays them in re-runs."""

    def __init__(self, execution: Execution, role: str, call: int) -> None:
        super().__init__()
        self.execution = execution
        self.role = role
        self.call = call

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg) and self.execution.rerun:
            key = (self.role, self.call, msg["name"])
            if key in self.execution.primal.subsamples and msg["value"] is None:
                msg["value"] = self.execution.primal.subsamples[key]

    def _pyro_post_sample(self, msg: dict) -> None:
        if site_is_subsample(msg) and not self.execution.rerun:
            self.execution.subsamples[(self.role, self.call, msg["name"])] = msg["value"]


@dataclass
class Draw:
    r"""The result of :func:`simulate`: a guide's choices for :math:`K` particles.

    Attributes:
        values: Site name to value (particle layout: particles at dim ``-(plate_nesting+1)``).
        trace: The guide's trace (for replaying the model).
        log_prob: :math:`\log q` as :class:`Terms`.
        records: The random choices, in sampling order.
        args: The guide's positional arguments.
        kwargs: The guide's keyword arguments.
    """

    values: dict[str, torch.Tensor]
    trace: poutine.Trace
    log_prob: Terms
    records: list[SiteRecord]
    guide: Callable
    call: int
    num_particles: int
    plate_nesting: int
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def replayed_log_prob(self, values: dict[str, torch.Tensor] | None = None) -> Terms:
        r""":math:`\log q` re-evaluated at ``values`` by replaying the guide.

        The default, detached copies of this draw's values, isolates the direct parameter
        dependence.
        """
        if values is None:
            values = {k: v.detach() for k, v in self.values.items()}
        trace = self.trace.copy()
        for name, value in values.items():
            trace.nodes[name] = dict(trace.nodes[name])
            trace.nodes[name]["value"] = value
        batched = _in_particle_plate(self.guide, self.num_particles, self.plate_nesting)
        with poutine.block():
            replayed = poutine.trace(poutine.replay(batched, trace=trace)).get_trace(
                *self.args, **self.kwargs
            )
        replayed.compute_log_prob()
        horizon = {r.key[1]: r.index for r in self.records}
        items = []
        for name, site in replayed.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            items.append((site["log_prob"], horizon.get(name, -1), horizon.get(name, -1)))
        return Terms(items, self.plate_nesting, self.num_particles)

    @property
    def log_prob_stl(self) -> Terms:
        r""":math:`\log q` for *sticking the landing* (Roeder, Wu & Duvenaud 2017).

        The same value as :attr:`log_prob`; along reparameterised sites the gradient keeps
        only the path through the sampled values, dropping the score term
        :math:`\nabla_\phi\log q_\phi(z)|_{z}` whose expectation is zero.
        """
        return self.log_prob_at(None, stl=True)

    def log_prob_at(self, values: dict[str, torch.Tensor] | None, stl: bool = True) -> Terms:
        r""":math:`\log q` at ``values`` (default: this draw's values) by replaying the guide.

        With ``stl=True`` the direct dependence on the guide's parameters is removed from the
        gradient of every reparameterised site's term (its value is unchanged).
        """
        at = self.replayed_log_prob(values) if values is not None else self.log_prob
        if not stl:
            return at
        direct = self.replayed_log_prob()
        pathwise = {
            r.index for r in self.records if r.strategy is not None and r.strategy.pathwise
        }
        items = []
        for (tensor, horizon, origin), (fixed, *_) in zip(at.items, direct.items, strict=True):
            if horizon in pathwise:
                tensor = tensor - (fixed - fixed.detach())
            items.append((tensor, horizon, origin))
        return Terms(items, self.plate_nesting, self.num_particles)


def _default_execution() -> Execution:
    execution = current_execution()
    if execution is None:
        raise ObjectiveError(
            "simulate()/density() run inside an objective: call one of its methods, e.g. "
            "objective.loss(model, guide, *args) or objective.differentiable_loss(model, guide, "
            "*args), where objective is a library objective or one made with "
            "pplx.objectives.objective"
        )
    return execution


def simulate(
    guide: Callable,
    *args: Any,
    num_particles: int | None = None,
    detach: bool = False,
    **kwargs: Any,
) -> Draw:
    """Run ``guide`` for the execution's particles, applying each site's gradient strategy.

    Args:
        guide: A Pyro program (function or autoguide).
        *args: The guide's positional arguments.
        num_particles: Must equal the objective's number of particles if given.
        detach: Sample every site without any gradient path or score term (e.g. the
            importance samples of reweighted wake-sleep).
        **kwargs: The guide's keyword arguments.

    Returns:
        The :class:`Draw`.
    """
    ex = _default_execution()
    if num_particles is not None and num_particles != ex.num_particles:
        raise ObjectiveError(
            f"simulate(num_particles={num_particles}) inside an objective with "
            f"num_particles={ex.num_particles}; set num_particles on the objective"
        )
    call = ex.num_calls
    ex.num_calls += 1
    first_dim = -(ex.plate_nesting + 2 + ex.enum_dims)
    strategies = _StrategyMessenger(ex, call, detach)
    recorder = _SubsampleReplay(ex, "guide", call)
    with poutine.trace() as tracer, poutine.enum(first_available_dim=first_dim):
        with strategies, recorder:
            _in_particle_plate(guide, ex.num_particles, ex.plate_nesting)(*args, **kwargs)
    trace = tracer.trace
    trace.compute_log_prob()
    records, items, values = [], [], {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
            continue
        strategy = site["infer"].get("_pplx_strategy")
        # Scores and enumeration weights use the *unscaled* log density (masked): the costs
        # they multiply already carry poutine.scale / the subsample factor N / B.
        unscaled = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
        score = None
        if strategy is not None and not ex.rerun:
            if isinstance(strategy, RejectionReparam):
                score = scale_and_mask(site["infer"].get("_pplx_score"), 1.0, site["mask"])
            elif isinstance(strategy, Reinforce) or strategy.uses_score:
                score = unscaled
        if isinstance(strategy, Enumerate):
            batch_ndim = site["value"].dim() - site["fn"].event_dim
            ex.enum_dims = max(ex.enum_dims, batch_ndim - ex.plate_nesting - 1)
        record = SiteRecord(
            key=(call, name),
            index=len(ex.sites),
            strategy=strategy,
            fn=site["fn"],
            value=site["value"],
            log_prob=site["log_prob"],
            score=score,
            unscaled_log_prob=unscaled,
            frames=tuple(site["cond_indep_stack"]),
            auxiliary=bool(site["infer"].get("is_auxiliary", False)),
            enum_dim=site["infer"].get("_enumerate_dim"),
        )
        ex.sites.append(record)
        ex.by_key[record.key] = record
        records.append(record)
        items.append((site["log_prob"], record.index, record.index))
        values[name] = site["value"]
    log_prob = Terms(items, ex.plate_nesting, ex.num_particles)
    return Draw(
        values=values,
        trace=trace,
        log_prob=log_prob,
        records=records,
        guide=guide,
        call=call,
        num_particles=ex.num_particles,
        plate_nesting=ex.plate_nesting,
        args=args,
        kwargs=kwargs,
    )


@dataclass
class ModelDensity:
    r"""The result of :func:`density`: a model's log joint on a draw's values.

    Attributes:
        log_prob: :math:`\log p(x, z)` as :class:`Terms` (observed and latent sites).
        trace: The model's trace.
    """

    log_prob: Terms
    trace: poutine.Trace

    @property
    def log_likelihood(self) -> Terms:
        """Only the observed sites' terms."""
        items = [
            item
            for item, (_, site) in zip(self.log_prob.items, self._sites(), strict=True)
            if site["is_observed"]
        ]
        return Terms(items, self.log_prob.plate_nesting, self.log_prob.num_particles)

    @property
    def log_prior(self) -> Terms:
        """Only the latent sites' terms."""
        items = [
            item
            for item, (_, site) in zip(self.log_prob.items, self._sites(), strict=True)
            if not site["is_observed"]
        ]
        return Terms(items, self.log_prob.plate_nesting, self.log_prob.num_particles)

    def _sites(self) -> list[tuple[str, dict]]:
        return [
            (name, site)
            for name, site in self.trace.nodes.items()
            if site["type"] == "sample"
            and not site_is_subsample(site)
            and not site["infer"].get("_deterministic", False)
        ]


def density(
    model: Callable,
    draw: Draw,
    *args: Any,
    values: dict[str, torch.Tensor] | None = None,
    partial: bool = False,
    **kwargs: Any,
) -> ModelDensity:
    """Evaluate ``model``'s log joint at the values of ``draw`` (replaying its choices).

    Args:
        model: The Pyro model.
        draw: A :class:`Draw` from :func:`simulate` of a guide for this model.
        *args: The model's positional arguments.
        values: Values to use instead of ``draw.values`` (e.g. re-weighted copies), same keys.
        partial: Allow the draw to hold sites the model does not sample (e.g. evaluating a
            reverse model on the auxiliary part of a hierarchical guide's draw).
        **kwargs: The model's keyword arguments.

    Raises:
        ObjectiveError: if a latent model site has no value in the draw, or the draw has a
            site the model does not sample.
    """
    ex = _default_execution()
    call = ex.num_density_calls
    ex.num_density_calls += 1
    trace = draw.trace
    if values is not None:
        trace = trace.copy()
        for name, value in values.items():
            trace.nodes[name] = dict(trace.nodes[name])
            trace.nodes[name]["value"] = value
    recorder = _SubsampleReplay(ex, "model", call)
    batched = _in_particle_plate(model, ex.num_particles, ex.plate_nesting)
    with poutine.trace() as tracer, recorder:
        poutine.replay(batched, trace=trace)(*args, **kwargs)
    model_trace = tracer.trace
    horizon_of = {r.key[1]: r.index for r in draw.records}
    seen = set()
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
            continue
        seen.add(name)
        if name not in horizon_of:
            raise ObjectiveError(
                f"model site {name!r} is latent but the guide does not sample it; add it to "
                "the guide (or observe it in the model)"
            )
    extra = [r.name for r in draw.records if r.key[1] not in seen and not r.auxiliary]
    if extra and not partial:
        raise ObjectiveError(
            f"guide site {extra[0]!r} does not appear as a latent site in the model; rename "
            "it to match a model site or mark it infer={'is_auxiliary': True}"
        )
    model_trace.compute_log_prob()
    items, horizon = [], -1
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["infer"].get("_deterministic", False):
            continue
        horizon = max(horizon, horizon_of.get(name, -1))
        items.append((site["log_prob"], horizon))
    return ModelDensity(Terms(items, ex.plate_nesting, ex.num_particles), model_trace)


def closed_form_kl_terms(draw: Draw, model_density: ModelDensity) -> Terms:
    r""":math:`\log p(x, z) - \log q(z)` as :class:`Terms`, with closed-form KLs where known.

    At every latent site whose guide strategy is pathwise (e.g.
    :class:`~pplx.estimators.Reparam`) and whose pair of distributions has a closed form
    (:func:`pplx.objectives.kl.kl_at`), the two Monte Carlo terms
    :math:`\log p(z) - \log q(z)` are replaced by :math:`-\mathrm{KL}(q \,\|\, p)`, scaled
    like the site. The expectation is unchanged and the variance lower (Pyro's
    ``TraceMeanField_ELBO``). Other sites (score-function, enumerated, masked in model or
    guide, or without a closed form) keep their Monte Carlo terms.

    Raises:
        ObjectiveError: if a replaced site has different ``poutine.scale`` factors in model
            and guide (the KL would then not be a term of the ELBO).
    """
    records = {r.key[1]: (i, r) for i, r in enumerate(draw.records) if r.key[0] == draw.call}
    model_items, guide_items = list(model_density.log_prob.items), list(draw.log_prob.items)
    kl_items, dropped_model, dropped_guide = [], set(), set()
    for j, (name, site) in enumerate(model_density._sites()):
        if site["is_observed"] or name not in records:
            continue
        i, record = records[name]
        if record.strategy is None or not record.strategy.pathwise:
            continue
        guide_site = draw.trace.nodes[name]
        if site["mask"] is not None or guide_site["mask"] is not None:
            continue
        scale = site["scale"]
        if not torch.equal(torch.as_tensor(scale), torch.as_tensor(guide_site["scale"])):
            raise ObjectiveError(
                f"site {name!r}: analytic_kl needs the same poutine.scale in model and guide, "
                f"got {scale!r} and {guide_site['scale']!r}; scale both or use "
                "analytic_kl=False"
            )
        try:
            kl = kl_at(record.fn, site["fn"], record.value)
        except NotImplementedError:
            continue
        shape = model_items[j][0].shape
        if kl.shape != shape:
            try:
                kl = kl.expand(shape)
            except RuntimeError:
                raise ObjectiveError(
                    f"site {name!r}: the closed-form KL has shape {tuple(kl.shape)}, not the "
                    f"site's batch shape {tuple(shape)}"
                ) from None
        kl_items.append((-kl * scale, max(model_items[j][1], record.index), -1))
        dropped_model.add(j)
        dropped_guide.add(i)
    items = [item for j, item in enumerate(model_items) if j not in dropped_model]
    items += [(-t, h, o) for i, (t, h, o) in enumerate(guide_items) if i not in dropped_guide]
    terms = model_density.log_prob
    return Terms(items + kl_items, terms.plate_nesting, terms.num_particles)


def plate_nesting_of(*programs: tuple[Callable, tuple, dict]) -> int:
    """Pyro's ``max_plate_nesting`` of several programs, from one blocked run of each.

    The runs leave the random stream and the modules' buffers untouched
    (:func:`pplx.rng.untouched_state`), so the first step of a fit draws the same numbers as it
    would after a resume from a checkpoint, and batch-norm statistics are updated by training
    steps only.
    """
    from pplx.traces import max_plate_nesting

    traces = []
    with poutine.block(), torch.no_grad(), untouched_state():
        replay_from = None
        for fn, args, kwargs in programs:
            runner = fn if replay_from is None else poutine.replay(fn, trace=replay_from)
            trace = poutine.trace(runner).get_trace(*args, **kwargs)
            replay_from = replay_from or trace
            traces.append(trace)
    return max_plate_nesting(*traces)


__all__ = [
    "Draw",
    "Estimate",
    "Execution",
    "ModelDensity",
    "ObjectiveError",
    "SiteRecord",
    "Terms",
    "current_execution",
    "density",
    "expectation",
    "logmeanexp",
    "simulate",
]
