"""One Result type for every engine, with Pyro's sample conventions and ArviZ output."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pyro.ops.stats import effective_sample_size, quantile, split_gelman_rubin

from pplx.inference import predictive
from pplx.inference.arviz_io import to_inference_data


def _check_grouped(name: str, value: torch.Tensor, chains: int, draws: int, what: str) -> None:
    if value.dim() < 2 or value.shape[:2] != (chains, draws):
        raise ValueError(
            f"{what} {name!r} has shape {tuple(value.shape)}; expected leading dimensions "
            f"(chains, draws) = ({chains}, {draws})"
        )


@dataclass
class Result:
    """Draws and diagnostics from one fit, whatever engine produced them.

    Every tensor of draws is shaped ``(chains, draws, *site_shape)``. Variational engines report
    one chain of independent draws from the fitted guide; particle engines report their
    particles as the draws of one chain; MCMC engines report their chains.

    Attributes:
        engine: Name of the engine that produced the result.
        samples: Latent site name to draws ``(chains, draws, *site_shape)``.
        sample_stats: Per-draw statistics ``(chains, draws)``: ``lp`` (log joint density),
            ``log_weight`` (importance log-weight ``log p - log q`` for variational draws),
            ``diverging``, ``step_size`` ... whatever the engine has.
        log_likelihood: Observed site to pointwise log-likelihood ``(chains, draws, *obs)``.
        posterior_predictive: Observed site to replicated data ``(chains, draws, *obs)``.
        observed_data: Observed site to the data.
        trace: Per-step curves of the fit (``loss``, ``grad_norm``, ...), each ``(num_steps,)``.
        wall_time: Seconds spent fitting (draws and diagnostics excluded).
        info: Settings and scalar facts about the fit (number of steps, final loss, ...).
        state: The engine's final state, from which a fit can continue.
    """

    engine: str
    samples: dict[str, torch.Tensor]
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    log_likelihood: dict[str, torch.Tensor] = field(default_factory=dict)
    posterior_predictive: dict[str, torch.Tensor] = field(default_factory=dict)
    observed_data: dict[str, torch.Tensor] = field(default_factory=dict)
    trace: dict[str, torch.Tensor] = field(default_factory=dict)
    wall_time: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)
    state: Any = None

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError(f"{self.engine}: a Result needs at least one latent site")
        first = next(iter(self.samples.values()))
        if first.dim() < 2:
            raise ValueError(
                f"{self.engine}: draws must be shaped (chains, draws, ...), "
                f"got {tuple(first.shape)}"
            )
        chains, draws = first.shape[:2]
        for group, what in (
            (self.samples, "site"),
            (self.sample_stats, "sample stat"),
            (self.log_likelihood, "log-likelihood of"),
            (self.posterior_predictive, "posterior predictive of"),
        ):
            for name, value in group.items():
                _check_grouped(name, value, chains, draws, what)

    @classmethod
    def from_draws(cls, engine: str, draws: Mapping[str, torch.Tensor], **fields: Any) -> Result:
        """Build a one-chain Result from draws shaped ``(num_samples, *site_shape)``."""
        grouped = {k: v.unsqueeze(0) for k, v in draws.items()}
        stats = {k: v.unsqueeze(0) for k, v in fields.pop("sample_stats", {}).items()}
        return cls(engine, grouped, sample_stats=stats, **fields)

    @classmethod
    def from_guide(
        cls,
        engine: str,
        model: Callable,
        guide: Callable,
        *args: Any,
        num_samples: int = 1000,
        **kwargs: Any,
    ) -> Result:
        """Draw ``num_samples`` latent values from a fitted guide as a one-chain Result.

        ``sample_stats`` holds ``lp`` (the model's log joint at each draw) and ``log_weight``
        (``lp - log q``), from which :meth:`importance_ess` follows. Call it where the guide's
        parameters are active (e.g. inside ``SVI.params_scope(state)``).
        """
        draws, log_q = predictive.guide_draws(guide, num_samples, *args, **kwargs)
        lp = predictive.log_joint(model, draws, *args, **kwargs)
        return cls.from_draws(engine, draws, sample_stats={"lp": lp, "log_weight": lp - log_q})

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Number of draws per chain."""
        return next(iter(self.samples.values())).shape[1]

    def get_samples(self, group_by_chain: bool = False) -> dict[str, torch.Tensor]:
        """Draws per site, following :meth:`pyro.infer.MCMC.get_samples`.

        Args:
            group_by_chain: Keep the chain dimension: ``(chains, draws, ...)``; otherwise chains
                are concatenated: ``(chains * draws, ...)``.
        """
        if group_by_chain:
            return dict(self.samples)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.samples.items()}

    def _flat_draws(self) -> dict[str, torch.Tensor]:
        return self.get_samples(group_by_chain=False)

    def effective_sample_size(self) -> dict[str, torch.Tensor]:
        """Bulk effective sample size per site coordinate (Geyer's initial monotone sequence).

        NaN when there are fewer than 4 draws per chain.
        """
        if self.num_draws < 4:
            return {k: torch.full(v.shape[2:], math.nan) for k, v in self.samples.items()}
        return {
            k: effective_sample_size(v.double(), chain_dim=0, sample_dim=1)
            for k, v in self.samples.items()
        }

    def importance_ess(self) -> float | None:
        r"""Kish effective sample size :math:`(\sum w)^2 / \sum w^2` of the importance weights.

        For variational draws with ``log_weight = log p(x, z) - log q(z)``, this says how many
        exact posterior draws the guide's draws are worth; ``None`` when there are no weights.
        """
        log_w = self.sample_stats.get("log_weight")
        if log_w is None:
            return None
        log_w = log_w.reshape(-1).double()
        return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))

    def summary(self, prob: float = 0.9) -> Any:
        """Per-coordinate summary as a pandas DataFrame.

        Columns: mean, std, median, the central ``prob`` interval, bulk effective sample size
        (``n_eff``) and split Gelman-Rubin ``r_hat`` (NaN when there is a single draw per chain).
        """
        import pandas as pd

        low, high = (1 - prob) / 2, (1 + prob) / 2
        rows = {}
        for name, value in self.samples.items():
            grouped = value.detach().double().cpu()
            flat = grouped.reshape((-1,) + grouped.shape[2:])
            stats = {
                "mean": flat.mean(0),
                "std": flat.std(0) if flat.shape[0] > 1 else torch.zeros_like(flat[0]),
                "median": flat.median(0).values,
                f"{100 * low:g}%": quantile(flat, [low], dim=0)[0],
                f"{100 * high:g}%": quantile(flat, [high], dim=0)[0],
            }
            if grouped.shape[1] >= 4:
                stats["n_eff"] = effective_sample_size(grouped, chain_dim=0, sample_dim=1)
                stats["r_hat"] = split_gelman_rubin(grouped, chain_dim=0, sample_dim=1)
            else:
                nan = torch.full_like(flat[0], math.nan)
                stats["n_eff"], stats["r_hat"] = nan, nan
            shape = flat.shape[1:]
            for index in range(max(1, math.prod(shape))):
                if shape:
                    coord = torch.unravel_index(torch.tensor(index), shape)
                    label = f"{name}[{','.join(str(int(c)) for c in coord)}]"
                    rows[label] = {k: float(v.reshape(-1)[index]) for k, v in stats.items()}
                else:
                    rows[name] = {k: float(v) for k, v in stats.items()}
        return pd.DataFrame.from_dict(rows, orient="index")

    def print_summary(self, prob: float = 0.9) -> None:
        """Print :meth:`summary` (the analogue of ``pyro.infer.MCMC.summary``)."""
        print(self.summary(prob).to_string(float_format=lambda v: f"{v:.3f}"))
        if "diverging" in self.sample_stats:
            print(f"Number of divergences: {int(self.sample_stats['diverging'].sum())}")

    def _apply_flat(self, fn: Callable, model: Callable, args: tuple, kwargs: dict) -> dict:
        flat = fn(model, self._flat_draws(), *args, **kwargs)
        chains, draws = self.num_chains, self.num_draws
        return {k: v.reshape((chains, draws) + v.shape[1:]) for k, v in flat.items()}

    def add_log_likelihood(self, model: Callable, *args: Any, **kwargs: Any) -> Result:
        """Compute the pointwise log-likelihood of ``model(*args, **kwargs)`` for every draw.

        Also fills ``sample_stats["lp"]`` (the log joint) if the engine did not. Returns ``self``.
        """
        self.log_likelihood = self._apply_flat(
            predictive.pointwise_log_likelihood, model, args, kwargs
        )
        if "lp" not in self.sample_stats:
            lp = predictive.log_joint(model, self._flat_draws(), *args, **kwargs)
            self.sample_stats["lp"] = lp.reshape(self.num_chains, self.num_draws)
        self.observed_data = predictive.observed_data(model, *args, **kwargs)
        return self

    def add_posterior_predictive(self, model: Callable, *args: Any, **kwargs: Any) -> Result:
        """Re-simulate every observed site of ``model(*args, **kwargs)`` for each draw.

        Returns ``self``, with ``posterior_predictive`` and ``observed_data`` filled.
        """
        self.posterior_predictive = self._apply_flat(
            predictive.posterior_predictive, model, args, kwargs
        )
        self.observed_data = predictive.observed_data(model, *args, **kwargs)
        return self

    def to_arviz(
        self,
        coords: Mapping[str, Any] | None = None,
        dims: Mapping[str, Sequence[str]] | None = None,
    ) -> Any:
        """ArviZ output: ``InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).

        Groups: ``posterior``, ``sample_stats``, ``log_likelihood``, ``posterior_predictive``
        and ``observed_data`` where the result has them. Add the last three with
        :meth:`add_log_likelihood` and :meth:`add_posterior_predictive`.
        """
        attrs = {"engine": self.engine, "wall_time_s": self.wall_time}
        attrs.update({k: v for k, v in self.info.items() if isinstance(v, (int, float, str))})
        return to_inference_data(
            self.samples,
            sample_stats=self.sample_stats,
            log_likelihood=self.log_likelihood,
            posterior_predictive=self.posterior_predictive,
            observed_data=self.observed_data,
            coords=coords,
            dims=dims,
            attrs=attrs,
        )

    def save(self, path: str | Path) -> None:
        """Save the result (tensors and info; not the engine state) with :func:`torch.save`."""
        payload = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "state"}
        torch.save(payload, Path(path))

    @classmethod
    def load(cls, path: str | Path, map_location: Any = None) -> Result:
        """Load a result written by :meth:`save`."""
        payload = torch.load(Path(path), map_location=map_location, weights_only=False)
        return cls(**payload)
