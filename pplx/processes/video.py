r"""Latent fractional neural SDEs for video, and a stochastic moving-digits generator.

Two pieces for the latent video prediction experiment of Daems et al. (ICLR 2024, section 4
of ``PAPERS.md``), in a small version that runs on a CPU:

* :func:`moving_digits`: a stochastic moving-MNIST-style data set generated in code from
  scikit-learn's bundled 8x8 digits (no download), upsampled, moving with random velocities
  that bounce off the borders and receive small random perturbations at every frame;
* :class:`LatentVideoSDE`: encoder of the first frames :math:`\to` context and initial
  latent state :math:`\to` controlled fractional SDE in a latent space of dimension
  :math:`d` (the building blocks of :class:`~pplx.processes.sde.FractionalSDE`)
  :math:`\to` decoder :math:`\to` pixel likelihood.

The generative model of a video :math:`v_{0:F-1}` (frames at the times
:math:`\tau_f = f\, T / (F - 1)`) is

.. math::

    c \sim \mathcal N(0, I), \quad X_0 \sim \mathcal N(0, I), \quad
    dX = b(X)\, dt + s \sum_k \omega_k(H)\, dY_k \ \text{(Euler-Maruyama)}, \quad
    v_f \sim p(\cdot \mid \mathrm{dec}(X(\tau_f), c)),

with a static content code :math:`c` (which digits), a latent fractional SDE for the
dynamics (drift :math:`b` an MLP, diagonal diffusion :math:`s` learned, Hurst index
:math:`H` learned) and a Bernoulli (default) or Gaussian pixel likelihood. The guide is
amortised on the first ``num_context_frames`` frames: an MLP encoder gives
:math:`q(c)`, :math:`q(X_0)` and a context vector for the control network :math:`u(t, X, Y,
\text{context})` of the posterior SDE. Model and guide share the sites ``"content"``,
``"x0"``, ``"y0"`` (type I) and ``"dW"`` (all :math:`N` Euler increments in one site of
event shape ``(N, d)``, vectorised over the videos in the plate ``"videos"``; in the guide an
autoregressive :class:`~pplx.processes.sde.ControlledIncrements`); the model also has the
observed site ``"frames"``. By Girsanov (see :mod:`pplx.processes.sde`) the ELBO of this
pair is :math:`\mathbb E_q[\log p(v \mid X, c)] - \mathrm{KL}(q(c) \| p(c)) -
\mathrm{KL}(q(X_0) \| p(X_0)) - \mathbb E_q \sum_n \frac12 \|u_n\|^2 \Delta t`, plus
:math:`-\sum_n \sum_i [\frac12 (s_{n,i}^2 - 1) - \log s_{n,i}]` for the learned per-step
increment scales :math:`s_n` of the guide (``increment_scale=True``, the default; 0 at their
initial value 1).

Why not :meth:`FractionalSDE.model` / :meth:`FractionalSDE.guide` directly: their
:math:`q(x_0)` is one global Gaussian and their likelihood is a Gaussian on the state, while a
video model needs a per-video (amortised) :math:`q(X_0)` and a decoder. The latent SDE is
therefore a :class:`FractionalSDE` (drift, diffusion, Hurst index, speeds, weights, control
network, increment distributions) whose Euler recursion and initial-state sampler are
driven by :class:`LatentVideoSDE`'s own model and guide; per-video contexts ride along
because the control network broadcasts a ``(videos, context_dim)`` context against states of
shape ``(..., videos, d)``.
"""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pplx.processes.fbm import DEFAULT_GAMMA_MAX
from pplx.processes.sde import ControlNet, FractionalSDE, SDEPath

__all__ = ["LatentVideoSDE", "moving_digits"]

