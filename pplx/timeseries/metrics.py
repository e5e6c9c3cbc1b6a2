r"""Post-hoc scores of synthetic time series (TimeGAN's protocol).

Both scores train a small GRU (hidden size :math:`\lfloor d/2 \rfloor` by default, as in
TimeGAN) and are repeated over seeds; the result is the mean and standard deviation over the
repeats (Yoon, Jarrett & van der Schaar, NeurIPS 2019; used by GT-GAN and by the Koopman VAE of
Naiman, Berman et al., ICLR 2024).

* :func:`discriminative_score`: a GRU classifier is trained to tell real from synthetic
  sequences on 80 % of each set and tested on the other 20 %; the score is
  :math:`|0.5 - \text{accuracy}|`: about 0 when the two are indistinguishable (down to a
  noise floor set by the held-out size, :func:`discriminative_noise_floor`), 0.5 when they
  are told apart perfectly.
* :func:`predictive_score` ("train on synthetic, test on real"): a GRU trained on the synthetic
  sequences predicts the next step of the last feature from the previous steps of the other
  features (or, with ``target="all"``, every feature's next step from all features); the
  score is its mean absolute error on the real sequences. Lower is better.

Inputs are tensors of shape ``(n, T, d)`` scaled to :math:`[0, 1]` (the predictor ends in a
sigmoid); every computation runs on the inputs' device and dtype. Seeds make the scores
reproducible without touching the global random state.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Score", "discriminative_noise_floor", "discriminative_score", "predictive_score"]


@dataclass(frozen=True)
class Score:
    """Mean and standard deviation of a score over repeats.

    Attributes:
        mean: Mean over repeats.
        std: Sample standard deviation over repeats (0 for a single repeat).
        values: The score of each repeat, in seed order.
        floor: For a discriminative score, :func:`discriminative_noise_floor` at the held-out
            size it was measured on (what indistinguishable samples would score); else None.
    """

    mean: float
    std: float
    values: tuple[float, ...]
    floor: float | None = None

    @classmethod
    def of(cls, values: Sequence[float], floor: float | None = None) -> Score:
        """Summarise a list of per-repeat scores."""
        t = torch.tensor(list(values), dtype=torch.float64)
        std = t.std().item() if len(values) > 1 else 0.0
        return cls(t.mean().item(), std, tuple(float(v) for v in values), floor)

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"


class _GRUHead(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.gru = nn.GRU(d_in, hidden, batch_first=True)
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq, last = self.gru(x)
        return self.out(seq), self.out(last[-1])


def _check(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or min(x.shape) < 1:
        raise ValueError(f"{name} must have shape (n, T, d), got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{name} has NaN or infinite values; impute or drop incomplete sequences first"
        )
    return x.detach()


def _check_pair(real, synthetic, min_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    real, synthetic = _check(real, "real"), _check(synthetic, "synthetic")
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"real and synthetic must have the same (T, d), got {tuple(real.shape[1:])} and "
            f"{tuple(synthetic.shape[1:])}"
        )
    if real.device != synthetic.device:
        raise ValueError(f"real is on {real.device}, synthetic on {synthetic.device}")
    for name, x in (("real", real), ("synthetic", synthetic)):
        if x.shape[0] < min_n:
            raise ValueError(f"{name} needs at least {min_n} sequences, got {x.shape[0]}")
    dtype = torch.promote_types(real.dtype, synthetic.dtype)
    return real.to(dtype), synthetic.to(dtype)


def _check_common(num_steps: int, batch_size: int, seeds: Sequence[int], lr: float) -> None:
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(seeds) == 0:
        raise ValueError("seeds must hold at least one seed")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[torch.Generator]:
    """Fork the global RNG (so parameter initialisation is seeded) and yield a CPU generator."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def _without_replacement(n: int, batch_size: int, gen: torch.Generator, device) -> torch.Tensor:
    """``min(batch_size, n)`` distinct indices below ``n`` (the head of a random permutation)."""
    return torch.randperm(n, generator=gen)[:batch_size].to(device)


