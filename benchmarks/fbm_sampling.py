"""Cost of sampling Markov-approximate fBM paths against exact Davies-Harte sampling.

For growing horizons T at a fixed step dt = 1/256 (so n = 256 T steps), the time to draw
``--paths`` paths with

* ``sample_fbm``: exact fBM by Davies-Harte (circulant embedding, FFT of size 2n);
* ``sample_ma_fbm(method="exact")``: exact Ornstein-Uhlenbeck transitions, K = 5 and 10,
  evaluated as a sum of K FFT convolutions on the uniform grid;
* ``sample_ma_fbm(method="euler")``: Euler-Maruyama, one FFT convolution (K = 5);
* the same exact transitions stepped one time step at a time (what an SDE solver does, and
  what ``sample_ma_fbm`` falls back to on an irregular grid), for the smaller n only;
* PyPI ``fbm`` (NumPy Davies-Harte, one path per call), if installed
  (``pip install fbm``), for the smaller n only.

Columns are milliseconds per call and the ratio to Davies-Harte. Everything runs in float64
(``sample_ma_fbm`` works in float64 internally). The weights are computed once outside the
timed calls (``weights=``), as a training loop with a fixed H would; computing them costs a
few milliseconds (``fbm_weights`` row).

    python benchmarks/fbm_sampling.py [--paths 256] [--device cpu] [--max-log2-t 8] [--quick]
"""

import argparse
import math
import time

import torch

from pplx.processes import fbm as fbm_module
from pplx.processes import fbm_weights, geometric_gammas, sample_fbm, sample_ma_fbm

HURST = 0.3
STEPS_PER_UNIT = 256
GAMMA_MAX = 20.0  # gamma_max * dt = 0.078 < 0.5: Euler is stable


def timed(fn, device, repeats):
    """Median milliseconds per call over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    times.sort()
    return times[len(times) // 2]


def loop_sampler(weights, gammas, n, paths, device):
    """Exact transitions stepped one at a time (``_ma_paths_loop``), noise drawn up front."""
    steps = torch.full((n,), 1.0 / STEPS_PER_UNIT, dtype=torch.float64, device=device)

    def run():
        noise = torch.randn(paths, n, gammas.numel(), dtype=torch.float64, device=device)
        noise0 = torch.randn(paths, gammas.numel(), dtype=torch.float64, device=device)
        return fbm_module._ma_paths_loop(weights, gammas, steps, "I", "exact", noise, noise0)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-log2-t", type=int, default=8, help="largest T is 2**this")
    parser.add_argument("--loop-max-n", type=int, default=4096, help="largest n for loops")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="T up to 4, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.max_log2_t, args.repeats, args.loop_max_n = 2, 2, 512
    device = torch.device(args.device)
    try:
        import fbm as pypi_fbm  # optional
    except ImportError:
        pypi_fbm = None

    print(
        f"device {device}, {args.paths} paths, H = {HURST}, dt = 1/{STEPS_PER_UNIT}, "
        f"gamma_max = {GAMMA_MAX}, float64; ms per call (ratio to Davies-Harte)"
    )
    columns = ["DH", "MA K=5", "MA K=10", "Euler K=5", "loop K=5"]
    if pypi_fbm is not None:
        columns.append("PyPI fbm")
    print(f"{'T':>5} {'n':>7} " + " ".join(f"{c:>18}" for c in columns))
    for log2_t in range(0, args.max_log2_t + 1, 2):
        horizon = float(2**log2_t)
        n = STEPS_PER_UNIT * 2**log2_t
        grid = (horizon, n)
        row = {}
        row["DH"] = timed(
            lambda grid=grid: sample_fbm(grid, HURST, args.paths, device=device),
            device,
            args.repeats,
        )
        for k in (5, 10):
            gammas = geometric_gammas(k, GAMMA_MAX, dtype=torch.float64, device=device)
            weights = fbm_weights(HURST, gammas, horizon)
            row[f"MA K={k}"] = timed(
                lambda grid=grid, g=gammas, w=weights: sample_ma_fbm(
                    grid, None, num_paths=args.paths, gammas=g, weights=w, device=device
                ),
                device,
                args.repeats,
            )
            if k == 5:
                row["Euler K=5"] = timed(
                    lambda grid=grid, g=gammas, w=weights: sample_ma_fbm(
                        grid,
                        None,
                        num_paths=args.paths,
                        gammas=g,
                        weights=w,
                        method="euler",
                        device=device,
                    ),
                    device,
                    args.repeats,
                )
                if n <= args.loop_max_n:
                    row["loop K=5"] = timed(
                        loop_sampler(weights, gammas, n, args.paths, device), device, 1
                    )
        if pypi_fbm is not None and n <= args.loop_max_n:

            def pypi(n=n, horizon=horizon):
                for _ in range(args.paths):
                    pypi_fbm.FBM(n=n, hurst=HURST, length=horizon, method="daviesharte").fbm()

            row["PyPI fbm"] = timed(pypi, torch.device("cpu"), 1)
        cells = []
        for c in columns:
            if c in row:
                cells.append(f"{row[c]:9.2f} ({row[c] / row['DH']:5.1f}x)")
            else:
                cells.append(f"{'-':>18}")
        print(f"{horizon:5.0f} {n:7d} " + " ".join(cells))
    gammas = geometric_gammas(5, GAMMA_MAX, dtype=torch.float64, device=device)
    ms = timed(lambda: fbm_weights(torch.tensor(HURST), gammas, 1.0), device, args.repeats)
    hurst = torch.tensor(HURST, dtype=torch.float64, requires_grad=True)
    ms_grad = timed(
        lambda: torch.autograd.grad(fbm_weights(hurst, gammas, 1.0).sum(), hurst),
        device,
        args.repeats,
    )
    print(f"fbm_weights (K = 5): {ms:.2f} ms, with gradient in H: {ms_grad:.2f} ms")
    assert math.isfinite(ms)


if __name__ == "__main__":
    main()
