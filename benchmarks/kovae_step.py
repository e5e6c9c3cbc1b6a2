r"""One KoVAE training step: Pyro ``Trace_ELBO`` vs pplx ``ELBO`` vs ``ELBO().compile()``.

:class:`pplx.models.KoopmanVAE` on the sine benchmark (5 features, length 24, batch 64, the
official loss weights), trained by ``pyro.infer.SVI`` with Pyro's Adam, for two networks:
the default (one-layer GRUs) and the official code's (three-layer GRUs, bidirectional
decoder, encoder batch norm). Each (network, objective) pair gets a fresh parameter store and
is timed after a warm-up, one after the other in this run.

At this batch size a step is bound by per-operation overhead (several thousand small ATen
operations), not arithmetic, so a GPU helps little. The compiled objective replays the
recorded operations, and torch's GRU records as one set of operations per time step (on
CUDA with cuDNN off: cuDNN's RNN cannot be recorded), where an eager call runs the whole
sequence in C++ or one cuDNN kernel.

    python benchmarks/kovae_step.py [--device cpu|cuda] [--steps 40] [--quick]
"""

import argparse
import itertools

import pyro
import torch
from timing import ms_per_call

from pplx.models import KoopmanVAE
from pplx.objectives import ELBO
from pplx.timeseries import sine_data

NETWORKS = {
    "default": {},
    "official": {"num_layers": 3, "bidirectional_decoder": True, "encoder_batch_norm": True},
}
OBJECTIVES = {
    "pyro Trace_ELBO": pyro.infer.Trace_ELBO,
    "pplx ELBO": ELBO,
    "pplx compiled": lambda: ELBO().compile(),
}


def step_fn(network, objective, data, device):
    """A closure running one SVI step on a fresh model and parameter store."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    net = KoopmanVAE(5, 16, 20, beta=0.007, alpha=0.005, **NETWORKS[network]).to(device)
    svi = pyro.infer.SVI(net.model, net.guide, pyro.optim.Adam({"lr": 7e-4}), objective())
    gen = torch.Generator().manual_seed(0)
    batches = itertools.cycle(
        [data[torch.randint(len(data), (64,), generator=gen)] for _ in range(8)]
    )

    def step():
        svi.step(next(batches))
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="3 timed steps, 1 warm-up")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps, warmup = (3, 1) if args.quick else (args.steps, 10)
    data = sine_data(2000, seq_len=24, dim=5, generator=torch.Generator().manual_seed(0))
    data = data.to(device)
    print(
        f"KoVAE SVI step, sine, batch 64, device={device}, {torch.get_num_threads()} thread(s), "
        f"{steps} timed steps after {warmup} warm-up; ms per step (ratio to Pyro)"
    )
    print(f"{'network':10s}" + "".join(f"{name:>24s}" for name in OBJECTIVES))
    for network in NETWORKS:
        times = {}
        for name, objective in OBJECTIVES.items():
            times[name] = ms_per_call(step_fn(network, objective, data, device), steps, warmup)
        base = times["pyro Trace_ELBO"]
        cells = "".join(f"{f'{t:8.1f} ({t / base:4.2f}x)':>24s}" for t in times.values())
        print(f"{network:10s}{cells}", flush=True)


if __name__ == "__main__":
    main()
