"""Latent fractional neural SDE for video prediction on stochastic moving digits.

A small version of the video experiment of Daems et al. (ICLR 2024): videos of two digits
(scikit-learn's bundled 8x8 digits, upsampled) moving with bounces and random velocity
perturbations (pplx.processes.moving_digits) are modelled by pplx.processes.LatentVideoSDE:
an encoder of the first frames gives a content code, the initial latent state and a context;
a controlled fractional SDE (learned Hurst index) evolves the latent state; a decoder maps it
to Bernoulli pixel probabilities. Model and guide are trained with pplx.objectives.ELBO (the
path KL is the Girsanov term). The script prints the ELBO trend, the mean squared error of
the predicted future frames on held-out videos (mean of the sampled futures) against
"copy the last context frame" and "blank frame" baselines, and saves a strip of real and
predicted frames.

    python examples/latent_video_sde.py [--quick] [--out DIR]
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pplx.objectives import ELBO  # noqa: E402
from pplx.processes import LatentVideoSDE, moving_digits  # noqa: E402


def strip(real, samples, num_context):
    """One image: the real video on top, then sampled predictions, frames left to right."""
    rows = [real] + list(samples)
    gap = torch.ones(real.shape[-2], 1)
    lines = []
    for row in rows:
        frames = []
        for f, frame in enumerate(row):
            frames += [frame, gap * (0.5 if f == num_context - 1 else 1.0)]
        lines += [torch.cat(frames, -1), torch.ones(1, len(row) * (real.shape[-1] + 1))]
    return torch.cat(lines, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny frames and a short fit")
    parser.add_argument("--out", default=".", help="folder for the plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=None, help="override the training steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: threads only add overhead
    pyro.set_rng_seed(args.seed)
    if args.quick:
        size, frames, train, test, iters, batch, hidden, lr = 16, 10, 64, 16, 150, 16, 64, 3e-3
    else:
        size, frames, train, test, iters, batch, hidden, lr = 32, 25, 1024, 64, 3000, 32, 256, 1e-3
    iters = iters if args.iters is None else args.iters
    num_context, num_samples = 3, 8
    gen = torch.Generator().manual_seed(args.seed)
    data = moving_digits(train + test, frames, size, num_digits=2, generator=gen)
    train_videos, test_videos = data[:train], data[train:]

    pyro.clear_param_store()
    net = LatentVideoSDE(
        size, frames, hidden_dim=hidden, num_context_frames=num_context, steps_per_frame=2
    )
    optim = pyro.optim.ClippedAdam({"lr": lr, "clip_norm": 10.0})
    svi = pyro.infer.SVI(net.model, net.guide, optim, ELBO(1, max_plate_nesting=1))
    start = time.perf_counter()
    print(f"{'step':>6} {'ELBO / video':>13} {'H':>6}")
    window = []
    report = max(1, iters // 6)
    for step in range(iters):
        idx = torch.randint(0, train, (batch,), generator=gen)
        window.append(-svi.step(train_videos[idx]) / batch)
        if (step + 1) % report == 0 or step == iters - 1:
            mean_elbo = sum(window) / len(window)
            print(f"{step + 1:6d} {mean_elbo:13.1f} {float(net.hurst.detach()):6.3f}")
            window = []
    fit_s = time.perf_counter() - start

    future = slice(num_context, frames)
    pred = net.predict(test_videos, num_context, num_samples)
    truth = test_videos[:, future]
    mse_model = float(((pred.mean(0)[:, future] - truth) ** 2).mean())
    mse_sample = float(((pred[:, :, future] - truth) ** 2).mean())
    last = test_videos[:, num_context - 1 : num_context]
    mse_copy = float(((last - truth) ** 2).mean())
    mse_blank = float((truth**2).mean())
    hurst = float(net.hurst.detach())
    print(f"fit: {iters} steps in {fit_s:.1f} s; learned Hurst index {hurst:.3f}")
    print(f"future-frame MSE on {test} held-out videos (frames {num_context}..{frames - 1}):")
    rows = [
        (f"latent fSDE, mean of {num_samples} samples", mse_model),
        ("latent fSDE, single sample", mse_sample),
        ("copy the last context frame", mse_copy),
        ("blank frame", mse_blank),
    ]
    for label, value in rows:
        print(f"  {label:<36}{value:.4f}")

    image = strip(test_videos[0], pred[:3, 0], num_context)
    fig, ax = plt.subplots(figsize=(0.6 * frames, 0.6 * 4 + 0.4))
    ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title("top: real; below: sampled predictions (context frames left of the grey bar)")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "latent_video_sde.png", dpi=110)
    print(f"wrote {out / 'latent_video_sde.png'}")


if __name__ == "__main__":
    main()