def discriminative_noise_floor(num_test: int) -> float:
    r"""Expected discriminative score of indistinguishable samples, from ``num_test`` held out.

    A classifier that cannot tell the two sets apart is right on each held-out sequence with
    probability 1/2, so its accuracy is about :math:`N(1/2, 1/(4 n))` and the score
    :math:`|0.5 - \text{accuracy}|` has mean :math:`\sqrt{2/\pi}\,/\,(2\sqrt{n})` (the mean of
    a half-normal). Scores at or below this are as good as the held-out size can show.

    Args:
        num_test: Held-out sequences, real and synthetic together (20 % of both sets with the
            default split of :func:`discriminative_score`).
    """
    if int(num_test) != num_test or num_test < 1:
        raise ValueError(f"num_test must be a positive integer, got {num_test!r}")
    return math.sqrt(2.0 / math.pi) / (2.0 * math.sqrt(num_test))


def discriminative_score(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    hidden: int | None = None,
    num_steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    train_fraction: float = 0.8,
) -> Score:
    r"""Discriminative score :math:`|0.5 - \text{accuracy}|` of a post-hoc GRU classifier.

    For each seed: shuffle each set, split off ``train_fraction`` of the real and of the
    synthetic sequences for training, train a GRU classifier (last hidden state, linear logit)
    with Adam for ``num_steps`` steps, and measure its accuracy on the held-out rest of both
    (Yoon et al., 2019). Every step sees a balanced minibatch, as in TimeGAN's and KoVAE's
    metric code: ``batch_size`` real and ``batch_size`` synthetic training sequences (each drawn
    without replacement within the batch), loss the sum of the two mean binary cross-entropies.

    Perfectly separable samples score 0.5. Two samples from one distribution score about 0,
    but not exactly: with :math:`n` held-out sequences the accuracy of a classifier that cannot
    tell them apart still scatters binomially around 0.5, so the score has the floor
    :func:`discriminative_noise_floor` :math:`\approx \sqrt{2/\pi}\,/\,(2\sqrt{n})` (0.006 for
    the 4,000 held-out sequences of the sine benchmark's 10,000 + 10,000, 0.020 for 400).
    Compare scores at the same sample sizes, and use the whole data set as the papers do.

    Args:
        real: Real sequences ``(n, T, d)``.
        synthetic: Synthetic sequences ``(m, T, d)``.
        seeds: One repeat per seed.
        hidden: GRU hidden size (default :math:`\max(1, \lfloor d/2 \rfloor)`).
        num_steps: Training iterations per repeat.
        batch_size: Sequences of each set per minibatch.
        lr: Adam learning rate.
        train_fraction: Fraction of each set used for training.

    Returns:
        The :class:`Score` over seeds, with its noise floor (``Score.floor``).
    """
    real, synthetic = _check_pair(real, synthetic, min_n=2)
    _check_common(num_steps, batch_size, seeds, lr)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    d = real.shape[-1]
    hidden = hidden or max(1, d // 2)
    device, dtype = real.device, real.dtype
    values = []
    for seed in seeds:
        with _seeded(int(seed), device) as gen:
            parts = []
            for x in (real, synthetic):
                perm = torch.randperm(x.shape[0], generator=gen).to(device)
                k = min(max(1, int(round(train_fraction * x.shape[0]))), x.shape[0] - 1)
                parts.append((x[perm[:k]], x[perm[k:]]))
            (r_tr, r_te), (s_tr, s_te) = parts
            x_te = torch.cat([r_te, s_te])
            y_te = torch.cat([r_te.new_ones(len(r_te)), s_te.new_zeros(len(s_te))])
            net = _GRUHead(d, hidden, 1).to(device=device, dtype=dtype)
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            bce = nn.functional.binary_cross_entropy_with_logits
            with torch.enable_grad():
                for _ in range(num_steps):
                    r_idx = _without_replacement(len(r_tr), batch_size, gen, device)
                    s_idx = _without_replacement(len(s_tr), batch_size, gen, device)
                    # One pass over both halves of the balanced batch (the GRU sees each
                    # sequence on its own, so this equals two separate passes).
                    logit = net(torch.cat([r_tr[r_idx], s_tr[s_idx]]))[1].squeeze(-1)
                    on_real, on_synthetic = logit[: len(r_idx)], logit[len(r_idx) :]
                    loss = bce(on_real, torch.ones_like(on_real)) + bce(
                        on_synthetic, torch.zeros_like(on_synthetic)
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                pred = (net(x_te)[1].squeeze(-1) > 0).to(dtype)
                accuracy = (pred == y_te).to(torch.float64).mean().item()
        values.append(abs(0.5 - accuracy))
    return Score.of(values, floor=discriminative_noise_floor(len(y_te)))


def predictive_score(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    *,
    target: str | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    hidden: int | None = None,
    num_steps: int = 5000,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> Score:
    r"""Predictive score ("train on synthetic, test on real"): one-step-ahead MAE on real data.

    For each seed, a GRU with a sigmoid read-out is trained on ``synthetic`` (Adam on the mean
    absolute error, minibatches of ``batch_size`` distinct sequences) and its mean absolute
    error is measured on all of ``real``:

    * ``target="last"`` (TimeGAN's protocol, the default when :math:`d > 1`): predict
      :math:`x_{t+1, d}` from :math:`x_{1:t, 1:d-1}`;
    * ``target="all"`` (the default when :math:`d = 1`): predict :math:`x_{t+1}` from
      :math:`x_{1:t}`.

    With ``"last"`` the score only ranks models when the last feature is predictable: on the
    energy benchmark it is the data set's white-noise control column ``rv2``, and every
    regressor scores about 0.251, its mean absolute deviation.

    Args:
        real: Real sequences ``(n, T, d)``, used only for testing.
        synthetic: Synthetic sequences ``(m, T, d)``, used only for training.
        target: ``"last"`` or ``"all"`` (see above).
        seeds: One repeat per seed.
        hidden: GRU hidden size (default :math:`\max(1, \lfloor d/2 \rfloor)`).
        num_steps: Training iterations per repeat.
        batch_size: Minibatch size.
        lr: Adam learning rate.

    Returns:
        The :class:`Score` (mean absolute error) over seeds.
    """
    real, synthetic = _check_pair(real, synthetic, min_n=1)
    _check_common(num_steps, batch_size, seeds, lr)
    d = real.shape[-1]
    if real.shape[1] < 2:
        raise ValueError(f"sequences need at least 2 time steps, got T={real.shape[1]}")
    target = target or ("last" if d > 1 else "all")
    if target == "last":
        if d < 2:
            raise ValueError('target="last" needs at least 2 features; use target="all"')

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[:, :-1, :-1], x[:, 1:, -1:]

        d_in, d_out = d - 1, 1
    elif target == "all":

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[:, :-1], x[:, 1:]

        d_in, d_out = d, d
    else:
        raise ValueError(f'target must be "last" or "all", got {target!r}')
    hidden = hidden or max(1, d // 2)
    device, dtype = real.device, real.dtype
    x_syn, y_syn = split(synthetic)
    x_real, y_real = split(real)
    values = []
    for seed in seeds:
        with _seeded(int(seed), device) as gen:
            net = _GRUHead(d_in, hidden, d_out).to(device=device, dtype=dtype)
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            with torch.enable_grad():
                for _ in range(num_steps):
                    idx = _without_replacement(len(x_syn), batch_size, gen, device)
                    pred = torch.sigmoid(net(x_syn[idx])[0])
                    loss = (pred - y_syn[idx]).abs().mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                mae = (torch.sigmoid(net(x_real)[0]) - y_real).abs().mean().item()
        if not math.isfinite(mae):
            raise FloatingPointError(f"predictive_score: non-finite MAE with seed {seed}")
        values.append(mae)
    return Score.of(values)
