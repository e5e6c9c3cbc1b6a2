r"""The transform: an objective program becomes a surrogate with unbiased gradients.

Run the program once (the *primal* run). Its output is either :class:`~pplx.objectives.program.
Terms` inside :func:`~pplx.objectives.program.expectation` (a *linear* objective,
:math:`J = \mathbb E[\sum_t c_t]`) or a tensor / :class:`~pplx.objectives.program.Estimate`
(a *nonlinear* one, :math:`J = \mathbb E[F]`). The surrogate :math:`S` has the value of the
estimate and, in expectation, the gradient of :math:`J` (ADEV semantics, Lew et al. 2023,
encoded in PyTorch as in DiCE, Foerster et al. 2018, and Pyro's TraceGraph_ELBO):

.. math::

    S = \underbrace{\sum_t \langle c_t\,W_t\rangle}_{\text{value, pathwise}}
      + \sum_{i \in \text{score}} \langle (s_i - \bot s_i)\,\bot(D_i - b_i)\rangle
      + \sum_{i \in \text{MVD}} \sum_b \langle (w_{ib} - \bot w_{ib})\,\bot G_{ib}\rangle

where :math:`\bot` stops gradients and :math:`\langle\cdot\rangle` sums all elements.

* :math:`W_t = \prod_e q_e(z_e)` over the *enumerated* sites :math:`e` term :math:`t` depends
  on (exact expectations with their gradients).
* Score sites (:class:`~pplx.estimators.Reinforce`, the correction of
  :class:`~pplx.estimators.RejectionReparam`): :math:`s_i` is the site's score tensor and the
  downstream cost :math:`D_i = \sum_{t \ge i} c_t W_t` only sums terms that may depend on the
  site (those sampled or evaluated after it), reduced per plate slice: a site in slice
  :math:`n` of a plate is credited only with costs of slice :math:`n` and with costs outside
  the plate (plate-aware Rao-Blackwellisation). Nonlinear objectives use :math:`F` (or the
  program's per-particle signal) for every score site.
* MVD sites: for each weak-derivative branch :math:`b` with coupled value :math:`v_b`,
  :math:`G_{ib}` is the downstream cost of a re-execution of the program with the site forced
  to :math:`v_b` (every choice before it replayed, every later choice redrawn). Elements that
  the costs keep apart (particles and plate slices of a linear objective) are forced at once;
  elements that a cost mixes (e.g. the particles of IWAE) are forced one at a time, all in
  one batched re-execution with two extra dimensions (branch, element) on the left.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pplx.estimators.baselines import Auto, BaselineContext
from pplx.estimators.mvd import decompose
from pplx.estimators.strategies import MVD, Enumerate, StrategyError
from pplx.objectives.program import (
    Estimate,
    Execution,
    ObjectiveError,
    SiteRecord,
    Terms,
    _align,
)

#: re-executions per MVD site above which a warning suggests a cheaper strategy
MVD_WARN_ELEMENTS = 512


@dataclass
class Surrogate:
    """A differentiable stand-in for an objective.

    Attributes:
        value: The objective's estimate (detached, 0-dimensional).
        surrogate: A tensor with the same value whose gradient is an unbiased estimate of the
            objective's gradient (to be *maximised*).
        execution: The primal run's bookkeeping (random choices, strategies).
    """

    value: torch.Tensor
    surrogate: torch.Tensor
    execution: Execution


def _reduce_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum ``x`` so that it has ``len(shape)`` dims and size 1 wherever ``shape`` has 1."""
    nd = len(shape)
    if x.dim() > nd:
        x = x.sum(tuple(range(x.dim() - nd)))
    x = _align(x, nd)
    dims = tuple(i for i in range(nd) if shape[i] == 1 and x.shape[i] != 1)
    if dims:
        x = x.sum(dims, keepdim=True)
    return x


def _size_at(tensor: torch.Tensor, dim: int) -> int:
    """Size of ``tensor`` at negative dimension ``dim`` (1 where it has fewer dims)."""
    return tensor.shape[dim] if tensor.dim() >= -dim else 1


def _enum_weight(tensor: torch.Tensor, horizon: int, ex: Execution) -> torch.Tensor | None:
    """:math:`W_t`: the product of enumerated sites' probabilities that ``tensor`` depends on."""
    log_w = None
    for record in ex.sites:
        if record.enum_dim is None or record.index > horizon:
            continue
        if _size_at(tensor, record.enum_dim) == 1:
            continue  # the term does not depend on this enumerated choice
        for dim in range(-ex.plate_nesting - 1, 0):
            if _size_at(record.log_prob, dim) > 1 and _size_at(tensor, dim) == 1:
                raise StrategyError(
                    f"site {record.name!r}: Enumerate() in a plate or particle dimension that "
                    "a downstream cost sums over (e.g. a global site sampled after a local "
                    "enumerated one, or a nonlinear objective); sample global sites first in "
                    "the guide, or use MVD() or Reinforce() for this site."
                )
        log_q = record.unscaled_log_prob
        log_w = log_q if log_w is None else log_w + log_q
    return None if log_w is None else log_w.exp()


