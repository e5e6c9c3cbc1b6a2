r"""Fractional SDEs as a Pyro model (prior) and guide (controlled posterior).

An SDE driven by the Markov approximation of fractional Brownian motion
(:mod:`pplx.processes.fbm`; Daems et al., ICLR 2024) is a Markov SDE on the augmented state
:math:`Z = (X, Y_1, \dots, Y_K)`, driven by **one** Brownian motion :math:`W` per state
dimension:

.. math::

    dY_k = -\gamma_k Y_k\, dt + dW, \qquad
    dX = b(X, t)\, dt + s(X, t) \sum_k \omega_k\, dY_k
       = \Big(b(X, t) - s(X, t) \sum_k \omega_k \gamma_k Y_k\Big) dt
         + s(X, t) \Big(\sum_k \omega_k\Big) dW,

with the weights :math:`\omega = \omega(H)` of :func:`~pplx.processes.fbm.fbm_weights`
(differentiable in the Hurst index :math:`H`). The **prior** (:meth:`FractionalSDE.model`)
discretises it with Euler-Maruyama on the uniform grid :math:`t_n = n \Delta t`,
:math:`n = 0, \dots, N`: the sample sites are the initial state ``"x0"`` (and, for type I,
the stationary start ``"y0"``) and the Brownian increments, one vectorised site ``"dW"``
of event shape ``(N, d)`` with :math:`\Delta W_n \sim \mathcal N(0, \Delta t\, I)` iid;
the path is a deterministic function of them. Observations
:math:`y_i \sim \mathcal N(X(\tau_i), \sigma_{\text{obs}}^2)` at arbitrary times
:math:`\tau_i \in [0, T]` use the path linearly interpolated between grid points (site
``"obs"``).

The **posterior** (:meth:`FractionalSDE.guide`) runs the same recursion with a control
:math:`u` added to the driving noise,
:math:`\Delta W_n \sim \mathcal N(u(t_n, X_n, Y_n, c)\, \Delta t,\ s_n^2 \Delta t\, I)`,
where :math:`u` is a network (:class:`ControlNet`, zero at initialisation so that the guide
starts at the prior) that may also see a context :math:`c` (amortisation), :math:`s_n > 0`
are learned per-step increment scales (initialised to 1; ``increment_scale=False`` fixes
them), and the initial state has its own Gaussian :math:`q(x_0)` and, for type I, a Gaussian
:math:`q(Y_0 \mid x_0)` (:meth:`FractionalSDE.posterior_y0`, equal to the stationary prior
at initialisation). Since :math:`u_n` depends on
the path so far, the increments are one site ``"dW"`` whose distribution
(:class:`ControlledIncrements`) is autoregressive: sampling draws all the standard noise at
once and runs the recursion; the density re-runs it on given increments. The KL divergence
of each step given the state is, per dimension,

.. math::

    \mathrm{KL}\big(\mathcal N(u \Delta t, s^2 \Delta t) \,\|\, \mathcal N(0, \Delta t)\big)
    = \tfrac12 u^2 \Delta t + \tfrac12 (s^2 - 1) - \log s,

and with :math:`s_n = 1`, summed over the steps, this is the Euler discretisation of the
Girsanov term :math:`\mathbb E \int_0^T \frac12 \|u\|^2 dt`. The ELBO of this model/guide
pair (:class:`pplx.objectives.ELBO` or :class:`pyro.infer.Trace_ELBO`) is therefore the
objective of Daems et al.,
:math:`\mathbb E_q[\log p(y \mid X)] - \mathrm{KL}(q(x_0) \| p(x_0))
- \mathbb E_q[\mathrm{KL}(q(Y_0 \mid x_0) \| p(Y_0))] - \mathbb E_q\big[
\sum_n \frac12 \|u_n\|^2 \Delta t\big]` (no :math:`Y_0` term for type II), estimated per
sample by
:math:`\sum_n (u_n \cdot \Delta W_n - \frac12 \|u_n\|^2 \Delta t)`, plus the scales'
terms. The scales are a discrete-time correction: in continuous time a change of diffusion
makes the path measures singular (the term :math:`\frac12 (s^2 - 1) - \log s` per step
does not shrink with :math:`\Delta t`), so the optimum keeps :math:`s_n \approx 1` except
on the few steps before a precise observation, where the exact posterior of the discretised
model shrinks the increments' variance (to :math:`\Delta t (1 - h_n^2 \Delta t / v_n)` for a
linear Gaussian bridge) and the fixed variance :math:`\Delta t` would floor the posterior
variance there.

With :math:`H = 1/2`, :math:`K = 1` and a slow speed :math:`\gamma_1 \to 0` (e.g.
``gammas=[1e-6]``) the weight is :math:`\omega_1 = 1` and the prior is the ordinary
Brownian-driven SDE :math:`dX = b\, dt + s\, dW`.

Reference:
    K. Daems, M. Opper, G. Crevecoeur and T. Birdal, "Variational Inference for SDEs Driven by
    Fractional Noise", ICLR 2024 (section 4 of ``PAPERS.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints

from pplx.processes.fbm import (
    DEFAULT_GAMMA_MAX,
    DEFAULT_NUM_PROCESSES,
    _check_gammas,
    _check_hurst,
    _check_kind,
    _check_positive,
    fbm_weights_jet,
    geometric_gammas,
)

__all__ = [
    "ControlNet",
    "ControlledIncrements",
    "FractionalSDE",
    "LinearControl",
    "SDEPath",
    "euler_linear_moments",
    "gaussian_condition",
]

Drift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SDEPath(NamedTuple):
    r"""A simulated path on the grid, returned by the model and the guide.

    Attributes:
        times: Grid times :math:`t_0 = 0, \dots, t_N = T`, shape ``(N + 1,)``.
        x: States :math:`X_n`, shape ``(*batch, N + 1, d)``.
        y: Ornstein-Uhlenbeck states :math:`Y_n`, shape ``(*batch, N + 1, d, K)``.
        control: Controls :math:`u_n` of the guide, shape ``(*batch, N, d)`` (zeros for the
            prior).
        kl: Per-step Girsanov terms :math:`\frac12 \|u_n\|^2 \Delta t`, shape
            ``(*batch, N)``.
    """

    times: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    control: torch.Tensor
    kl: torch.Tensor


def _stack_states(
    states: list[torch.Tensor], event_dims: int, batch: torch.Size | tuple = ()
) -> torch.Tensor:
    """Stack per-step states along a new time axis left of their ``event_dims`` dimensions.

    The states' batch shapes (and ``batch``) are broadcast first: an initial state without a
    batch can start a path whose later states have one.
    """
    batch = torch.broadcast_shapes(batch, *(v.shape[: v.dim() - event_dims] for v in states))
    return torch.stack(
        [v.expand(*batch, *v.shape[v.dim() - event_dims :]) for v in states], -1 - event_dims
    )


class ControlNet(nn.Module):
    r"""Default control :math:`u(t, X, Y, c)` of the guide: an MLP plus a linear feedback.

    Both terms are zero at initialisation.

    With :math:`\tau = t / T`, time features
    :math:`\phi(\tau) = (\tau, \sin \pi j \tau, \cos \pi j \tau)_{j = 1..m}` and
    :math:`z = (X, Y_{1..K})`,

    .. math::

        u = \mathrm{MLP}(\phi(\tau), z, c)
            + \big(G\, \phi_1(\tau)\big) \begin{pmatrix} 1 \\ z \end{pmatrix},
        \qquad \phi_1 = (1, \phi),

    where :math:`G \phi_1(\tau)` is reshaped to a :math:`d \times (1 + d(1 + K))` gain
    matrix: an affine feedback on the state whose coefficients vary smoothly in time (the
    form of the exact control of a linear Gaussian bridge, whose gain grows towards an
    observation). Learning such a product through the MLP alone is slow. The MLP's last layer
    and :math:`G` start at zero, so :math:`u \equiv 0` and the guide equals the prior at
    initialisation. It accepts a vector of times (``time_batched``), so
    :class:`ControlledIncrements` evaluates it along a whole given path in one call.

    Args:
        state_dim: :math:`d`.
        num_processes: :math:`K`.
        context_dim: Size of the context vector (0: no context).
        hidden_dim: Width of the hidden layers.
        num_layers: Number of hidden layers (>= 1).
        horizon: :math:`T`, to scale the time input to :math:`[0, 1]`.
        time_features: Number :math:`m` of Fourier frequencies (0: the time input is
            :math:`\tau` alone).
        linear_feedback: Add the time-varying affine feedback term.
    """

    time_batched = True

    def __init__(
        self,
        state_dim: int,
        num_processes: int,
        context_dim: int = 0,
        hidden_dim: int = 64,
        num_layers: int = 2,
        horizon: float = 1.0,
        time_features: int = 4,
        linear_feedback: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if time_features < 0:
            raise ValueError(f"time_features must be >= 0, got {time_features}")
        self.context_dim = context_dim
        self.state_dim = state_dim
        self.horizon = float(horizon)
        self.register_buffer(
            "frequencies", math.pi * torch.arange(1, time_features + 1, dtype=torch.float32)
        )
        num_time = 1 + 2 * time_features
        self.num_state = state_dim * (1 + num_processes)
        in_dim = num_time + self.num_state + context_dim
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden_dim, state_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.gain = None
        if linear_feedback:
            self.gain = nn.Linear(num_time, state_dim * (1 + self.num_state))
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.gain.bias)

    def time_features(self, tau: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi(\tau)`, shape ``(*tau.shape, 1 + 2 m)``."""
        if self.frequencies.numel() == 0:
            return tau.unsqueeze(-1)
        angles = tau.unsqueeze(-1) * self.frequencies.to(tau.dtype)
        return torch.cat([tau.unsqueeze(-1), angles.sin(), angles.cos()], -1)

    def forward(
        self,
        t: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Control of shape ``(*batch, d)`` for ``x`` ``(*batch, d)``, ``y`` ``(*batch, d, K)``.

        With a 1-D ``t`` of :math:`N` times, ``x`` and ``y`` carry a time axis at dim ``-2``
        (resp. ``-3``) and the context is broadcast along it (evaluation along a whole path).
        """
        batch = x.shape[:-1]
        phi = self.time_features(torch.as_tensor(t, dtype=x.dtype) / self.horizon)
        if phi.dim() > 1 and context is not None:  # time axis
            context = context.unsqueeze(-2)
        z = torch.cat([x, y.flatten(-2)], -1)
        feats = [phi.expand(*batch, phi.shape[-1]), z]
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"this control network expects a context of size {self.context_dim}"
                )
            feats.append(context.expand(*batch, self.context_dim))
        u = self.head(self.body(torch.cat(feats, -1)))
        if self.gain is not None:
            gain = self.gain(phi).unflatten(-1, (self.state_dim, 1 + self.num_state))
            u = u + gain[..., 0] + (gain[..., 1:] @ z.unsqueeze(-1)).squeeze(-1)
        return u


class LinearControl(nn.Module):
    r"""A per-step affine control :math:`u_n = a_n + B_n\, (X_n, Y_{1..K, n})`.

    For a linear drift and constant diffusion the prior is linear Gaussian, and the exact
    posterior of its increments given :math:`Z_n = (X_n, Y_n)` has a mean affine in
    :math:`Z_n`; this family therefore contains (up to the :math:`O(\Delta t)` variance of
    the step) the optimal control. Each step has its own parameters, so their gradients are
    noisier than a shared network's; in our runs :class:`ControlNet` fitted faster. The
    parameters start at zero (guide = prior).

    Args:
        state_dim: :math:`d`.
        num_processes: :math:`K`.
        num_steps: :math:`N`.
        horizon: :math:`T` (to find the step index :math:`n = t / \Delta t`).
    """

    def __init__(self, state_dim: int, num_processes: int, num_steps: int, horizon: float):
        super().__init__()
        self.num_steps = num_steps
        self.dt = float(horizon) / num_steps
        features = state_dim * (1 + num_processes)
        self.offset = nn.Parameter(torch.zeros(num_steps, state_dim))
        self.gain = nn.Parameter(torch.zeros(num_steps, state_dim, features))

    time_batched = True

    def forward(self, t, x, y, context=None):  # noqa: D102
        z = torch.cat([x, y.flatten(-2)], -1)
        if t.dim() > 0:  # a time axis at dim -2 of x (see ControlNet)
            n = (t / self.dt).round().long().clamp(max=self.num_steps - 1)
        else:
            n = min(int(round(float(t) / self.dt)), self.num_steps - 1)
        return self.offset[n] + (self.gain[n] @ z.unsqueeze(-1)).squeeze(-1)


def _as_tensor_fn(fn, name: str):
    if isinstance(fn, (int, float)) and not isinstance(fn, bool):
        value = float(fn)
        return lambda x, t: x.new_tensor(value)
    if not callable(fn):
        raise TypeError(f"{name} must be a callable f(x, t) (or an nn.Module), got {fn!r}")
    return fn


class FractionalSDE(nn.Module):
    r"""A fractional SDE prior with observations, and its controlled posterior, for Pyro.

    See the module documentation for the equations. ``model`` and ``guide`` take the same
    arguments ``(obs_times, obs_values, context)`` and can be passed to
    :class:`pyro.infer.SVI` with :class:`pplx.objectives.ELBO` (or
    :class:`pyro.infer.Trace_ELBO`); both call ``pyro.module(name, self)``, so every
    parameter (drift and diffusion modules, control network, :math:`q(x_0)`,
    :math:`q(Y_0 \mid x_0)`, the Hurst index) is trained. Call ``pyro.clear_param_store()``
    before building a second instance with the same ``name``.

    Args:
        drift: :math:`b(x, t)`, mapping ``x`` of shape ``(*batch, d)`` and a 0-dimensional
            time to ``(*batch, d)``; a callable or an :class:`~torch.nn.Module` (whose
            parameters are then learned).
        diffusion: :math:`s(x, t)` (diagonal), returning ``(*batch, d)`` or anything that
            broadcasts to it; a callable, a module, or a constant.
        state_dim: :math:`d`.
        horizon: :math:`T`; the grid is :math:`n T / \text{num\_steps}`.
        num_steps: Number of Euler-Maruyama steps :math:`N`.
        hurst: Initial (or fixed) Hurst index :math:`H \in (0, 1)`.
        learn_hurst: Learn :math:`H` (parameterised as :math:`\operatorname{sigmoid}` of an
            unconstrained parameter, so it stays in :math:`(0, 1)`).
        num_processes: :math:`K \ge 1` when ``gammas`` is not given.
        gammas: Speeds, shape ``(K,)`` (default :func:`~pplx.processes.fbm.geometric_gammas`
            ``(num_processes, gamma_max, gamma_min)``).
        gamma_max: Fastest speed of the default grid; needs
            :math:`\gamma_{\max} \Delta t < 0.5`.
        gamma_min: Slowest speed of the default grid (default ``1 / gamma_max``).
        kind: ``"I"`` (stationary start, approximates standard fBM) or ``"II"`` (zero start,
            Riemann-Liouville fBM).
        x0_loc: Prior mean of :math:`X_0` (float or shape ``(d,)``).
        x0_scale: Prior standard deviation of :math:`X_0`.
        obs_scale: Observation noise :math:`\sigma_{\text{obs}}`.
        control: The guide's control :math:`u(t, x, y, \text{context})` (default a
            :class:`ControlNet`).
        context_dim: Context size of the default control network.
        hidden_dim: Width of the default control network.
        increment_scale: Learn a per-step, per-dimension scale :math:`s_n > 0` of the
            guide's increments, :math:`\Delta W_n \sim \mathcal N(u_n \Delta t, s_n^2
            \Delta t)` (initialised to 1, so the guide starts at the prior); ``False`` fixes
            :math:`s_n = 1` (the pure Girsanov guide).
        learn_y0: Type I only: give the guide a learned Gaussian
            :math:`q(Y_0 \mid x_0)` (:meth:`posterior_y0`, initialised to the stationary
            prior, so the guide starts at the prior); ``False`` keeps the prior
            :math:`p(Y_0)` in the guide. Ignored for type II (:math:`Y_0 = 0`, no site).
        name: Pyro module name.
        dtype: Floating dtype of the parameters (default: torch's default); move the module
            with ``.to(device)``.

    Raises:
        ValueError: If :math:`H \notin (0, 1)`, :math:`K < 1`, the speeds are invalid,
            :math:`\gamma_{\max} \Delta t \ge 0.5`, or a size is not positive.
    """

    def __init__(
        self,
        drift: Drift | nn.Module,
        diffusion: Drift | nn.Module | float,
        *,
        state_dim: int = 1,
        horizon: float = 1.0,
        num_steps: int = 100,
        hurst: float = 0.5,
        learn_hurst: bool = True,
        num_processes: int = DEFAULT_NUM_PROCESSES,
        gammas: torch.Tensor | Sequence[float] | None = None,
        gamma_max: float = DEFAULT_GAMMA_MAX,
        gamma_min: float | None = None,
        kind: str = "I",
        x0_loc: float | torch.Tensor = 0.0,
        x0_scale: float = 1.0,
        obs_scale: float = 0.1,
        control: Callable | nn.Module | None = None,
        context_dim: int = 0,
        hidden_dim: int = 64,
        increment_scale: bool = True,
        learn_y0: bool = True,
        name: str = "fractional_sde",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if isinstance(state_dim, bool) or not isinstance(state_dim, int) or state_dim < 1:
            raise ValueError(f"state_dim must be an int >= 1, got {state_dim!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        self.kind = _check_kind(kind)
        self.horizon = _check_positive(horizon, "horizon")
        self.num_steps = num_steps
        self.state_dim = state_dim
        self.dt = self.horizon / num_steps
        self.name = name
        h = float(_check_hurst(hurst))
        raw = torch.tensor(math.log(h / (1.0 - h)), dtype=dtype)
        if learn_hurst:
            self.raw_hurst = nn.Parameter(raw)
        else:
            self.register_buffer("raw_hurst", raw)
        if gammas is None:
            gammas = geometric_gammas(num_processes, gamma_max, gamma_min, dtype=torch.float64)
        gammas = _check_gammas(gammas).detach().to(torch.float64)
        worst = float(gammas.max()) * self.dt
        if worst >= 0.5:
            needed = math.ceil(2.0 * float(gammas.max()) * self.horizon)
            raise ValueError(
                f"gamma_max * dt = {worst:.3g} >= 0.5: the Euler-Maruyama step of the fastest "
                f"Ornstein-Uhlenbeck process (gamma_max = {float(gammas.max()):.3g}) is "
                f"unstable or inaccurate. Use more than {needed} steps on [0, {self.horizon:.3g}] "
                f"or a smaller gamma_max"
            )
        self.register_buffer("gammas", gammas.to(dtype))
        self.register_buffer(
            "times", torch.linspace(0.0, self.horizon, num_steps + 1, dtype=dtype)
        )
        self.drift = _as_tensor_fn(drift, "drift")
        self.diffusion = _as_tensor_fn(diffusion, "diffusion")
        x0_loc = torch.as_tensor(x0_loc, dtype=dtype).expand(state_dim).clone()
        self.register_buffer("x0_loc", x0_loc)
        self.x0_scale = _check_positive(x0_scale, "x0_scale")
        self.obs_scale = _check_positive(obs_scale, "obs_scale")
        # q(x0): starts at the prior
        self.q_x0_loc = nn.Parameter(x0_loc.clone())
        self.q_x0_raw_scale = nn.Parameter(
            torch.full((state_dim,), math.log(math.expm1(self.x0_scale)), dtype=dtype)
        )
        if control is None:
            control = ControlNet(
                state_dim, self.gammas.numel(), context_dim, hidden_dim, horizon=self.horizon
            ).to(dtype)
        elif not callable(control):
            raise TypeError(f"control must be a callable u(t, x, y, context), got {control!r}")
        self.control = control
        # per-step scales s_n = exp(log s_n) of the guide's increments; 1 (guide = prior) at init
        self.log_increment_scale = (
            nn.Parameter(torch.zeros(num_steps, state_dim, dtype=dtype))
            if increment_scale
            else None
        )
        # q(Y0 | x0) (type I) in the prior's whitened coordinates: Y0 = L0 (a + g xi0 + M eps)
        # with L0 L0^T the stationary covariance; a = 0, g = 0, M = I (guide = prior) at init
        self.learn_y0 = bool(learn_y0) and self.kind == "I"
        if self.learn_y0:
            k = self.gammas.numel()
            self.q_y0_white_loc = nn.Parameter(torch.zeros(state_dim, k, dtype=dtype))
            self.q_y0_x0_gain = nn.Parameter(torch.zeros(state_dim, k, dtype=dtype))
            self.q_y0_white_tril_raw = nn.Parameter(torch.zeros(state_dim, k, k, dtype=dtype))

    # -- parameters -----------------------------------------------------------------------
    @property
    def num_processes(self) -> int:
        """:math:`K`."""
        return self.gammas.numel()

    @property
    def hurst(self) -> torch.Tensor:
        r"""The Hurst index :math:`H = \operatorname{sigmoid}(\text{raw})` (differentiable)."""
        return torch.sigmoid(self.raw_hurst)

    def weights(self) -> torch.Tensor:
        r"""The weights :math:`\omega(H)` on :math:`[0, T]` (differentiable in :math:`H`).

        Computed once per value of :math:`H` (:func:`~pplx.processes.fbm.fbm_weights_jet`,
        cached on the module: the model, the guide and a replay of the guide in one ELBO step
        share it, and with a fixed :math:`H` every step does) and returned as
        :math:`\omega(H_0) + \omega'(H_0)\,(H - H_0)` evaluated at :math:`H = H_0`: the same
        value as :func:`~pplx.processes.fbm.fbm_weights` and the same gradient in :math:`H`,
        from a fresh two-node graph per call (no graph is shared between calls, so repeated
        backward passes are safe). Second derivatives in :math:`H` are not available (the
        returned expression is linear in :math:`H`).
        """
        hurst = self.hurst
        key = (float(self.raw_hurst.detach()), hurst.dtype, hurst.device, self.gammas.device)
        cached = self.__dict__.get("_weights_cache")
        if cached is None or cached[0] != key:
            w0, dw = fbm_weights_jet(hurst.detach(), self.gammas, self.horizon, self.kind)
            cached = self.__dict__["_weights_cache"] = (key, w0, dw)
        _, w0, dw = cached
        if hurst.requires_grad and torch.is_grad_enabled():
            return w0 + dw * (hurst - hurst.detach())
        return w0

    def stationary_covariance(self) -> torch.Tensor:
        r"""Covariance :math:`1 / (\gamma_i + \gamma_j)` of the type-I start :math:`Y(0)`."""
        return 1.0 / (self.gammas.unsqueeze(-1) + self.gammas)

    def stationary_scale_tril(self) -> torch.Tensor:
        r"""Cholesky factor :math:`L_0` of :meth:`stationary_covariance`, shape ``(K, K)``.

        Computed in float64 and cast to the module's dtype (cached per dtype and device); the
        prior :math:`p(Y_0) = \mathcal N(0, L_0 L_0^\top)` and :meth:`posterior_y0` share it.
        """
        key = (self.gammas.dtype, self.gammas.device)
        cache = self.__dict__.setdefault("_stationary_trils", {})
        if key not in cache:
            g = self.gammas.detach().to(torch.float64)
            tril = torch.linalg.cholesky(1.0 / (g.unsqueeze(-1) + g))
            cache[key] = tril.to(self.gammas.dtype)
        return cache[key]

    def prior_y0(self) -> dist.Distribution:
        r"""The type-I stationary start :math:`p(Y_0) = \mathcal N(0, L_0 L_0^\top)`.

        Independent over the :math:`d` state dimensions (event shape ``(d, K)``); the
        :math:`K` processes of one dimension share one Brownian motion and are correlated,
        :math:`\operatorname{Cov}(Y_{0,i}, Y_{0,j}) = 1 / (\gamma_i + \gamma_j)`.
        """
        tril = self.stationary_scale_tril()
        loc = tril.new_zeros(self.state_dim, self.num_processes)
        return dist.MultivariateNormal(loc, scale_tril=tril).to_event(1)

    def posterior_y0(self, x0_white: torch.Tensor | None = None) -> dist.Distribution:
        r"""The guide's Gaussian :math:`q(Y_0 \mid x_0)` of the type-I start.

        Per state dimension :math:`i`, in the whitened coordinates of the prior
        (:math:`Y_{0,i} = L_0 \eta_i`, :math:`\eta_i \sim \mathcal N(0, I_K)` under
        :math:`p`),

        .. math::

            q(Y_{0,i} \mid x_0) = \mathcal N\big(L_0 (a_i + g_i \xi_{0,i}),\
                L_0 M_i M_i^\top L_0^\top\big), \qquad
            \xi_0 = \frac{x_0 - m_q}{s_q},

        with learned :math:`a_i, g_i \in \mathbb R^K` and lower-triangular :math:`M_i` with
        positive diagonal (:math:`\exp` of a free parameter), so the scale
        :math:`L_0 M_i` is lower-triangular; :math:`\xi_0` is :math:`x_0` standardised
        under :math:`q(x_0) = \mathcal N(m_q, s_q^2)`, and the gain :math:`g_i` makes
        :math:`(x_{0,i}, Y_{0,i})` jointly Gaussian with any covariance (as in the exact
        posterior of a linear Gaussian bridge). At initialisation :math:`a = g = 0` and
        :math:`M = I`: :math:`q(Y_0 \mid x_0) = p(Y_0)` exactly, so
        :math:`\mathrm{KL}(q \| p) = 0` and the guide starts at the prior.

        Args:
            x0_white: :math:`\xi_0`, shape ``(*batch, d)``, or ``None`` to leave out the
                gain term (:math:`\xi_0 = 0`).

        Returns:
            A distribution of event shape ``(d, K)``.

        Raises:
            RuntimeError: If the SDE has no learned :math:`q(Y_0)` (type II or
                ``learn_y0=False``).
        """
        if not self.learn_y0:
            raise RuntimeError("this FractionalSDE has no q(Y0) (type II or learn_y0=False)")
        tril = self.stationary_scale_tril()
        raw = self.q_y0_white_tril_raw
        m = raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).exp())
        white = self.q_y0_white_loc
        if x0_white is not None:
            white = white + self.q_y0_x0_gain * x0_white.unsqueeze(-1)
        loc = white @ tril.T
        return dist.MultivariateNormal(loc, scale_tril=tril @ m).to_event(1)

    # -- observation times ----------------------------------------------------------------
    def _interpolation(self, obs_times) -> tuple[torch.Tensor, torch.Tensor]:
        """Left grid index and weight of the right neighbour for each observation time."""
        ref = self.times
        times = torch.as_tensor(obs_times, dtype=ref.dtype, device=ref.device)
        if times.dim() != 1 or times.numel() < 1:
            raise ValueError(
                f"obs_times must be a non-empty 1-D tensor, got shape {tuple(times.shape)}"
            )
        t = times.detach()
        tol = 1e-9 * self.horizon
        if (
            not bool(torch.isfinite(t).all())
            or bool((t < -tol).any())
            or bool((t > self.horizon + tol).any())
        ):
            bad = t[~((t >= -tol) & (t <= self.horizon + tol))].tolist()
            raise ValueError(
                f"observation times outside the grid [0, T] = [0, {self.horizon}]: {bad}; "
                f"the SDE is only simulated on [0, T] (increase horizon)"
            )
        pos = (t / self.dt).clamp(0.0, float(self.num_steps))
        left = pos.floor().long().clamp(max=self.num_steps - 1)
        frac = (pos - left.to(pos.dtype)).clamp(0.0, 1.0)
        return left, frac

    def _observe(self, x: torch.Tensor, obs_times, obs_values) -> None:
        left, frac = self._interpolation(obs_times)
        values = torch.as_tensor(obs_values, dtype=x.dtype, device=x.device)
        if values.dim() == 1 and self.state_dim == 1:
            values = values.unsqueeze(-1)
        if values.shape != (left.numel(), self.state_dim):
            raise ValueError(
                f"obs_values must have shape ({left.numel()}, {self.state_dim}) (one row per "
                f"observation time), got {tuple(values.shape)}"
            )
        frac = frac.unsqueeze(-1)
        x_obs = (1.0 - frac) * x[..., left, :] + frac * x[..., left + 1, :]
        pyro.sample("obs", dist.Normal(x_obs, self.obs_scale).to_event(2), obs=values)

    # -- the recursion --------------------------------------------------------------------
    def _simulate(self, x0, y0, increment) -> SDEPath:
        """Euler-Maruyama on (X, Y); ``increment(n, t, x, y)`` returns ``(dW_n, u_n)``.

        ``u_n`` may be ``None`` (no control: the path's controls and Girsanov terms are zero).
        """
        w = self.weights().to(x0.dtype)
        g = self.gammas.to(x0.dtype)
        wg, w_sum = w * g, w.sum()
        decay = 1.0 - g * self.dt
        dt = self.dt
        x, y = x0, y0
        xs, ys, us = [x], [y], []
        for n in range(self.num_steps):
            t = self.times[n]
            d_w, u = increment(n, t, x, y)
            s = self.diffusion(x, t)
            b = self.drift(x, t)
            x = x + (b - s * (y * wg).sum(-1)) * dt + s * w_sum * d_w
            y = y * decay + d_w.unsqueeze(-1)
            xs.append(x)
            ys.append(y)
            if u is not None:
                us.append(u)
        batch = torch.broadcast_shapes(*(v.shape[:-1] for v in xs))
        x_path = _stack_states(xs, 1, batch)
        y_path = _stack_states(ys, 2, batch)
        if us:
            u_path = _stack_states(us, 1, batch)
        else:
            u_path = x_path.new_zeros(*batch, self.num_steps, self.state_dim)
        kl = 0.5 * (u_path**2).sum(-1) * dt
        return SDEPath(self.times, x_path, y_path, u_path, kl)

    def path_from_increments(
        self, x0: torch.Tensor, y0: torch.Tensor, increments: torch.Tensor
    ) -> SDEPath:
        r"""The (uncontrolled) Euler path driven by given increments.

        The Ornstein-Uhlenbeck part is linear,
        :math:`Y_n = (1 - \gamma \Delta t)^n Y_0 + \sum_{m<n} (1 - \gamma
        \Delta t)^{n-1-m} \Delta W_m`, and is computed for all steps at once; only
        :math:`X` (through the drift and diffusion) needs the step-by-step loop.

        Args:
            x0: :math:`X_0`, shape ``(*batch, d)``.
            y0: :math:`Y_0`, shape ``(*batch, d, K)`` (or broadcastable).
            increments: :math:`\Delta W_{0:N}`, shape ``(*batch, N, d)``.

        Returns:
            The :class:`SDEPath` (zero controls and Girsanov terms).
        """
        dtype, dt, steps = x0.dtype, self.dt, self.num_steps
        w = self.weights().to(dtype)
        wg, w_sum = w * self.gammas.to(dtype), w.sum()
        increments = increments.to(dtype)
        kernel = self._ou_kernel(dtype, increments.device)
        if kernel is None:  # long grids: the O(N K) recursion instead of the O(N^2 K) kernel
            decay = 1.0 - self.gammas.to(dtype) * dt
            ys, y = [y0], y0
            for n in range(steps):
                y = y * decay + increments[..., n, :].unsqueeze(-1)
                ys.append(y)
            y_path = _stack_states(ys, 2)
        else:
            powers, conv = kernel  # (N + 1, K), (K, N + 1, N)
            y_path = powers.unsqueeze(-2) * y0.unsqueeze(-3)
            y_path = y_path + torch.einsum("knm,...md->...ndk", conv, increments)
        # X_{n+1} = X_n + b dt + s (sum_k w_k dW_n - sum_k w_k gamma_k Y_{n,k} dt)
        drive = w_sum * increments - (y_path[..., :-1, :, :] * wg).sum(-1) * dt
        x, xs = x0, [x0]
        for n in range(steps):
            t = self.times[n]
            x = x + self.drift(x, t) * dt + self.diffusion(x, t) * drive[..., n, :]
            xs.append(x)
        x_path = _stack_states(xs, 1, y_path.shape[:-3])
        batch = x_path.shape[:-2]
        y_path = y_path.expand(*batch, *y_path.shape[-3:])
        zeros = x_path.new_zeros(*batch, steps, self.state_dim)
        return SDEPath(self.times, x_path, y_path, zeros, zeros.sum(-1))

    def _ou_kernel(self, dtype, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(decay^n, decay^(n-1-m) [m < n])`` for the linear OU part (cached; None if large)."""
        steps, k = self.num_steps, self.num_processes
        if (steps + 1) * steps * k > 4_000_000:
            return None
        key = (dtype, device)
        cache = self.__dict__.setdefault("_ou_kernels", {})
        if key not in cache:
            decay = 1.0 - self.gammas.detach().to(torch.float64).cpu() * self.dt  # (K,)
            n = torch.arange(steps + 1, dtype=torch.float64)
            powers = decay ** n.unsqueeze(-1)  # (N + 1, K)
            lag = n.unsqueeze(-1) - 1.0 - n[:-1]  # (N + 1, N): n - 1 - m
            conv = torch.where(lag >= 0, decay[:, None, None] ** lag.clamp(min=0.0), 0.0)
            cache[key] = (
                powers.to(dtype=dtype, device=device),
                conv.to(dtype=dtype, device=device),
            )
        return cache[key]

    def _initial(
        self,
        x0_dist: dist.Distribution,
        y0_dist: Callable[[torch.Tensor], dist.Distribution] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``"x0"`` and (type I) ``"y0"`` from ``y0_dist(x0)`` (default the prior)."""
        x0 = pyro.sample("x0", x0_dist)
        if self.kind == "I":
            y0 = pyro.sample("y0", self.prior_y0() if y0_dist is None else y0_dist(x0))
        else:
            y0 = x0.new_zeros(self.state_dim, self.num_processes)
        return x0, y0

    # -- increment distributions ----------------------------------------------------------
    def increment_scales(self) -> torch.Tensor | None:
        r"""The guide's per-step increment scales :math:`s_n > 0`, shape ``(N, d)``.

        ``None`` when the SDE was built with ``increment_scale=False`` (then :math:`s_n = 1`).
        """
        if self.log_increment_scale is None:
            return None
        return self.log_increment_scale.exp()

    def prior_increments(self) -> dist.Distribution:
        r"""The prior of the increments, one distribution with event shape ``(N, d)``.

        :math:`\Delta W_n \sim \mathcal N(0, \Delta t\, I_d)` iid over the steps.
        """
        zeros = self.x0_loc.new_zeros(self.num_steps, self.state_dim)
        return dist.Normal(zeros, math.sqrt(self.dt)).to_event(2)

    def posterior_increments(
        self,
        x0: torch.Tensor,
        y0: torch.Tensor,
        context: torch.Tensor | None = None,
        control: Callable | None = None,
    ) -> ControlledIncrements:
        r"""The guide's controlled increments given the initial state.

        Args:
            x0: :math:`X_0`, shape ``(*batch, d)``.
            y0: :math:`Y_0`, shape ``(*batch, d, K)`` (or broadcastable).
            context: Passed to the control as its fourth argument.
            control: ``u(t, x, y, context)`` (default :attr:`control`).

        Returns:
            A :class:`ControlledIncrements` with the learned :meth:`increment_scales`.
        """
        control = self.control if control is None else control
        return ControlledIncrements(
            self,
            x0,
            y0,
            lambda t, x, y: control(t, x, y, context),
            self.increment_scales(),
            time_batched=bool(getattr(control, "time_batched", False)),
        )

    # -- Pyro model and guide -------------------------------------------------------------
    def model(self, obs_times=None, obs_values=None, context: torch.Tensor | None = None):
        r"""The prior over the discretised path, and the observations (if given).

        Sites: ``"x0"`` :math:`\sim \mathcal N(m_0, s_0^2)`, ``"y0"`` (type I), ``"dW"``
        :math:`\sim \mathcal N(0, \Delta t\, I_d)` iid over the :math:`N` steps (one
        vectorised site, event shape ``(N, d)``), and ``"obs"`` when ``obs_values`` is given.

        Args:
            obs_times: Observation times in :math:`[0, T]`, shape ``(M,)`` (any order, off
                the grid allowed: linear interpolation).
            obs_values: Observations, shape ``(M, d)`` (or ``(M,)`` when :math:`d = 1`).
            context: Passed to the guide's control only (accepted here for Pyro's signature).

        Returns:
            The :class:`SDEPath`.
        """
        pyro.module(self.name, self)
        if (obs_times is None) != (obs_values is None):
            raise ValueError("give both obs_times and obs_values, or neither")
        x0, y0 = self._initial(dist.Normal(self.x0_loc, self.x0_scale).to_event(1))
        d_w = pyro.sample("dW", self.prior_increments())
        path = self.path_from_increments(x0, y0, d_w)
        if obs_values is not None:
            self._observe(path.x, obs_times, obs_values)
        return path

    def guide(self, obs_times=None, obs_values=None, context: torch.Tensor | None = None):
        r"""The controlled posterior: :math:`q(x_0)`, :math:`q(Y_0 \mid x_0)`, increments.

        ``"x0"`` :math:`\sim q(x_0)`, ``"y0"`` (type I) :math:`\sim q(Y_0 \mid x_0)`
        (:meth:`posterior_y0`; the prior with ``learn_y0=False``), and
        :math:`\Delta W_n \sim \mathcal N(u_n \Delta t, s_n^2 \Delta t\, I_d)` with
        :math:`u_n = u(t_n, X_n, Y_n, c)`, as one site ``"dW"`` whose distribution is the
        autoregressive :class:`ControlledIncrements`; sites as in :meth:`model` (no
        ``"obs"``).

        Args:
            obs_times: Unused (same signature as :meth:`model`).
            obs_values: Unused.
            context: Context vector for the control network (amortisation), or ``None``.

        Returns:
            The :class:`SDEPath`, with the controls and the per-step KL terms.
        """
        pyro.module(self.name, self)
        loc, scale = self.q_x0_loc, torch.nn.functional.softplus(self.q_x0_raw_scale)
        y0_dist = None
        if self.learn_y0:
            y0_dist = lambda x0: self.posterior_y0((x0 - loc) / scale)  # noqa: E731
        x0, y0 = self._initial(dist.Normal(loc, scale).to_event(1), y0_dist)
        increments = self.posterior_increments(x0, y0, context)
        return increments.path(pyro.sample("dW", increments))

    @torch.no_grad()
    def sample(
        self, num_paths: int = 1, posterior: bool = True, context: torch.Tensor | None = None
    ) -> SDEPath:
        """Draw ``num_paths`` paths from the guide (``posterior=True``) or the prior."""
        with pyro.plate(f"{self.name}_paths", num_paths, dim=-1):
            if posterior:
                return self.guide(context=context)
            return self.model(context=context)


class ControlledIncrements(TorchDistribution):
    r"""The guide's increments :math:`\Delta W_{0:N}` as one autoregressive distribution.

    Given :math:`Z_0 = (X_0, Y_0)`, the increments follow the sequential recursion

    .. math::

        \Delta W_n = u(t_n, X_n, Y_n)\, \Delta t + s_n \sqrt{\Delta t}\, \varepsilon_n,
        \qquad \varepsilon_n \sim \mathcal N(0, I_d)\ \text{iid},

    with :math:`Z_{n+1}` the Euler step of :class:`FractionalSDE` driven by
    :math:`\Delta W_n`; :math:`Z_n` is a deterministic function of :math:`\Delta W_{0:n}`,
    so the density is the product of the step densities,

    .. math::

        \log q(\Delta W_{0:N}) = \sum_{n<N} \log \mathcal N\big(\Delta W_n;\,
        u(t_n, X_n, Y_n)\, \Delta t,\ s_n^2 \Delta t\, I_d\big)

    (an autoregressive flow of the standard noise :math:`\varepsilon`). :meth:`rsample`
    draws all the noise at once and runs the recursion (reparameterised: gradients reach the
    control and the scales); :meth:`log_prob` re-runs it on given increments, except at this
    distribution's own latest sample, whose path is cached (the same graph, not recomputed).
    Against the prior :math:`\mathcal N(0, \Delta t)` the KL divergence of step :math:`n`
    given :math:`Z_n` is, per state dimension,

    .. math::

        \tfrac12 u_n^2 \Delta t + \tfrac12 (s_n^2 - 1) - \log s_n,

    the Girsanov term :math:`\frac12 u_n^2 \Delta t` when :math:`s_n = 1`.

    Args:
        sde: The :class:`FractionalSDE` (drift, diffusion, weights, grid).
        x0: :math:`X_0`, shape ``(*batch, d)``.
        y0: :math:`Y_0`, shape ``(*batch, d, K)`` or broadcastable to it.
        control: :math:`u(t, x, y)` (any context already bound), returning ``(*batch, d)``.
        scale: :math:`s_n`, shape ``(N, d)`` (or broadcastable), or ``None`` for
            :math:`s_n = 1`.
        time_batched: The control accepts a 1-D tensor of the :math:`N` grid times with
            states carrying a time axis (as :class:`ControlNet` and :class:`LinearControl`
            do); then :meth:`log_prob` at given increments runs the uncontrolled recursion
            (:meth:`FractionalSDE.path_from_increments`) and evaluates the control on the
            whole path in one call, instead of one call per step.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(
        self,
        sde: FractionalSDE,
        x0: torch.Tensor,
        y0: torch.Tensor,
        control: Callable,
        scale: torch.Tensor | None = None,
        time_batched: bool = False,
    ) -> None:
        self.sde = sde
        self.time_batched = time_batched
        self.x0 = x0
        self.y0 = y0
        self.control = control
        self.scale = scale
        batch = torch.broadcast_shapes(x0.shape[:-1], y0.shape[:-2])
        # [(value, path)] of the latest sample or evaluation, shared with expanded copies
        self._cache: list[tuple[torch.Tensor, SDEPath]] = []
        super().__init__(batch, torch.Size((sde.num_steps, sde.state_dim)), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> ControlledIncrements:  # noqa: D102
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self  # keeps the cached path shared with the caller (Pyro's plates expand)
        d, k = self.sde.state_dim, self.y0.shape[-1]
        new = ControlledIncrements(
            self.sde,
            self.x0.expand(*batch_shape, d),
            self.y0.expand(*batch_shape, d, k),
            self.control,
            self.scale,
            self.time_batched,
        )
        new._cache = self._cache  # a value's path does not depend on the batch broadcast
        return new

    def _run(self, noise: torch.Tensor | None, value: torch.Tensor | None) -> SDEPath:
        """The recursion, from standard ``noise`` (sampling) or given increments ``value``."""
        sde, dt = self.sde, self.sde.dt
        if value is not None and self.time_batched:
            # the states are a function of the given increments alone: one uncontrolled pass,
            # then the control on the whole path in one call (density evaluation in parallel)
            path = sde.path_from_increments(self.x0, self.y0, value)
            y = path.y[..., :-1, :, :]
            u = self.control(sde.times[:-1], path.x[..., :-1, :], y)
            u = u.expand(*path.x.shape[:-2], sde.num_steps, sde.state_dim)
            path = path._replace(control=u, kl=0.5 * (u**2).sum(-1) * dt)
        else:
            if value is None:
                sd = math.sqrt(dt) if self.scale is None else self.scale * math.sqrt(dt)
                noise = noise * sd
            d_ws = []

            def increment(n, t, x, y):
                u = self.control(t, x, y.expand(*x.shape[:-1], *y.shape[-2:]))
                if value is not None:
                    return value[..., n, :], u
                d_w = u * dt + noise[..., n, :]
                d_ws.append(d_w)
                return d_w, u

            path = sde._simulate(self.x0, self.y0, increment)
            if value is None:
                batch = path.control.shape[:-2]
                value = _stack_states(d_ws, 1, batch)
        if self.scale is not None:
            s = self.scale.expand(sde.num_steps, sde.state_dim)
            extra = (0.5 * (s**2 - 1.0) - s.log()).sum(-1)
            path = path._replace(kl=path.kl + extra)
        self._cache[:] = [(value, path)]
        return path

    def rsample(self, sample_shape=()) -> torch.Tensor:  # noqa: D102
        shape = self._extended_shape(torch.Size(sample_shape))
        noise = torch.randn(shape, dtype=self.x0.dtype, device=self.x0.device)
        self._run(noise, None)
        return self._cache[0][0]

    def sample(self, sample_shape=()) -> torch.Tensor:  # noqa: D102
        with torch.no_grad():
            return self.rsample(sample_shape)

    def path(self, value: torch.Tensor) -> SDEPath:
        """The guide's :class:`SDEPath` (states, controls, per-step KL) for the increments."""
        if self._cache and self._cache[0][0] is value:
            return self._cache[0][1]
        return self._run(None, value)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:  # noqa: D102
        path = self.path(value)
        dt = self.sde.dt
        sd = math.sqrt(dt) if self.scale is None else self.scale * math.sqrt(dt)
        return dist.Normal(path.control * dt, sd).log_prob(value).sum((-2, -1))


# --------------------------------------------------------------------------- linear drift


def euler_linear_moments(
    theta: float,
    sigma: float,
    weights: torch.Tensor,
    gammas: torch.Tensor,
    dt: float,
    num_steps: int,
    x0_loc: float = 0.0,
    x0_scale: float = 1.0,
    kind: str = "I",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Exact mean and covariance of :math:`X` under the Euler-discretised fractional OU prior.

    For the drift :math:`b(x) = -\theta x`, constant diffusion :math:`\sigma` and scalar
    state, the recursion of :class:`FractionalSDE` is linear Gaussian in
    :math:`Z_n = (X_n, Y_{1,n}, \dots, Y_{K,n})`:
    :math:`Z_{n+1} = A Z_n + B\, \Delta W_n` with

    .. math::

        A = \begin{pmatrix} 1 - \theta \Delta t & -\sigma \Delta t\, (\omega \odot \gamma)^\top
            \\ 0 & I - \Delta t \operatorname{diag}(\gamma) \end{pmatrix}, \qquad
        B = \begin{pmatrix} \sigma \sum_k \omega_k \\ \mathbf 1 \end{pmatrix},

    so :math:`\operatorname{Cov}(Z_m, Z_n) = A^{m - n} P_n` for :math:`m \ge n`, with
    :math:`P_{n+1} = A P_n A^\top + \Delta t\, B B^\top`. The start is
    :math:`X_0 \sim \mathcal N(m_0, s_0^2)` and :math:`Y_0 = 0` (type II) or
    :math:`Y_0 \sim \mathcal N(0, 1/(\gamma_i + \gamma_j))` (type I). This is the "analytic"
    reference for the fractional OU bridge (the posterior then follows from
    :func:`gaussian_condition`).

    Returns:
        ``(mean, cov)`` of :math:`(X_0, \dots, X_N)`, shapes ``(N + 1,)`` and
        ``(N + 1, N + 1)``, float64.
    """
    kind = _check_kind(kind)
    w = torch.as_tensor(weights, dtype=torch.float64).detach()
    g = torch.as_tensor(gammas, dtype=torch.float64).detach()
    k = g.numel()
    a = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    a[0, 0] = 1.0 - theta * dt
    a[0, 1:] = -sigma * dt * w * g
    a[1:, 1:] = torch.diag(1.0 - dt * g)
    b = torch.cat([torch.tensor([sigma * float(w.sum())], dtype=torch.float64), torch.ones(k)])
    p = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    p[0, 0] = x0_scale**2
    if kind == "I":
        p[1:, 1:] = 1.0 / (g.unsqueeze(-1) + g)
    mean = torch.zeros(num_steps + 1, dtype=torch.float64)
    m = torch.zeros(k + 1, dtype=torch.float64)
    m[0] = x0_loc
    # cross[n] = Cov(Z_n, X_.) rows: propagate the full covariance of Z at every step, and the
    # cross-covariances Cov(Z_m, Z_n) = A^(m-n) P_n by storing Cov(Z_m, X_j) for j <= m.
    cov = torch.zeros(num_steps + 1, num_steps + 1, dtype=torch.float64)
    cross = p[:, :1].clone()  # Cov(Z_m, X_j) for j = 0..m, shape (k + 1, m + 1)
    mean[0] = m[0]
    cov[0, 0] = p[0, 0]
    bbt = dt * torch.outer(b, b)
    for n in range(num_steps):
        m = a @ m
        p = a @ p @ a.T + bbt
        cross = torch.cat([a @ cross, p[:, :1]], 1)
        mean[n + 1] = m[0]
        cov[n + 1, : n + 2] = cross[0]
        cov[: n + 2, n + 1] = cross[0]
    return mean, cov


def gaussian_condition(
    mean: torch.Tensor, cov: torch.Tensor, index: int, value: float, noise_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Condition a Gaussian vector on one noisy coordinate, :math:`y = X_i + \varepsilon`.

    .. math::

        \mu' = \mu + \frac{C_{:, i}}{C_{ii} + \sigma^2}(y - \mu_i), \qquad
        C' = C - \frac{C_{:, i} C_{i, :}}{C_{ii} + \sigma^2}.

    Returns:
        The posterior ``(mean, cov)``.
    """
    c = cov[:, index]
    denom = cov[index, index] + noise_scale**2
    return mean + c / denom * (value - mean[index]), cov - torch.outer(c, c) / denom
