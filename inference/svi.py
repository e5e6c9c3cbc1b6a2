"""Stochastic variational inference: fit a guide with any loss and any torch optimizer.

Functional core, thin shell: :meth:`SVI.init` builds an explicit :class:`SVIState`, and
:meth:`SVI.step` takes one gradient step on it; :meth:`SVI.run` adds the loop, minibatches, a
progress bar, early stopping, checkpoint/resume and the :class:`~pplx.inference.Result`.

The engine does not leave its parameters in Pyro's global param store: every call runs inside
``pyro.get_param_store().scope(state.params)``, so several fits live side by side and the state
can be saved, loaded and moved as one object.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.poutine as poutine
import torch

from pplx.inference.checkpoint import (
    check_writable,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pplx.inference.loop import run_steps
from pplx.inference.results import Result
from pplx.inference.validation import check_guide, check_model, trace_or_explain
from pplx.traces import sample_sites

ENGINE = "svi"


class NonFiniteLossError(FloatingPointError):
    """The loss or a gradient became NaN or infinite.

    Attributes:
        site: The sample site (or parameter) found to be the cause, if one was found.
        step: The step at which it happened.
        state: The engine state before the failing update; its parameters are still finite.
    """

    def __init__(self, message: str, site: str | None, step: int, state: SVIState) -> None:
        super().__init__(message)
        self.site = site
        self.step = step
        self.state = state


@dataclass
class EarlyStopping:
    r"""Stop when a smoothed loss stops improving.

    The loss is smoothed by an exponential moving average
    :math:`m_t = \beta m_{t-1} + (1 - \beta)\,\ell_t`. A step improves when
    :math:`m_t < m^\star - (\mathrm{atol} + \mathrm{rtol}\,|m^\star|)`, where :math:`m^\star`
    is the best value so far; the fit stops after ``patience`` steps without improvement.

    Args:
        patience: Steps without improvement before stopping.
        rtol: Relative improvement that counts.
        atol: Absolute improvement that counts.
        smoothing: The factor :math:`\beta` of the moving average, in ``[0, 1)``.
        min_steps: Never stop before this many steps.
    """

    patience: int = 200
    rtol: float = 1e-4
    atol: float = 0.0
    smoothing: float = 0.9
    min_steps: int = 0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {self.patience}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"EarlyStopping: smoothing must be in [0, 1), got {self.smoothing}")

    def init(self) -> dict[str, float]:
        """Fresh stopping state."""
        return {"ema": math.nan, "best": math.inf, "since_best": 0}

    def update(self, state: dict[str, float], loss: float, step: int) -> bool:
        """Fold ``loss`` into ``state``; return whether to stop."""
        ema = (
            loss
            if math.isnan(state["ema"])
            else (self.smoothing * state["ema"] + (1 - self.smoothing) * loss)
        )
        state["ema"] = ema
        best = state["best"]
        if math.isinf(best) or ema < best - (self.atol + self.rtol * abs(best)):
            state["best"], state["since_best"] = ema, 0
        else:
            state["since_best"] += 1
        return step >= self.min_steps and state["since_best"] >= self.patience


@dataclass
class SVIState:
    """Everything a fit needs to continue: parameters, optimizer, curves, counters.

    Attributes:
        step: Number of gradient steps taken.
        params: Pyro param-store state ``{"params": {name: unconstrained}, "constraints": ...}``.
        optimizer: The torch optimizer over the unconstrained parameters.
        scheduler: An optional learning-rate scheduler.
        param_groups: Parameter names per optimizer group, in order (for checkpoints).
        losses: Loss per step.
        grad_norms: Global gradient norm per step.
        stopping: Early-stopping state, if early stopping is on.
        stopped_early: Whether the last run ended through early stopping.
    """

    step: int
    params: dict[str, dict]
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    param_groups: list[list[str]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    stopping: dict[str, float] | None = None
    stopped_early: bool = False

    def constrained_params(self) -> dict[str, torch.Tensor]:
        """Parameter values in their constrained (user-facing) space, detached."""
        out = {}
        for name, value in self.params["params"].items():
            constraint = self.params["constraints"].get(name, torch.distributions.constraints.real)
            out[name] = torch.distributions.transform_to(constraint)(value).detach().clone()
        return out

    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot (tensors cloned) for checkpoints."""
        return {
            "step": self.step,
            "params": {k: v.detach().clone() for k, v in self.params["params"].items()},
            "constraints": dict(self.params["constraints"]),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "param_groups": [list(g) for g in self.param_groups],
            "losses": list(self.losses),
            "grad_norms": list(self.grad_norms),
            "stopping": None if self.stopping is None else dict(self.stopping),
            "rng": rng_state(),
        }


