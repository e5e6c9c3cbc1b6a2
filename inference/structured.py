r"""Structured stochastic-gradient MCMC (Alexos, Boyd & Mandt, ICML 2022).

The latents are split into groups :math:`\theta = (\theta_1, \dots, \theta_K)` (whole sites, or
pieces of a site's tensor). Each group moves by Langevin dynamics on a *self-averaged* energy in
which the other groups are replaced by draws from their own stored past chain values:

.. math::

    U_k(\theta_k) = -\,\mathbb E_{\theta_{\neg k} \sim \hat q_{\neg k}}
        \bigl[\log \tilde p(\theta_k, \theta_{\neg k})\bigr],
    \qquad \hat q_{\neg k} = \prod_{j \ne k} \hat q_j,

where :math:`\hat q_j` is the empirical distribution of group :math:`j` in a ring buffer of
past positions (one entry every ``buffer_thinning`` steps, at most ``buffer_size`` entries, so
memory stays bounded). The expectation is estimated with ``num_buffer_samples`` = :math:`S`
draws, each group's index drawn independently (a draw from the *product* of the buffers'
marginals):

.. math::

    \hat g_k = \frac1S\sum_{s=1}^S \nabla_{\theta_k}
        \log\tilde p\bigl(\theta_k, \tilde\theta^{(s)}_{\neg k}\bigr),\qquad
    \theta_k \leftarrow \theta_k + \tfrac\epsilon2\,\hat g_k + \mathcal N(0, \epsilon I),

for all groups at once (the step of :class:`~pplx.inference.sgmcmc.SGLD`; the pSGLD and SGHMC
updates work the same way). Every chain, group and buffer draw is one row of a single
vectorized evaluation of the model: ``C * (1 + K * S)`` rows per step for ``C`` chains (the
extra ``C`` rows give the log density at the chains' own positions, reported as ``lp``).

**Dropout variant** (``dropout=p``): each of the :math:`S` rows is one composite point in which
every group independently keeps its current value with probability :math:`1 - p` and is
replaced by a buffer draw with probability :math:`p`; a group's gradient averages over the rows
that kept it, :math:`\hat g_k = \frac{1}{(1-p)S}\sum_s m_{sk}\nabla_{\theta_k}\log\tilde p(
\text{row}_s)` (unbiased for the expected gradient of group :math:`k` given that it is kept).
The cost is ``C * (1 + S)`` rows whatever the number of groups; :math:`p \to 0` is plain SGLD.

**What the chain samples.** With a fixed :math:`\hat q_{\neg k}` the group's dynamics target
:math:`q_k(\theta_k) \propto \exp(\mathbb E_{\hat q_{\neg k}}\log p(\theta_k, \theta_{\neg k}))`,
the coordinate-ascent (mean-field) update of a variational family that factorises over the
groups but is otherwise free; its fixed point is the structured variational approximation, not
the posterior. Given the buffer, a group mixes at the speed set by its *own* curvature, not by
the posterior's worst-conditioned direction across groups. But the buffer is the chain's own
past, so its mean moves, and the chain follows it: on a Gaussian target the chain's long-run
average obeys the same linear equations as SGLD's (its spectral density at frequency zero is at
least SGLD's, the buffer draws adding to it), while its marginal variance is smaller. Its
integrated autocorrelation time, long-run variance over marginal variance, is therefore
*larger* than SGLD's at the same step size (see the guide, where this is worked out and
tested). ``freeze_buffer_after_warmup=True`` stops writing to the buffer after the warm-up:
each chain then samples the fixed factorised target given its warm-up buffer and mixes fast,
at the price of a per-chain offset inherited from the buffer.

Reference: A. Alexos, A. Boyd, S. Mandt, *Structured Stochastic Gradient MCMC*, ICML 2022
(arXiv:2107.09028).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pplx.inference.potential import Potential
from pplx.inference.results import Result
from pplx.inference.sgmcmc import PSGLD, SGHMC, SGLD, SGMCMCState

#: Name of the group that gathers the latents no group names (``remainder=True``).
REMAINDER = "rest"

_BUFFER_KEYS = ("buffer", "buffer_next", "buffer_count", "freeze_at")


@dataclass(frozen=True)
class GroupLayout:
    """Which columns of the flat unconstrained vector belong to which group.

    Attributes:
        names: Group names, in order.
        members: Sites (or pieces ``"site[i]"`` of split sites) of each group.
        column_group: ``(D,)`` group index of every column.
    """

    names: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    column_group: torch.Tensor

    @property
    def num_groups(self) -> int:
        """Number of groups."""
        return len(self.names)

    def columns(self, name: str) -> torch.Tensor:
        """Column indices of group ``name``."""
        index = self.names.index(name)
        return torch.nonzero(self.column_group == index).reshape(-1)


def _parse_groups(groups: Any, engine: str) -> list[tuple[str, tuple[str, ...]]] | None:
    """Normalise the ``groups`` argument to ``[(group name, member names)]`` (syntax only)."""
    if groups is None:
        return None
    if isinstance(groups, Mapping):
        items = list(groups.items())
    elif isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
        raise TypeError(
            f"{engine}: groups must be a list of groups (each a site name or a list of site "
            f"names) or a dict group name -> list of site names, got {groups!r}"
        )
    else:
        items = []
        for entry in groups:
            members = [entry] if isinstance(entry, str) else entry
            label = "+".join(str(m) for m in members) if _is_sequence(members) else str(entry)
            items.append((label, entry))
    parsed, seen_names, owner = [], set(), {}
    for name, entry in items:
        if not isinstance(name, str):
            raise TypeError(f"{engine}: group names must be strings, got {name!r}")
        members = (entry,) if isinstance(entry, str) else entry
        if not _is_sequence(members) or not all(isinstance(m, str) for m in members):
            raise TypeError(
                f"{engine}: group {name!r} must be a site name or a list of site names, "
                f"got {entry!r}"
            )
        members = tuple(members)
        if not members:
            raise ValueError(
                f"{engine}: group {name!r} is empty; list at least one latent site in it or "
                "remove it"
            )
        if name in seen_names:
            raise ValueError(f"{engine}: two groups are called {name!r}; give them distinct names")
        seen_names.add(name)
        for member in members:
            if member in owner:
                where = (
                    f"twice in group {name!r}"
                    if owner[member] == name
                    else f"in groups {owner[member]!r} and {name!r}"
                )
                raise ValueError(
                    f"{engine}: {member!r} is {where}; groups must not overlap (each latent "
                    "site, or piece of a split site, belongs to exactly one group)"
                )
            owner[member] = name
        parsed.append((name, members))
    if not parsed:
        raise ValueError(f"{engine}: groups is empty; name at least two groups (or pass None)")
    return parsed


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _check_count(engine: str, label: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{engine}: {label} must be an integer >= {low}, got {value!r}")
    return int(value)


def build_layout(
    potential: Potential,
    groups: list[tuple[str, tuple[str, ...]]] | None,
    split: Mapping[str, int | torch.Tensor],
    remainder: bool,
    engine: str,
) -> GroupLayout:
    """Resolve group names against the model's latent sites (see :class:`StructuredSGLD`).

    Raises:
        ValueError: A group or ``split`` names a missing site or piece, groups overlap, a site
            is in no group while ``remainder=False``, or fewer than two groups result.
    """
    blocks = {b.name: b for b in potential.blocks}
    latent_list = list(blocks)
    pieces: dict[str, torch.Tensor] = {}  # piece or whole-site name -> its columns
    piece_site: dict[str, str] = {}
    split_pieces: dict[str, list[str]] = {}
    for site, spec in split.items():
        if site not in blocks:
            raise ValueError(
                f"{engine}: split names {site!r}, which is not a latent site of the model "
                f"(latent sites: {latent_list})"
            )
        block = blocks[site]
        columns = torch.arange(block.offset, block.offset + block.size)
        if isinstance(spec, torch.Tensor):
            if spec.is_floating_point() or spec.is_complex() or spec.dtype == torch.bool:
                raise TypeError(
                    f"{engine}: split[{site!r}] must hold integer piece labels, got dtype "
                    f"{spec.dtype}"
                )
            if tuple(spec.shape) not in (tuple(block.unconstrained_shape), (block.size,)):
                raise ValueError(
                    f"{engine}: split[{site!r}] has shape {tuple(spec.shape)}; it must label "
                    f"each unconstrained coordinate of the site, shape "
                    f"{tuple(block.unconstrained_shape)} (or ({block.size},) flattened)"
                )
            labels = spec.reshape(-1).cpu().long()
            count = int(labels.max()) + 1 if labels.numel() else 0
            used = torch.unique(labels)
            if labels.min() < 0 or used.numel() != count:
                raise ValueError(
                    f"{engine}: split[{site!r}] must use every label 0, ..., n - 1 (one per "
                    f"piece), got labels {used.tolist()}"
                )
            chunks = [columns[labels == i] for i in range(count)]
        else:
            if isinstance(spec, bool) or not isinstance(spec, numbers.Integral) or spec < 1:
                raise ValueError(
                    f"{engine}: split[{site!r}] must be a number of pieces >= 1 or a tensor of "
                    f"piece labels, got {spec!r}"
                )
            if spec > block.size:
                raise ValueError(
                    f"{engine}: split[{site!r}] = {spec} asks for more pieces than the site's "
                    f"{block.size} unconstrained coordinate(s)"
                )
            chunks = list(columns.tensor_split(int(spec)))
        names = [f"{site}[{i}]" for i in range(len(chunks))]
        split_pieces[site] = names
        for name, chunk in zip(names, chunks):
            pieces[name] = chunk
            piece_site[name] = site
    for site, block in blocks.items():
        if site not in split:
            pieces[site] = torch.arange(block.offset, block.offset + block.size)
            piece_site[site] = site

    if groups is None:
        groups = [(name, (name,)) for name in pieces]
    resolved: list[tuple[str, tuple[str, ...]]] = []
    taken: set[str] = set()
    for name, members in groups:
        for member in members:
            if member in pieces:
                continue
            if member in split_pieces:
                listed = split_pieces[member]
                raise ValueError(
                    f"{engine}: group {name!r} names site {member!r}, which is split into "
                    f"{len(listed)} pieces; name its pieces ({listed[0]!r} ... {listed[-1]!r}) "
                    "or drop it from split"
                )
            base = member.split("[", 1)[0]
            if base in split_pieces:
                raise ValueError(
                    f"{engine}: group {name!r} names {member!r}, but site {base!r} is split into "
                    f"{len(split_pieces[base])} pieces: {split_pieces[base]}"
                )
            raise ValueError(
                f"{engine}: group {name!r} names {member!r}, which is not a latent site of the "
                f"model (latent sites: {latent_list}); fix the name or remove it from the group"
            )
        resolved.append((name, members))
        taken.update(members)
    left = [p for p in pieces if p not in taken]
    whole = [p for p in left if p not in piece_site or piece_site[p] == p]
    for piece in left:
        if piece not in whole:  # an unnamed piece of a split site: a group of its own
            resolved.append((piece, (piece,)))
    if whole:
        if not remainder:
            raise ValueError(
                f"{engine}: latent site(s) {whole} are in no group; add them to a group, or pass "
                f"remainder=True to gather them in one extra group {REMAINDER!r}"
            )
        label = REMAINDER
        names = {n for n, _ in resolved}
        while label in names:
            label += "_"
        resolved.append((label, tuple(whole)))
    if len(resolved) < 2:
        raise ValueError(
            f"{engine}: only one group ({resolved[0][0]!r}), so there is nothing to decouple; "
            "name at least two groups (or split a site), or use SGLD"
        )
    column_group = torch.empty(potential.dim, dtype=torch.long)
    for index, (_, members) in enumerate(resolved):
        for member in members:
            column_group[pieces[member]] = index
    return GroupLayout(
        tuple(n for n, _ in resolved), tuple(m for _, m in resolved), column_group.clone()
    )


class _Structured:
    """The structured gradient and the ring buffer, mixed into an SG-MCMC sampler class."""

    name: str
    default_name: str
    _potentials: Any

    def __init__(
        self,
        model: Callable,
        groups: Sequence[str | Sequence[str]] | Mapping[str, Sequence[str]] | None = None,
        *,
        split: Mapping[str, int | torch.Tensor] | None = None,
        remainder: bool = True,
        buffer_size: int = 1000,
        buffer_thinning: int = 1,
        num_buffer_samples: int = 1,
        dropout: float | None = None,
        plain_steps: int = 0,
        freeze_buffer_after_warmup: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)  # type: ignore[call-arg]
        engine = self.name
        self.groups = _parse_groups(groups, engine)
        if split is not None and not isinstance(split, Mapping):
            raise TypeError(
                f"{engine}: split must be a dict site -> number of pieces (or a tensor of piece "
                f"labels), got {split!r}"
            )
        self.split = dict(split or {})
        self.remainder = bool(remainder)
        self.buffer_size = _check_count(engine, "buffer_size", buffer_size, 1)
        self.buffer_thinning = _check_count(engine, "buffer_thinning", buffer_thinning, 1)
        self.num_buffer_samples = _check_count(engine, "num_buffer_samples", num_buffer_samples, 1)
        self.plain_steps = _check_count(engine, "plain_steps", plain_steps, 0)
        if dropout is not None:
            if (
                isinstance(dropout, bool)
                or not isinstance(dropout, numbers.Real)
                or not 0 < dropout < 1
            ):
                raise ValueError(
                    f"{engine}: dropout must be None or a probability in (0, 1) (the chance "
                    f"that a group is replaced by a buffer draw), got {dropout!r}"
                )
            dropout = float(dropout)
        self.dropout = dropout
        self.freeze_buffer_after_warmup = bool(freeze_buffer_after_warmup)
        self._layout_cache: tuple[Potential, GroupLayout] | None = None

    # ------------------------------------------------------------------ groups
    def layout(self, *args: Any, **kwargs: Any) -> GroupLayout:
        """The groups resolved against the model's latent sites (validated, cached)."""
        potential = self.potential(*args, **kwargs)  # type: ignore[attr-defined]
        return self._layout(potential)

    def _layout(self, potential: Potential) -> GroupLayout:
        cached = self._layout_cache
        if cached is None or cached[0] is not potential:
            layout = build_layout(potential, self.groups, self.split, self.remainder, self.name)
            self._layout_cache = cached = (potential, layout)
        return cached[1]

    # ------------------------------------------------------------------ state
    def init(self, *args: Any, num_chains: int = 1, **kwargs: Any) -> SGMCMCState:  # noqa: D102
        self.layout(*args, **kwargs)  # refuse bad groups before anything else
        return super().init(*args, num_chains=num_chains, **kwargs)  # type: ignore[misc]

    def init_aux(self, position: torch.Tensor) -> dict[str, torch.Tensor]:
        """The method's auxiliary tensors plus the ring buffer, seeded with ``position``.

        ``buffer`` is ``(buffer_size, C, D)``; ``buffer_count`` entries are filled and
        ``buffer_next`` is the slot written next.
        """
        aux = super().init_aux(position)  # type: ignore[misc]
        buffer = position.new_zeros((self.buffer_size,) + tuple(position.shape))
        buffer[0] = position
        long = {"dtype": torch.long, "device": position.device}
        aux["buffer"] = buffer
        aux["buffer_next"] = torch.tensor(1 % self.buffer_size, **long)
        aux["buffer_count"] = torch.tensor(1, **long)
        aux["freeze_at"] = position.new_tensor(math.inf)
        return aux

    def prepare(self, state: SGMCMCState, warmup_steps: int) -> None:  # noqa: D102
        super().prepare(state, warmup_steps)  # type: ignore[misc]
        self._check_state(state)
        if self.freeze_buffer_after_warmup:
            state.aux["freeze_at"].fill_(warmup_steps)

    def _check_state(self, state: SGMCMCState) -> None:
        missing = [k for k in _BUFFER_KEYS if k not in state.aux]
        if missing:
            raise ValueError(
                f"{self.name}: the state has no ring buffer ({missing} missing from state.aux); "
                f"start from {type(self).__name__}.init or a checkpoint of this engine"
            )
        buffer = state.aux["buffer"]
        if buffer.shape != (self.buffer_size,) + tuple(state.position.shape):
            raise ValueError(
                f"{self.name}: the state's buffer has shape {tuple(buffer.shape)}, but "
                f"buffer_size={self.buffer_size} with positions {tuple(state.position.shape)} "
                f"needs {(self.buffer_size,) + tuple(state.position.shape)}"
            )

    def _store(self, state: SGMCMCState) -> None:
        """Write the new position into the ring buffer every ``buffer_thinning`` steps."""
        if state.step % self.buffer_thinning or state.step >= state.aux["freeze_at"]:
            return
        slot = int(state.aux["buffer_next"])
        state.aux["buffer"][slot] = state.position
        state.aux["buffer_next"].fill_((slot + 1) % self.buffer_size)
        state.aux["buffer_count"].clamp_(max=self.buffer_size - 1).add_(1)

    # ------------------------------------------------------------------ the gradient
    def _composite_rows(
        self, state: SGMCMCState, layout: GroupLayout
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Rows where other groups hold buffer draws, and how to fold their gradients back."""
        position = state.position
        buffer = state.aux["buffer"]
        chains, dim = position.shape
        count = int(state.aux["buffer_count"])
        groups, samples = layout.num_groups, self.num_buffer_samples
        column_group = layout.column_group.to(position.device)
        chain_index = torch.arange(chains, device=position.device)
        column_index = torch.arange(dim, device=position.device)
        if self.dropout is None:
            # row (c, k, s): group k at its current value, every other group j at buffer entry
            # index[c, k, s, j] (independent across groups: a draw from the product of marginals)
            index = torch.randint(count, (chains, groups, samples, groups), device=position.device)
            drawn = buffer[index[..., column_group], chain_index.view(-1, 1, 1, 1), column_index]
            own = column_group == torch.arange(groups, device=position.device).unsqueeze(-1)
            rows = torch.where(own.unsqueeze(1), position.view(chains, 1, 1, dim), drawn)

            def fold(grad: torch.Tensor) -> torch.Tensor:
                per_group = grad.reshape(chains, groups, samples, dim).mean(2)
                return per_group.gather(1, column_group.expand(chains, 1, dim)).squeeze(1)

            return rows.reshape(-1, dim), fold

        keep = torch.rand(chains, samples, groups, device=position.device) >= self.dropout
        index = torch.randint(count, (chains, samples, groups), device=position.device)
        drawn = buffer[index[..., column_group], chain_index.view(-1, 1, 1), column_index]
        kept = keep[..., column_group]  # (C, S, D)
        rows = torch.where(kept, position.unsqueeze(1), drawn)
        scale = 1.0 / ((1.0 - self.dropout) * samples)

        def fold_dropout(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.reshape(chains, samples, dim)
            return (grad * kept.to(grad.dtype)).sum(1) * scale

        return rows.reshape(-1, dim), fold_dropout

    def gradient(
        self, state: SGMCMCState, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Log density at the chains' positions ``(C,)`` and the structured gradient ``(C, D)``.

        During the first ``plain_steps`` steps the gradient is the ordinary one (all groups at
        their current values); afterwards it is :math:`\hat g` of the module docstring. A
        chain's composite rows use its minibatch (see ``minibatches``).
        """
        potential = self.potential(*args, **kwargs)  # type: ignore[attr-defined]
        layout = self._layout(potential)
        self._check_state(state)
        chains = state.position.shape[0]
        structured = state.step >= self.plain_steps
        if structured:
            rows, fold = self._composite_rows(state, layout)
            points = torch.cat([state.position, rows])
        else:
            points = state.position
        indices = self.minibatch_indices(potential, state.position)  # type: ignore[attr-defined]
        if indices is not None and structured:  # a chain's composite rows share its minibatch
            per_chain = points.shape[0] // chains - 1
            rows_chain = torch.arange(chains, device=points.device).repeat_interleave(per_chain)
            chain_of_point = torch.cat([torch.arange(chains, device=points.device), rows_chain])
            indices = [idx[chain_of_point.to(idx.device)] for idx in indices]
        log_p, grad = self.evaluate(potential, points, state.step, indices)  # type: ignore[attr-defined]
        combined = fold(grad[chains:]) if structured else grad
        return log_p[:chains], combined

    def step(self, state: SGMCMCState, *args: Any, **kwargs: Any) -> SGMCMCState:
        """One structured update of every chain, then the buffer (in place; returned)."""
        super().step(state, *args, **kwargs)  # type: ignore[misc]  # SGLD.step -> gradient
        self._store(state)
        return state

    # ------------------------------------------------------------------ results
    def buffer_draws(
        self, state: SGMCMCState, num_draws: int, *args: Any, **kwargs: Any
    ) -> Result:
        r"""Draws from the factorised approximation :math:`\prod_k \hat q_k` held in the buffer.

        Each group of each draw takes an independent uniformly drawn buffer entry (what the
        authors use for prediction). Draws are ``(C, num_draws, ...)``: chain ``c`` uses its
        own buffer.
        """
        num_draws = _check_count(self.name, "num_draws", num_draws, 1)
        potential = self.potential(*args, **kwargs)  # type: ignore[attr-defined]
        layout = self._layout(potential)
        self._check_state(state)
        buffer = state.aux["buffer"]
        chains, dim = state.position.shape
        count = int(state.aux["buffer_count"])
        column_group = layout.column_group.to(buffer.device)
        index = torch.randint(count, (chains, num_draws, layout.num_groups), device=buffer.device)
        chain_index = torch.arange(chains, device=buffer.device).view(-1, 1, 1)
        z = buffer[index[..., column_group], chain_index, torch.arange(dim, device=buffer.device)]
        values = potential.to_samples(z.reshape(chains * num_draws, dim))
        samples = {k: v.reshape((chains, num_draws) + v.shape[1:]) for k, v in values.items()}
        return Result(
            self.name,
            samples,
            info={"num_chains": chains, "num_samples": num_draws, "buffer_entries": count},
        )

    def result(  # noqa: D102
        self, state: SGMCMCState, *args: Any, wall_time: float = math.nan, **kwargs: Any
    ) -> Result:
        result = super().result(state, *args, wall_time=wall_time, **kwargs)  # type: ignore[misc]
        layout = self.layout(*args, **kwargs)
        result.info.update(
            {
                "groups": dict(zip(layout.names, layout.members)),
                "num_groups": layout.num_groups,
                "buffer_size": self.buffer_size,
                "buffer_thinning": self.buffer_thinning,
                "buffer_entries": int(state.aux["buffer_count"]),
                "num_buffer_samples": self.num_buffer_samples,
                "dropout": self.dropout,
                "plain_steps": self.plain_steps,
            }
        )
        return result


class StructuredSGLD(_Structured, SGLD):
    r"""Structured SGLD (S-SGLD; Alexos, Boyd & Mandt 2022): SGLD on the self-averaged energy.

    See the module docstring for the update. Takes the arguments of
    :class:`~pplx.inference.sgmcmc.SGLD` (``step_size``, ``init``, ``jit``, ``checkpoint``...)
    as keywords, plus:

    Args:
        model: A Pyro model with continuous latent sites (as for SGLD).
        groups: The groups: a list whose entries are site names or lists of site names
            (``[["w1", "b1"], ["w2", "b2"]]``; a group's name joins its members with ``+``), or
            a dict group name -> site names. ``None``: every latent site (and every piece of a
            split site) is a group of its own.
        split: Site -> number of pieces (contiguous chunks of the site's flattened unconstrained
            coordinates), or a tensor of integer piece labels ``0..n-1``, one per unconstrained
            coordinate (e.g. ``torch.arange(16).expand(30, 16)`` splits a ``(30, 16)`` weight
            by output unit). Pieces are called ``"site[i]"``; a group may name them, and
            pieces that no group names are groups of their own.
        remainder: Gather latent sites that no group names into one extra group ``"rest"``;
            with ``False`` an uncovered site is an error.
        buffer_size: Entries of the ring buffer of past positions (memory
            ``buffer_size * C * D``).
        buffer_thinning: Store the position every ``buffer_thinning`` steps.
        num_buffer_samples: Buffer draws :math:`S` per group (rows per step per chain: ``K S``,
            or ``S`` with dropout) for the Monte Carlo estimate of the expected gradient.
        dropout: ``None``, or the probability :math:`p` that a group is replaced by a buffer
            draw in a row (the dropout variant).
        plain_steps: Take ordinary SGLD steps (all groups at their current values) for this
            many steps first, while the buffer fills.
        freeze_buffer_after_warmup: Stop writing to the buffer once :meth:`run`'s warm-up ends,
            so that each chain samples a fixed factorised target (fast mixing around an offset
            inherited from the warm-up).

    Raises:
        ValueError: At construction for bad settings; at :meth:`init` (before any step) for
            groups that name missing sites, overlap, leave a site uncovered with
            ``remainder=False``, are empty, or leave a single group.
    """

    default_name = "structured_sgld"


class StructuredPSGLD(_Structured, PSGLD):
    """Structured SG-MCMC with the pSGLD update (see :class:`~pplx.inference.sgmcmc.PSGLD`).

    Takes the arguments of :class:`StructuredSGLD` and of
    :class:`~pplx.inference.sgmcmc.PSGLD`. The preconditioner adapts to the structured gradient.
    """

    default_name = "structured_psgld"


class StructuredSGHMC(_Structured, SGHMC):
    """Structured SG-MCMC with the SGHMC update (see :class:`~pplx.inference.sgmcmc.SGHMC`).

    Takes the arguments of :class:`StructuredSGLD` and of
    :class:`~pplx.inference.sgmcmc.SGHMC`.
    """

    default_name = "structured_sghmc"
