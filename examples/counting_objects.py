"""How many objects, and where: one AIR-style model, a gradient strategy per site.

:class:`pplx.models.ObjectCountVAE` draws a count ``n`` of up to three blobs and their
positions ``where`` on a 12x12 image. ``where`` is continuous, so it is reparameterised by
default; the count is discrete, and each run below gives it another strategy with
:func:`pplx.estimators.with_estimators`, without editing the model or the guide:

* ``reinforce``: ELBO(K), score function with the leave-one-out baseline;
* ``enumerate``: ELBO(1), the exact sum over the four counts;
* ``mvd``: ELBO(1), measure-valued derivative (the program re-run at the coupled counts);
* ``iwae``: IWAE(K, local_plate="data") with REINFORCE for the count;
* ``vimco``: VIMCO(K, local_plate="data").

The images are simulated from the model, so the true counts are known: the script prints
how often the guide's most probable count is right on held-out images, and the held-out
ELBO (count summed out). Like AIR, the model has poor local optima (the guide settles on too
few objects while the unrendered positions get no signal); which strategies escape them within
the budget is what the table shows.

    python examples/counting_objects.py [--steps 600] [--particles 5] [--seed 0]
    python examples/counting_objects.py --quick
"""

import argparse
import time

import pandas as pd
import pyro
import torch

import pplx.estimators as est
import pplx.objectives as obj
from pplx.inference import SVI
from pplx.models import ObjectCountVAE


def strategies(k):
    """Name -> (objective, strategy of the count site "n")."""
    return {
        "reinforce": (obj.ELBO(k), est.Reinforce("loo")),
        "enumerate": (obj.ELBO(1), est.Enumerate()),
        "mvd": (obj.ELBO(1), est.MVD()),
        "iwae": (obj.IWAE(k, local_plate="data"), est.Reinforce("auto")),
        "vimco": (obj.VIMCO(k, local_plate="data"), None),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--particles", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps (< 30 s)")
    args = parser.parse_args()
    if args.quick:
        args.steps = 30
    torch.set_num_threads(1)
    x, counts = ObjectCountVAE().simulate(2300, torch.Generator().manual_seed(0))
    train_x, test_x, test_counts = x[:2000], x[2000:], counts[2000:]
    print(f"{len(train_x)} simulated images, batch {args.batch}, {args.steps} steps")
    rows = []
    for name, (objective, strategy) in strategies(args.particles).items():
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        scene = ObjectCountVAE()
        guide = scene.guide
        if strategy is not None:
            guide = est.with_estimators(guide, {"n": strategy})
        svi = SVI(
            scene.model, guide, loss=objective, optim_args={"lr": args.lr}, progress_bar=False
        )
        batches = [(batch,) for batch in train_x.split(args.batch)]
        start = time.perf_counter()
        svi.run(batches[0][0], num_steps=args.steps, num_samples=1, batches=batches)
        seconds = time.perf_counter() - start
        exact = est.with_estimators(scene.guide, {"n": est.Enumerate()})
        with torch.no_grad():
            elbo = -obj.ELBO(32).loss(scene.model, exact, test_x) / len(test_x)
        rows.append(
            {
                "strategy": name,
                "count accuracy": scene.count_accuracy(test_x, test_counts),
                "held-out ELBO": elbo,
                "s": seconds,
            }
        )
        print(f"  {name:10s} count accuracy {rows[-1]['count accuracy']:.2f} ({seconds:.1f} s)")
    table = pd.DataFrame(rows).set_index("strategy")
    with pd.option_context("display.float_format", "{:.3f}".format):
        print("\nheld-out count accuracy (chance 0.25) and ELBO per image")
        print(table.to_string())


if __name__ == "__main__":
    main()
