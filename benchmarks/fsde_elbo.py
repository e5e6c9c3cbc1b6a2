"""Time per ELBO gradient step of a fractional SDE as the number of steps T and K grow.

Model: pplx.processes.FractionalSDE, fractional OU prior dX = -X dt + dB^H (type I, H learned,
default ControlNet guide of width 32), the endpoint observed with noise 0.1; fixed step
dt = 0.02 (horizon T dt), speeds on the paper's grid [1/20, 20] (gamma_max dt = 0.4).
One gradient step = ``pplx.objectives.ELBO(num_particles, stl=True).differentiable_loss``
+ backward + Adam: the guide samples its one increment site "dW" (a Python loop over the
steps calling the control network), sticking-the-landing replays the guide's density at the
detached increments (an uncontrolled loop, then the control on the whole path in one call),
and the model is replayed (a loop calling only the drift and diffusion). The particles are
vectorised, so the cost is dominated by the per-step Python and autograd overhead: it should
grow linearly in T, and only mildly with K (the per-step tensors are (particles, d, K)).

Measured on one thread of a loaded 2-core CPU, before and after replacing the per-step
Pyro sites by the one vectorised / autoregressive site (same run, back to back):
T = 25 / 50 / 100 / 200 at K = 5: 92 / 156 / 387 / 972 ms before (one Pyro site per step),
113 / 122 / 240 / 376 ms after, i.e. about 1.6 ms per Euler step after against 2.2-5 before
(the machine's load varies by 2x between runs; profiled on a quieter one, T = 100 went from
about 370 to 105 ms). K from 1 to 10 at T = 50: 109-146 ms after, 230-270 ms before.
Then the weights omega(H) were cached per value of H (FractionalSDE.weights: computed once
per optimiser step with their derivative, instead of with their graph in the model, the
guide and the replay): T = 25 / 50 / 100 / 200 at K = 5, 56 / 80 / 128 / 229 ms before and
42 / 65 / 114 / 216 ms after (interleaved in one process, best of 3), about 14 ms less per
step; this script's K sweep at T = 50 went from 115-120 to 65-66 ms (separate runs).

Two sweeps: T in {25, 50, 100, 200} at K = 5, and K in {1, 2, 5, 10} at T = 50. Columns:
median ms per gradient step, ms per (step x T), and a least-squares line ms = a + b T (resp. K)
with its largest relative residual, to show how close to linear it is. The weights omega(H)
and their derivative are computed once per step, since H changes at every step (a cost
independent of T).

Path *sampling* cost (MA-fBM against exact Davies-Harte fBM) is benchmarked separately in
``benchmarks/fbm_sampling.py``.

    python benchmarks/fsde_elbo.py [--device cpu|cuda] [--repeats 10] [--particles 16]
        [--threads N] [--quick]
"""

import argparse
import time

import pyro
import torch

from pplx.objectives import ELBO
from pplx.processes import FractionalSDE

DT = 0.02
GAMMA_MAX = 20.0


def step_fn(num_steps, num_processes, particles, device):
    """A closure doing one ELBO gradient step (loss, backward, Adam) on a fresh model."""
    pyro.clear_param_store()
    horizon = DT * num_steps
    sde = FractionalSDE(
        lambda x, t: -x,
        1.0,
        horizon=horizon,
        num_steps=num_steps,
        hurst=0.3,
        num_processes=num_processes,
        gamma_max=GAMMA_MAX,
        kind="I",
        x0_scale=0.1,
        obs_scale=0.1,
        hidden_dim=32,
    ).to(device)
    obs_t = torch.tensor([horizon], device=device)
    obs_y = torch.tensor([1.0], device=device)
    loss_fn = ELBO(num_particles=particles, stl=True, max_plate_nesting=1).differentiable_loss
    optim = torch.optim.Adam(sde.parameters(), lr=1e-3)

    def step():
        optim.zero_grad()
        loss = loss_fn(sde.model, sde.guide, obs_t, obs_y)
        loss.backward()
        optim.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def median_ms(step, repeats, warmup):
    """Median milliseconds per call over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    times.sort()
    return times[len(times) // 2]


def linear_fit(xs, ys):
    """Least-squares ``y = a + b x``; returns (a, b, largest |residual| / y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    worst = max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys))
    return a, b, worst


def sweep(label, values, make, args, device, per):
    print(f"{label:>4} {'ms/step':>9} {'ms/(step x T)':>14}")
    times = []
    for value in values:
        num_steps, num_processes = make(value)
        step = step_fn(num_steps, num_processes, args.particles, device)
        ms = median_ms(step, args.repeats, args.warmup)
        times.append(ms)
        print(f"{value:4d} {ms:9.1f} {ms / num_steps:14.3f}", flush=True)
    a, b, worst = linear_fit(list(values), times)
    print(f"  fit: ms/step = {a:.1f} + {b:.2f} {per}   (largest relative residual {worst:.1%})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="3 timed steps, 1 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"device {device}, {args.particles} particles (vectorised), dt = {DT}, "
        f"gamma_max = {GAMMA_MAX}, H learned, {torch.get_num_threads()} CPU threads; median of "
        f"{args.repeats} timed steps per setting"
    )
    print("-- T steps, K = 5")
    sweep("T", (25, 50, 100, 200), lambda t: (t, 5), args, device, "T")
    print("-- K processes, T = 50")
    sweep("K", (1, 2, 5, 10), lambda k: (50, k), args, device, "K")
    print("path sampling cost against Davies-Harte: see benchmarks/fbm_sampling.py")


if __name__ == "__main__":
    main()