LIKELIHOODS = ("bernoulli", "gaussian")


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> torch.Tensor:
    """The 1797 bundled 8x8 digits of scikit-learn, scaled to [0, 1], shape ``(1797, 8, 8)``."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    return torch.as_tensor(images, dtype=torch.float32) / 16.0


def moving_digits(
    num_videos: int,
    num_frames: int = 25,
    size: int = 32,
    num_digits: int = 2,
    generator: torch.Generator | None = None,
    *,
    digit_size: int | None = None,
    speed: tuple[float, float] = (0.05, 0.1),
    velocity_noise: float = 0.1,
    return_positions: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Stochastic moving-MNIST-style videos from scikit-learn's bundled 8x8 digits.

    Each video shows ``num_digits`` digits (drawn from ``sklearn.datasets.load_digits``,
    which ships with scikit-learn, bilinearly upsampled to ``digit_size``) moving inside a
    ``size`` x ``size`` frame. Every digit starts at a uniform position with a uniform
    direction and a speed drawn from ``speed`` (in frame widths per frame); at every frame
    its velocity receives a Gaussian perturbation of relative size ``velocity_noise`` (the
    stochastic part), it moves, and it bounces off the borders (the position is reflected
    and the velocity component flipped), so the digit always lies entirely inside the frame.
    Overlapping digits combine by maximum, so the values stay in :math:`[0, 1]`.

    Args:
        num_videos: Number of videos :math:`N`.
        num_frames: Frames per video :math:`T`.
        size: Frame height and width in pixels.
        num_digits: Digits per video.
        generator: Random number generator (seed it for reproducible data).
        digit_size: Side of a digit in pixels (default ``size // 2``, at least 8 and at most
            ``size``).
        speed: Range ``(low, high)`` of the initial speed, in frame widths per frame.
        velocity_noise: Standard deviation of the per-frame velocity perturbation, relative to
            the mean initial speed (0: deterministic motion given the start).
        return_positions: Also return the top-left corners of the digits.

    Returns:
        Videos of shape ``(N, T, size, size)`` with values in :math:`[0, 1]`, and, with
        ``return_positions``, the integer top-left corners (row, column) of the digits, shape
        ``(N, T, num_digits, 2)``, each in ``[0, size - digit_size]``.

    Raises:
        ValueError: If a size is not positive or the digits do not fit in the frame.
    """
    for value, label in [(num_videos, "num_videos"), (num_frames, "num_frames")]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be an int >= 1, got {value!r}")
    if isinstance(num_digits, bool) or not isinstance(num_digits, int) or num_digits < 0:
        raise ValueError(f"num_digits must be an int >= 0, got {num_digits!r}")
    if digit_size is None:
        digit_size = min(size, max(8, size // 2))
    if not 1 <= digit_size <= size:
        raise ValueError(f"digit_size must be in [1, size = {size}], got {digit_size}")
    if not 0.0 <= speed[0] <= speed[1]:
        raise ValueError(f"speed must be a range 0 <= low <= high, got {speed}")
    if velocity_noise < 0:
        raise ValueError(f"velocity_noise must be >= 0, got {velocity_noise}")
    n, t, k = num_videos, num_frames, num_digits
    bank = _sklearn_digits()
    index = torch.randint(0, bank.shape[0], (n, k), generator=generator)
    glyphs = bank[index.flatten()].unsqueeze(1)
    if digit_size != 8:
        glyphs = F.interpolate(
            glyphs, size=(digit_size, digit_size), mode="bilinear", align_corners=False
        )
    glyphs = glyphs.clamp(0.0, 1.0).reshape(n, k, digit_size, digit_size)

    limit = float(size - digit_size)
    pos = torch.rand(n, k, 2, generator=generator) * limit
    angle = torch.rand(n, k, generator=generator) * (2 * math.pi)
    low, high = speed
    magnitude = (low + (high - low) * torch.rand(n, k, generator=generator)) * size
    vel = torch.stack([torch.sin(angle), torch.cos(angle)], -1) * magnitude.unsqueeze(-1)
    noise_scale = velocity_noise * 0.5 * (low + high) * size
    positions = torch.empty(n, t, k, 2, dtype=torch.long)
    for f in range(t):
        if f > 0:
            vel = vel + noise_scale * torch.randn(n, k, 2, generator=generator)
            pos = pos + vel
            # reflect at the borders (a loop handles velocities larger than the frame)
            for _ in range(3):
                below, above = pos < 0.0, pos > limit
                pos = torch.where(below, -pos, torch.where(above, 2.0 * limit - pos, pos))
                vel = torch.where(below | above, -vel, vel)
            pos = pos.clamp(0.0, limit)
        positions[:, f] = pos.round().long()

    videos = torch.zeros(n, t, size, size)
    for i in range(n):
        for f in range(t):
            frame = videos[i, f]
            for j in range(k):
                r, c = positions[i, f, j].tolist()
                patch = frame[r : r + digit_size, c : c + digit_size]
                torch.maximum(patch, glyphs[i, j], out=patch)
    if return_positions:
        return videos, positions
    return videos


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_layers):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.SiLU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


class _Drift(nn.Module):
    """Latent drift :math:`b(x)`: a small MLP (time-homogeneous)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = _mlp(dim, hidden_dim, dim, num_layers=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Diffusion(nn.Module):
    r"""Diagonal constant diffusion :math:`s = \operatorname{softplus}(\text{raw})`."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.full((dim,), math.log(math.expm1(init))))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.raw)


class LatentVideoSDE(nn.Module):
    r"""Latent fractional neural SDE for videos: encoder, controlled fSDE, decoder.

    See the module documentation for the generative model and the guide. All networks are
    MLPs on flattened frames, which suits the small frames (16x16, 32x32) this class is
    meant for. ``model(videos)`` and ``guide(videos)`` can be passed to
    :class:`pyro.infer.SVI` with :class:`pplx.objectives.ELBO` (vectorised particles are
    supported); both call ``pyro.module(name, self)``, so every parameter (encoder, decoder,
    drift, diffusion, control, Hurst index) is trained.

    Args:
        frame_size: Frame height and width in pixels.
        num_frames: Frames per video :math:`F`; frame :math:`f` sits at time
            :math:`f\, T / (F - 1)`.
        latent_dim: Dimension :math:`d` of the latent SDE.
        content_dim: Dimension of the static content code :math:`c`.
        context_dim: Size of the context vector given to the control network.
        hidden_dim: Width of the networks.
        num_context_frames: Frames seen by the encoder (the first ones).
        steps_per_frame: Euler-Maruyama steps between two frames.
        horizon: :math:`T`.
        hurst: Initial Hurst index.
        learn_hurst: Learn the Hurst index.
        num_processes: :math:`K`, Ornstein-Uhlenbeck processes of the fBM approximation.
        gamma_max: Fastest speed (default ``min(20, 0.4 / dt)``, which keeps
            :math:`\gamma_{\max} \Delta t < 0.5`).
        kind: ``"I"`` or ``"II"`` (see :class:`~pplx.processes.sde.FractionalSDE`).
        diffusion_init: Initial latent diffusion :math:`s`.
        likelihood: ``"bernoulli"`` (logits from the decoder; pixel intensities in
            :math:`[0, 1]` used as soft targets) or ``"gaussian"`` (mean
            :math:`\operatorname{sigmoid}` of the decoder output, scale ``obs_scale``).
        obs_scale: Pixel noise of the Gaussian likelihood.
        increment_scale: Learn per-step scales of the guide's increments (see
            :class:`~pplx.processes.sde.FractionalSDE`).
        name: Pyro module name.

    Raises:
        ValueError: On invalid sizes or an unknown likelihood.
    """

    def __init__(
        self,
        frame_size: int,
        num_frames: int,
        *,
        latent_dim: int = 6,
        content_dim: int = 16,
        context_dim: int = 32,
        hidden_dim: int = 128,
        num_context_frames: int = 3,
        steps_per_frame: int = 2,
        horizon: float = 1.0,
        hurst: float = 0.5,
        learn_hurst: bool = True,
        num_processes: int = 3,
        gamma_max: float | None = None,
        kind: str = "I",
        diffusion_init: float = 0.5,
        likelihood: str = "bernoulli",
        obs_scale: float = 0.1,
        increment_scale: bool = True,
        name: str = "latent_video_sde",
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {num_frames}")
        if not 1 <= num_context_frames <= num_frames:
            raise ValueError(
                f"num_context_frames must be in [1, num_frames = {num_frames}], "
                f"got {num_context_frames}"
            )
        if steps_per_frame < 1:
            raise ValueError(f"steps_per_frame must be >= 1, got {steps_per_frame}")
        self.frame_size = frame_size
        self.num_frames = num_frames
        self.num_pixels = frame_size * frame_size
        self.latent_dim = latent_dim
        self.content_dim = content_dim
        self.num_context_frames = num_context_frames
        self.steps_per_frame = steps_per_frame
        self.likelihood = likelihood
        self.obs_scale = float(obs_scale)
        self.name = name
        num_steps = (num_frames - 1) * steps_per_frame
        dt = horizon / num_steps
        if gamma_max is None:
            gamma_max = min(DEFAULT_GAMMA_MAX, 0.4 / dt)
        control = ControlNet(latent_dim, num_processes, context_dim, hidden_dim, horizon=horizon)
        self.sde = FractionalSDE(
            _Drift(latent_dim, hidden_dim),
            _Diffusion(latent_dim, diffusion_init),
            state_dim=latent_dim,
            horizon=horizon,
            num_steps=num_steps,
            hurst=hurst,
            learn_hurst=learn_hurst,
            num_processes=num_processes,
            gamma_max=gamma_max,
            kind=kind,
            x0_loc=0.0,
            x0_scale=1.0,
            control=control,
            increment_scale=increment_scale,
            learn_y0=False,  # the amortised guide below draws Y(0) from its stationary prior
            name=f"{name}_sde",
        )
        # q(x0) is amortised here: the SDE's own global q(x0) is unused, so keep it as buffers
        for attr in ("q_x0_loc", "q_x0_raw_scale"):
            value = getattr(self.sde, attr).detach().clone()
            delattr(self.sde, attr)
            self.sde.register_buffer(attr, value)
        # encoder: per-frame features, then the first frames together -> q(c), q(x0), context
        self.frame_encoder = nn.Sequential(
            nn.Linear(self.num_pixels, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.context_encoder = _mlp(
            num_context_frames * hidden_dim,
            hidden_dim,
            2 * content_dim + 2 * latent_dim + context_dim,
            num_layers=1,
        )
        self.context_dim = context_dim
        self.decoder = _mlp(latent_dim + content_dim, hidden_dim, self.num_pixels)

    # -- pieces ---------------------------------------------------------------------------
    @property
    def hurst(self) -> torch.Tensor:
        """The latent SDE's Hurst index (differentiable)."""
        return self.sde.hurst

    def _check(self, videos: torch.Tensor, full: bool) -> torch.Tensor:
        need = self.num_frames if full else self.num_context_frames
        s = self.frame_size
        if videos.dim() != 4 or videos.shape[-2:] != (s, s) or videos.shape[1] < need:
            raise ValueError(
                f"videos must have shape (N, T, {s}, {s}) with T "
                f"{'=' if full else '>='} {need}, got {tuple(videos.shape)}"
            )
        if full and videos.shape[1] != self.num_frames:
            raise ValueError(
                f"videos must have num_frames = {self.num_frames} frames, got {videos.shape[1]}"
            )
        return videos

    def encode(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode the first ``num_context_frames`` frames of ``videos`` ``(N, T, H, W)``.

        Returns:
            A dict with ``content_loc``, ``content_scale`` ``(N, content_dim)``, ``x0_loc``,
            ``x0_scale`` ``(N, d)`` and ``context`` ``(N, context_dim)``.
        """
        frames = videos[:, : self.num_context_frames].flatten(-2)
        feats = self.frame_encoder(frames).flatten(-2)
        out = self.context_encoder(feats)
        c, d = self.content_dim, self.latent_dim
        c_loc, c_raw, x_loc, x_raw, context = out.split([c, c, d, d, self.context_dim], -1)
        return {
            "content_loc": c_loc,
            "content_scale": F.softplus(c_raw - 1.0) + 1e-4,
            "x0_loc": x_loc,
            "x0_scale": F.softplus(x_raw - 1.0) + 1e-4,
            "context": context,
        }

    def decode(self, latents: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """Decoder output (logits) for latents ``(..., F, d)`` and content ``(..., c)``.

        Returns:
            Shape ``(..., F, H * W)``.
        """
        content = content.unsqueeze(-2).expand(*latents.shape[:-1], self.content_dim)
        return self.decoder(torch.cat([latents, content], -1))

    def frame_means(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean pixel intensities for decoder outputs (the sigmoid for both likelihoods)."""
        return torch.sigmoid(logits)

    def _frame_latents(self, path: SDEPath) -> torch.Tensor:
        return path.x[..., :: self.steps_per_frame, :]

    def _latent_path(
        self, content_dist: dist.Distribution, x0_dist: dist.Distribution, context
    ) -> tuple[torch.Tensor, SDEPath]:
        """Sample the content and the latent path.

        The increments are controlled with ``context``, or from the prior (``context=None``).
        """
        sde = self.sde
        content = pyro.sample("content", content_dist)
        x0, y0 = sde._initial(x0_dist)
        if context is None:
            return content, sde.path_from_increments(
                x0, y0, pyro.sample("dW", sde.prior_increments())
            )
        increments = sde.posterior_increments(x0, y0, context)
        return content, increments.path(pyro.sample("dW", increments))

    # -- Pyro model and guide -------------------------------------------------------------
    def model(self, videos: torch.Tensor) -> SDEPath:
        """Prior over content and latent path, and the pixel likelihood of ``videos``.

        Args:
            videos: Shape ``(N, num_frames, H, W)``, values in :math:`[0, 1]`.

        Returns:
            The latent :class:`~pplx.processes.sde.SDEPath`.
        """
        pyro.module(self.name, self)
        videos = self._check(videos, full=True)
        ref = self.sde.x0_loc
        with pyro.plate("videos", videos.shape[0], dim=-1):
            content_prior = dist.Normal(ref.new_zeros(self.content_dim), 1.0).to_event(1)
            x0_prior = dist.Normal(self.sde.x0_loc, self.sde.x0_scale).to_event(1)
            content, path = self._latent_path(content_prior, x0_prior, None)
            logits = self.decode(self._frame_latents(path), content)
            target = videos.flatten(-2)
            if self.likelihood == "bernoulli":
                obs_dist = dist.Bernoulli(logits=logits, validate_args=False)
            else:
                obs_dist = dist.Normal(torch.sigmoid(logits), self.obs_scale)
            pyro.sample("frames", obs_dist.to_event(2), obs=target)
        return path

    def guide(self, videos: torch.Tensor, posterior: bool = True) -> SDEPath:
        """Amortised posterior given the first ``num_context_frames`` frames.

        Args:
            videos: Shape ``(N, T, H, W)`` with ``T >= num_context_frames`` (only the first
                frames are read).
            posterior: Controlled increments (the guide); ``False`` samples the increments
                from the prior while keeping :math:`q(c)` and :math:`q(X_0)` (used by
                :meth:`predict`).

        Returns:
            The latent :class:`~pplx.processes.sde.SDEPath`.
        """
        pyro.module(self.name, self)
        return self._posterior(videos, posterior)[1]

    def _posterior(self, videos: torch.Tensor, posterior: bool) -> tuple[torch.Tensor, SDEPath]:
        videos = self._check(videos, full=False)
        enc = self.encode(videos)
        context = enc["context"] if posterior else None
        with pyro.plate("videos", videos.shape[0], dim=-1):
            content_q = dist.Normal(enc["content_loc"], enc["content_scale"]).to_event(1)
            x0_q = dist.Normal(enc["x0_loc"], enc["x0_scale"]).to_event(1)
            return self._latent_path(content_q, x0_q, context)

    @torch.no_grad()
    def predict(
        self,
        videos: torch.Tensor,
        num_context_frames: int | None = None,
        num_samples: int = 1,
        posterior: bool = True,
    ) -> torch.Tensor:
        """Sample videos given their first frames.

        The first ``num_context_frames`` frames are encoded into :math:`q(c)`,
        :math:`q(X_0)` and the control context; latent paths are sampled from the controlled
        posterior SDE (``posterior=True``) or the prior SDE, and decoded to mean frames.

        Args:
            videos: Shape ``(N, T, H, W)`` with ``T >= num_context_frames``.
            num_context_frames: Must equal the model's ``num_context_frames`` (the default).
            num_samples: Sampled futures per video.
            posterior: Use the controlled (posterior) or the prior SDE.

        Returns:
            Mean frames of shape ``(num_samples, N, num_frames, H, W)`` in :math:`[0, 1]`
            (all frames, the context ones reconstructed).

        Raises:
            ValueError: If ``num_context_frames`` differs from the model's.
        """
        if num_context_frames is None:
            num_context_frames = self.num_context_frames
        if num_context_frames != self.num_context_frames:
            raise ValueError(
                f"this model encodes exactly {self.num_context_frames} context frames, got "
                f"num_context_frames = {num_context_frames}"
            )
        with pyro.poutine.block(), pyro.plate("samples", num_samples, dim=-2):
            content, path = self._posterior(videos, posterior)
            content = content.expand(num_samples, videos.shape[0], self.content_dim)
            latents = self._frame_latents(path).expand(
                num_samples, videos.shape[0], self.num_frames, self.latent_dim
            )
            means = self.frame_means(self.decode(latents, content))
        s = self.frame_size
        return means.reshape(num_samples, videos.shape[0], self.num_frames, s, s)