def _batch_stream(batches: Iterable) -> Iterator:
    epoch = 0
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            if epoch:
                raise ValueError(
                    "SVI: `batches` was exhausted after one epoch; pass a re-iterable such as "
                    "a list or a DataLoader, not a generator"
                )
            raise ValueError("SVI: `batches` yielded no batch; pass a non-empty iterable")
        epoch += 1


def _split_batch(batch: Any, args: tuple, kwargs: Mapping[str, Any]) -> tuple[tuple, dict]:
    """A batch replaces the positional arguments (tuple/list/tensor) or updates the kwargs."""
    if isinstance(batch, Mapping):
        return args, {**kwargs, **batch}
    if isinstance(batch, (tuple, list)):
        return tuple(batch), dict(kwargs)
    return (batch,), dict(kwargs)


#: Optimizers built with ``fused=True`` unless the caller chose ``fused`` or ``foreach``.
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW)


def _fused_if_supported(
    optimizer: type[torch.optim.Optimizer], args: dict[str, Any], params: list
) -> torch.optim.Optimizer:
    """``optimizer(params, fused=True, **args)``, or unfused where torch has no fused kernel.

    The fused kernel updates all parameters in one call (the same algorithm; on a CPU a
    small model's Adam step is about 3x faster than the per-tensor loop torch uses there by
    default).
    """
    if not _fusable(params):
        return optimizer(params, **args)
    try:
        return optimizer(params, fused=True, **args)
    except (RuntimeError, ValueError):  # a torch build without the kernel
        return optimizer(params, **args)