def _weighted(tensor: torch.Tensor, horizon: int, ex: Execution) -> torch.Tensor:
    weight = _enum_weight(tensor, horizon, ex)
    return tensor if weight is None else tensor * weight


def _as_estimate(out: Any, ex: Execution) -> Terms | Estimate:
    if isinstance(out, Terms):
        if not out.averaged:
            raise ObjectiveError(
                "the objective returned per-particle Terms; wrap them in expectation(...) "
                "(for a linear objective) or reduce them with .total() and logmeanexp(...)"
            )
        return out
    if isinstance(out, torch.Tensor):
        out = Estimate(out)
    if not isinstance(out, Estimate):
        raise ObjectiveError(
            "an objective program must return expectation(Terms), a tensor or an Estimate, "
            f"got {type(out).__name__}"
        )
    if not ex.rerun and out.value.dim() != 0:
        raise ObjectiveError(
            f"the objective returned a tensor of shape {tuple(out.value.shape)}; it must be a "
            "single number: reduce the particle dimension (the last one) with expectation(...) "
            "or logmeanexp(...)"
        )
    return out


def _per_element_dims(record: SiteRecord, out: Terms | Estimate, ex: Execution) -> list[int]:
    """Dimensions of the site's value whose elements must be forced one at a time."""
    shape = record.value.shape
    event_dim = record.fn.event_dim
    nb = len(shape) - event_dim
    dims = [nb + i for i in range(event_dim) if shape[nb + i] > 1]
    if isinstance(out, Estimate):
        independent = None if out.elements is None else nb + out.plate_dim
        return [d for d in range(nb) if shape[d] > 1 and d != independent] + dims
    for d in range(nb):
        if shape[d] == 1:
            continue
        neg = d - nb
        for tensor, horizon, _ in out.items:
            if horizon >= record.index and _size_at(tensor, neg) == 1:
                dims.append(d)
                break
    return sorted(dims)