def _fusable(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused Adam kernels accept these parameters (floating, CPU or CUDA)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


class SVI:
    """Stochastic variational inference with a pluggable loss and torch optimizer.

    Args:
        model: A Pyro model.
        guide: A Pyro guide (a function or an autoguide) over the model's latent sites.
        loss: Anything with Pyro's ELBO interface: ``differentiable_loss(model, guide, *args,
            **kwargs)`` (preferred) or ``loss_and_grads``; or a plain callable with the same
            signature returning a differentiable scalar. Default: ``pyro.infer.Trace_ELBO()``.
        optimizer: A ``torch.optim.Optimizer`` subclass, a callable ``params -> optimizer``,
            or a ``pyro.optim`` wrapper such as ``pyro.optim.Adam({"lr": 0.01})``.
        optim_args: Keyword arguments for an optimizer class (default ``{"lr": 0.01}``).
            ``torch.optim.Adam`` and ``AdamW`` are built with ``fused=True`` where torch has
            a fused kernel for the parameters' device and dtype, unless ``optim_args`` sets
            ``fused`` or ``foreach``.
        lr_scheduler: Optional callable ``optimizer -> torch.optim.lr_scheduler`` stepped once
            per gradient step.
        clip_norm: Clip the global gradient norm to this value.
        early_stopping: An :class:`EarlyStopping` rule, or ``None``.
        checkpoint: Path of a checkpoint file written every ``checkpoint_every`` steps and at
            the end; with ``run(..., resume=True)`` a fit continues from it.
        checkpoint_every: Steps between checkpoints.
        progress_bar: Show a progress bar; ``None`` shows one on a terminal.
        validate: Check the model and guide before fitting (latent sites, guide coverage,
            observed shapes).
        name: Engine name recorded in results and checkpoints.

    Example:
        >>> svi = SVI(model, AutoNormal(model), loss=pyro.infer.Trace_ELBO())  # doctest: +SKIP
        >>> result = svi.run(x, y, num_steps=2000)  # doctest: +SKIP
        >>> result.get_samples()["w"].shape  # doctest: +SKIP
        torch.Size([1000, 30])
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        loss: Any = None,
        optimizer: Any = torch.optim.Adam,
        optim_args: Mapping[str, Any] | None = None,
        lr_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        clip_norm: float | None = None,
        early_stopping: EarlyStopping | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 100,
        progress_bar: bool | None = None,
        validate: bool = True,
        name: str = ENGINE,
    ) -> None:
        self.model = model
        self.guide = guide
        self.loss = pyro.infer.Trace_ELBO() if loss is None else loss
        if not (
            hasattr(self.loss, "differentiable_loss")
            or hasattr(self.loss, "loss_and_grads")
            or callable(self.loss)
        ):
            raise TypeError(
                f"SVI: loss {self.loss!r} has neither differentiable_loss nor loss_and_grads "
                "and is not callable; pass e.g. pyro.infer.Trace_ELBO()"
            )
        self._optimizer_factory = self._resolve_optimizer(optimizer, optim_args)
        self.lr_scheduler = lr_scheduler
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"SVI: clip_norm must be positive, got {clip_norm}")
        self.clip_norm = clip_norm
        self.early_stopping = early_stopping
        if checkpoint_every < 1:
            raise ValueError(f"SVI: checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every = checkpoint_every
        self.progress_bar = progress_bar
        self.validate = validate
        self.name = name

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _resolve_optimizer(optimizer: Any, optim_args: Mapping[str, Any] | None) -> Callable:
        if isinstance(optimizer, pyro.optim.PyroOptim):
            if isinstance(optimizer, pyro.optim.lr_scheduler.PyroLRScheduler):
                raise ValueError(
                    "SVI: pyro.optim scheduler wrappers are not supported; pass the torch "
                    "optimizer as optimizer= and the schedule as lr_scheduler=lambda opt: "
                    "torch.optim.lr_scheduler.ExponentialLR(opt, gamma)"
                )
            if optimizer.pt_clip_args:
                raise ValueError(
                    "SVI: the clip_args of a pyro.optim wrapper are not supported; use "
                    "SVI(..., clip_norm=...) to clip the global gradient norm"
                )
            args = optimizer.pt_optim_args
            if callable(args):
                raise ValueError(
                    "SVI: pyro.optim wrappers with per-parameter argument functions are not "
                    "supported; pass a torch optimizer class and optim_args instead"
                )
            return lambda params: optimizer.pt_optim_constructor(params, **args)
        if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
            args = {"lr": 0.01} if optim_args is None else dict(optim_args)
            if optimizer in _FUSABLE and not {"fused", "foreach"} & set(args):
                return functools.partial(_fused_if_supported, optimizer, args)
            return lambda params: optimizer(params, **args)
        if callable(optimizer):
            if optim_args:
                raise ValueError("SVI: optim_args is only used with an optimizer class")
            return optimizer
        raise TypeError(
            f"SVI: optimizer must be a torch.optim.Optimizer class, a callable params -> "
            f"optimizer, or a pyro.optim wrapper; got {optimizer!r}"
        )

    @contextmanager
    def params_scope(self, state: SVIState) -> Iterator[dict]:
        """Make ``state``'s parameters the active Pyro param store inside the block.

        Use it to call the fitted guide yourself, e.g. ``with svi.params_scope(state):
        guide(x)``.
        """
        with pyro.get_param_store().scope(state.params) as params:
            yield params

    def init(self, *args: Any, **kwargs: Any) -> SVIState:
        """Create the parameters (one trace of guide and model) and the optimizer.

        Raises:
            ModelError: The model has no latent sites, the guide misses or adds sites, or an
                observed site's data has the wrong shape.
        """
        params: dict[str, dict] = {"params": {}, "constraints": {}}
        with pyro.get_param_store().scope(params):
            guide_trace = trace_or_explain(self.guide, "guide", *args, **kwargs)
            model_trace = trace_or_explain(
                poutine.replay(self.model, trace=guide_trace), "model", *args, **kwargs
            )
        if self.validate:
            check_model(model_trace, self.name)
            check_guide(model_trace, guide_trace, self.name)
        names = sorted(params["params"])
        optimizer = self._optimizer_factory([params["params"][n] for n in names])
        scheduler = None if self.lr_scheduler is None else self.lr_scheduler(optimizer)
        return SVIState(
            step=0,
            params=params,
            optimizer=optimizer,
            scheduler=scheduler,
            param_groups=[names],
            stopping=None if self.early_stopping is None else self.early_stopping.init(),
        )

    # ------------------------------------------------------------------ one step
    def _add_new_params(self, state: SVIState) -> None:
        known = {n for group in state.param_groups for n in group}
        new = sorted(set(state.params["params"]) - known)
        if new:
            group = {"params": [state.params["params"][n] for n in new]}
            if state.optimizer.defaults.get("fused") and not _fusable(group["params"]):
                group["fused"] = False
            state.optimizer.add_param_group(group)
            state.param_groups.append(new)

    def _loss_and_backward(self, args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor:
        if hasattr(self.loss, "differentiable_loss"):
            loss = self.loss.differentiable_loss(self.model, self.guide, *args, **kwargs)
        elif hasattr(self.loss, "loss_and_grads"):
            value = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
            return torch.as_tensor(value)
        else:
            loss = self.loss(self.model, self.guide, *args, **kwargs)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"SVI: the loss must return a scalar tensor, got {loss!r}")
        if loss.requires_grad:
            loss.backward()
        return loss.detach()

    def _step(self, state: SVIState, args: tuple, kwargs: Mapping[str, Any]) -> float:
        """One gradient step; must run inside :meth:`params_scope`."""
        state.optimizer.zero_grad(set_to_none=True)
        loss = self._loss_and_backward(args, kwargs)
        live = pyro.get_param_store()
        if len(live) != sum(len(g) for g in state.param_groups):
            # Parameters created during this step: the scope writes them back only on exit.
            state.params["params"].update(live._params)
            state.params["constraints"].update(live._constraints)
            self._add_new_params(state)
        grads = [
            p.grad
            for group in state.optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        grad_norm = (
            torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            if grads
            else loss.new_zeros(())
        )
        loss_value, norm_value = torch.stack([loss.to(grad_norm), grad_norm]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            self._raise_non_finite(state, loss_value, norm_value, args, kwargs)
        if self.clip_norm is not None and norm_value > self.clip_norm:
            torch._foreach_mul_(grads, self.clip_norm / norm_value)
        state.optimizer.step()
        if state.scheduler is not None:
            state.scheduler.step()
        state.step += 1
        state.losses.append(loss_value)
        state.grad_norms.append(norm_value)
        return loss_value

    def step(self, state: SVIState, *args: Any, **kwargs: Any) -> SVIState:
        """Take one gradient step on ``state`` (updated in place and returned)."""
        with self.params_scope(state):
            self._step(state, args, kwargs)
        return state

    # ------------------------------------------------------------------ NaN guard
    def _raise_non_finite(
        self, state: SVIState, loss: float, grad_norm: float, args: tuple, kwargs: Mapping
    ) -> None:
        site, detail = self._find_non_finite(state, args, kwargs)
        what = f"loss = {loss}" if not math.isfinite(loss) else f"gradient norm = {grad_norm}"
        message = (
            f"{self.name}: non-finite {what} at step {state.step}. {detail} The parameters "
            "before this step are kept in the exception's .state (and in the last checkpoint). "
            "Try a smaller learning rate, clip_norm=..., or a guide initialised closer to the "
            "prior (e.g. AutoNormal(model, init_scale=0.01))."
        )
        raise NonFiniteLossError(message, site, state.step, state)

    def _find_non_finite(
        self, state: SVIState, args: tuple, kwargs: Mapping
    ) -> tuple[str | None, str]:
        """Locate the first parameter, guide site or model site with a non-finite value."""
        for name, value in state.params["params"].items():
            if not torch.isfinite(value).all():
                return name, f"Parameter {name!r} holds non-finite values."
        bad_grads = [
            name
            for name, value in state.params["params"].items()
            if value.grad is not None and not torch.isfinite(value.grad).all()
        ]
        with torch.no_grad():
            guide_trace = poutine.trace(self.guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
            for role, trace in (("guide", guide_trace), ("model", model_trace)):
                for name, site in sample_sites(trace).items():
                    if role == "model" and name in guide_trace.nodes and not site["is_observed"]:
                        value_ok = True
                    else:
                        value_ok = bool(torch.isfinite(site["value"]).all())
                    if not value_ok:
                        return name, f"Sample site {name!r} in the {role} drew a non-finite value."
                    log_prob = site["fn"].log_prob(site["value"])
                    if not torch.isfinite(log_prob).all():
                        low, high = float(site["value"].min()), float(site["value"].max())
                        return name, (
                            f"Sample site {name!r} in the {role} has a non-finite log-density "
                            f"under {type(site['fn']).__name__} (values in [{low:.4g}, "
                            f"{high:.4g}])."
                        )
        if bad_grads:
            return bad_grads[0], f"Parameter(s) {bad_grads} have non-finite gradients."
        return None, (
            "No single site had a non-finite value or log-density on a fresh draw, so the "
            "overflow is in the gradient or happens only for rare draws."
        )

    # ------------------------------------------------------------------ checkpoints
    def save(self, state: SVIState, path: str | Path) -> None:
        """Write ``state`` (and the random-number state) to ``path`` atomically."""
        save_checkpoint(path, self.name, state.state_dict())

    def load(self, path: str | Path, *args: Any, **kwargs: Any) -> SVIState:
        """Rebuild the state saved at ``path`` (args as for :meth:`init`, to create the params).

        Restores parameters, optimizer and scheduler state, curves and the random-number
        state, so that continuing gives the same result as a run that was never interrupted.
        """
        payload = load_checkpoint(path, self.name)
        state = self.init(*args, **kwargs)
        live = state.params["params"]
        for name, value in payload["params"].items():
            if name in live:
                with torch.no_grad():
                    live[name].copy_(value)
            else:
                live[name] = value.clone().requires_grad_(True)
                state.params["constraints"][name] = payload["constraints"][name]
        state.param_groups = [list(g) for g in payload["param_groups"]]
        state.optimizer = self._optimizer_factory([live[n] for n in state.param_groups[0]])
        for group in state.param_groups[1:]:
            state.optimizer.add_param_group({"params": [live[n] for n in group]})
        # A scheduler's constructor rewrites the learning rates: build it before restoring.
        state.scheduler = None if self.lr_scheduler is None else self.lr_scheduler(state.optimizer)
        state.optimizer.load_state_dict(payload["optimizer"])
        if state.scheduler is not None and payload["scheduler"] is not None:
            state.scheduler.load_state_dict(payload["scheduler"])
        state.step = payload["step"]
        state.losses = list(payload["losses"])
        state.grad_norms = list(payload["grad_norms"])
        state.stopping = payload["stopping"]
        set_rng_state(payload["rng"])
        return state

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        *args: Any,
        num_steps: int = 1000,
        num_samples: int = 1000,
        batches: Iterable | None = None,
        resume: bool = False,
        state: SVIState | None = None,
        **kwargs: Any,
    ) -> Result:
        """Fit the guide, then draw from it.

        Args:
            *args: Arguments of model and guide (the full data; also used for the final draws).
            num_steps: Total number of gradient steps (a resumed fit counts the earlier ones).
            num_samples: Draws from the fitted guide in the result.
            batches: Optional iterable of minibatches, cycled over epochs. A tuple batch
                replaces ``args`` for that step; a dict batch updates ``kwargs``. A resumed
                fit skips the batches already used.
            resume: Continue from ``checkpoint`` if that file exists.
            state: Continue from this state instead of initialising.
            **kwargs: Keyword arguments of model and guide.

        Returns:
            A :class:`~pplx.inference.Result` with one chain of ``num_samples`` guide draws,
            ``sample_stats`` ``lp`` and ``log_weight``, ``trace`` ``loss`` and ``grad_norm``,
            and the final :class:`SVIState` in ``state``.
        """
        if num_steps < 0:
            raise ValueError(f"{self.name}: num_steps must be >= 0, got {num_steps}")
        if num_samples < 1:
            raise ValueError(f"{self.name}: num_samples must be >= 1, got {num_samples}")
        if self.checkpoint is not None:
            check_writable(self.checkpoint)
        stream = None if batches is None else _batch_stream(batches)
        first = (args, kwargs)
        if stream is not None:
            first_batch = next(stream)
            stream = _prepend(first_batch, stream)
            if not args:
                first = _split_batch(first_batch, args, kwargs)
        if state is None:
            if resume and self.checkpoint is not None and self.checkpoint.exists():
                state = self.load(self.checkpoint, *first[0], **first[1])
            else:
                state = self.init(*first[0], **first[1])
        if stream is not None:
            for _ in range(state.step):
                next(stream)

        if self.early_stopping is not None and state.stopping is None:
            state.stopping = self.early_stopping.init()
        state.stopped_early = False

        def advance(state: SVIState) -> tuple[dict[str, str], bool]:
            step_args, step_kwargs = (
                (args, kwargs) if stream is None else _split_batch(next(stream), args, kwargs)
            )
            loss = self._step(state, step_args, step_kwargs)
            stop = self.early_stopping is not None and self.early_stopping.update(
                state.stopping, loss, state.step
            )
            state.stopped_early = stop
            return {"loss": f"{loss:.4g}"}, stop

        with self.params_scope(state):
            wall_time = run_steps(
                state,
                num_steps,
                advance,
                name=self.name,
                progress=self.progress_bar,
                checkpoint=self.checkpoint,
                checkpoint_every=self.checkpoint_every,
                save=self.save,
            )
        return self.posterior(
            state, *first[0], num_samples=num_samples, wall_time=wall_time, **first[1]
        )

    def posterior(
        self,
        state: SVIState,
        *args: Any,
        num_samples: int = 1000,
        wall_time: float = math.nan,
        **kwargs: Any,
    ) -> Result:
        """Draw ``num_samples`` latent values from the fitted guide as a Result.

        See :meth:`Result.from_guide`; the result also carries the loss curve and ``state``.
        """
        with self.params_scope(state):
            result = Result.from_guide(
                self.name, self.model, self.guide, *args, num_samples=num_samples, **kwargs
            )
        tail = state.losses[-max(1, len(state.losses) // 10) :] if state.losses else [math.nan]
        result.trace = {
            "loss": torch.tensor(state.losses, dtype=torch.float64),
            "grad_norm": torch.tensor(state.grad_norms, dtype=torch.float64),
        }
        result.wall_time = wall_time
        result.state = state
        result.info = {
            "num_steps": state.step,
            "final_loss": sum(tail) / len(tail),
            "stopped_early": state.stopped_early,
            "loss": type(self.loss).__name__,
            "guide": getattr(self.guide, "__name__", type(self.guide).__name__),
            "optimizer": type(state.optimizer).__name__,
        }
        return result


def _prepend(item: Any, stream: Iterator) -> Iterator:
    yield item
    yield from stream