def _mvd_term(
    record: SiteRecord,
    out: Terms | Estimate,
    ex: Execution,
    program: Callable[[], Any],
) -> torch.Tensor:
    """The MVD part of the surrogate for one site (zero value)."""
    value = record.value.detach()
    shape = tuple(value.shape)
    nb = len(shape) - record.fn.event_dim
    decomposition = decompose(record.fn, value)
    branches = decomposition.branches
    per_element = _per_element_dims(record, out, ex)
    sizes = [shape[d] for d in per_element]
    num = math.prod(sizes) if sizes else 1
    if num * len(branches) > MVD_WARN_ELEMENTS:
        warnings.warn(
            f"site {record.name!r}: MVD() re-executes the program for {num} elements x "
            f"{len(branches)} branches; consider Reinforce() or a linear objective (ELBO) "
            "that lets MVD force all elements at once",
            RuntimeWarning,
            stacklevel=4,
        )
    # mask[m] selects element m along the per-element dims (and everything along the others)
    mask_shape = [shape[d] if d in per_element else 1 for d in range(len(shape))]
    mask = torch.ones((num, *mask_shape), dtype=torch.bool, device=value.device)
    index = torch.arange(num, device=value.device)
    stride = num
    for d, size in zip(per_element, sizes, strict=True):
        stride //= size
        coord = (index // stride) % size
        view = [num] + [1] * len(shape)
        axis = [1] * (len(shape) + 1)
        axis[d + 1] = size
        mask = mask & (coord.view(view) == torch.arange(size, device=value.device).view(axis))
    forced = torch.stack([torch.where(mask, b.value, value) for b in branches])
    left = ex.plate_nesting + 1 + ex.enum_dims
    pad = left - nb
    forced = forced.reshape((len(branches), num) + (1,) * pad + shape)

    rerun = Execution(ex.num_particles, ex.plate_nesting, primal=ex, forced=(record.key, forced))
    with rerun, torch.no_grad():
        out2 = _as_estimate(program(), rerun)
    kept = tuple(1 if d in per_element else shape[d] for d in range(nb))
    target = (len(branches), num) + (1,) * pad + kept
    if isinstance(out2, Terms):
        cost = None
        for tensor, horizon, _ in out2.items:
            if horizon < record.index:
                continue
            x = _weighted(tensor, horizon, rerun)
            x = _reduce_to(_align(x, len(target)), target)
            cost = x if cost is None else cost + x
        if cost is None:
            return torch.zeros((), dtype=value.dtype, device=value.device)
        cost = cost.expand(target).reshape((len(branches), num) + kept)
    elif out2.elements is not None:  # a sum over independent plate elements
        f = out2.elements.reshape(len(branches), num, -1)
        cost = f.reshape((len(branches), num) + kept)
    else:
        f = out2.value
        cost = f.reshape(len(branches), num).reshape((len(branches), num) + (1,) * nb)
    cost = cost.reshape(cost.shape + (1,) * (len(shape) - nb))
    grads = (cost * mask.unsqueeze(0)).sum(1)  # (B, *shape)
    if decomposition.centred:
        grads = grads - grads.mean(0, keepdim=True)
    total = torch.zeros((), dtype=value.dtype, device=value.device)
    for branch, g in zip(branches, grads, strict=True):
        weight = branch.weight
        total = total + ((weight - weight.detach()) * g.detach()).sum()
    return total


def primal_run(
    program: Callable[[], Any], num_particles: int, plate_nesting: int
) -> tuple[Terms | Estimate, Execution]:
    """Run ``program`` once, sampling fresh values: its output and bookkeeping."""
    ex = Execution(num_particles, plate_nesting)
    with ex:
        out = _as_estimate(program(), ex)
    return out, ex


def weighted_terms(out: Terms, ex: Execution) -> list[tuple[torch.Tensor, int]]:
    """The cost terms of a linear objective, weighted by their enumerated probabilities."""
    weighted = []
    for tensor, horizon, origin in out.items:
        if origin >= 0 and isinstance(ex.sites[origin].strategy, MVD):
            # The direct derivative of an MVD site's own log q (its value is detached) has
            # expectation zero; the weak derivative already accounts for the site's law.
            tensor = tensor.detach()
        weighted.append((_weighted(tensor, horizon, ex), horizon))
    return weighted


def estimate_value(out: Terms | Estimate, weighted: list[tuple[torch.Tensor, int]]):
    """The objective's estimate: the sum of the weighted terms, or the program's value."""
    if isinstance(out, Terms):
        return sum(t.sum() for t, _ in weighted)
    return out.value


def build_surrogate(
    program: Callable[[], Any],
    num_particles: int,
    plate_nesting: int,
    args: tuple = (),
    kwargs: dict | None = None,
) -> Surrogate:
    """Run ``program`` and assemble the surrogate (see the module docstring).

    Args:
        program: A zero-argument callable running the objective program (model, guide and
            arguments bound), so that it can be re-executed.
        num_particles: :math:`K`.
        plate_nesting: The number of plate dimensions of the model and guide.
        args: The objective's arguments (handed to learned baselines).
        kwargs: The objective's keyword arguments.
    """
    out, ex = primal_run(program, num_particles, plate_nesting)
    particle_dim = -(plate_nesting + 1)
    linear = isinstance(out, Terms)
    weighted = weighted_terms(out, ex) if linear else []
    value = estimate_value(out, weighted)
    surrogate = value
    zero = torch.zeros((), dtype=value.dtype, device=value.device)
    ctx = BaselineContext(num_particles, particle_dim, linear, tuple(args), dict(kwargs or {}))
    for record in ex.sites:
        if record.score is None:
            continue
        score = record.score
        shape = tuple(_align(score, plate_nesting + 1).shape)
        if linear:
            cost = zero
            for tensor, horizon in weighted:
                if horizon >= record.index:
                    cost = cost + _reduce_to(tensor, shape)
        elif out.signal is not None:
            signal = out.signal
            if signal.dim() == 1:  # (K,): one signal per particle
                signal = signal.reshape((num_particles,) + (1,) * plate_nesting)
            cost = signal  # else already in the batch layout (K, *plates)
        else:
            cost = out.value.expand(())
        cost = cost.detach()
        baseline = record.strategy.baseline
        if isinstance(baseline, Auto) and not linear and out.signal is not None:
            b, aux = zero, None
        else:
            b, aux = baseline(record.name, cost, ctx)
        surrogate = surrogate + ((score - score.detach()) * (cost - b.detach())).sum()
        if aux is not None:
            surrogate = surrogate - (aux - aux.detach())
    for record in ex.sites:
        if isinstance(record.strategy, MVD):
            surrogate = surrogate + _mvd_term(record, out, ex, program).to(surrogate)
        elif isinstance(record.strategy, Enumerate) and not linear:
            raise StrategyError(
                f"site {record.name!r}: Enumerate() needs a linear objective; use MVD() or "
                "Reinforce() for this site."
            )
    return Surrogate(value.detach(), surrogate, ex)
