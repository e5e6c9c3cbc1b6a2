"""Eight schools: NUTS (reference) and mean-field SVI, compared through ArviZ.

python examples/eight_schools.py --quick
"""

import argparse

import arviz as az
import pyro
import torch
from pyro.infer.autoguide import AutoNormal

from pplx.datasets import eight_schools as eight_schools_data
from pplx.inference import NUTS, SVI
from pplx.models import eight_schools


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = eight_schools_data(dtype=torch.float64)

    pyro.set_rng_seed(args.seed)
    nuts = NUTS(eight_schools, num_chains=1, jit_compile=False).run(
        data.x,
        data.y,
        num_samples=200 if args.quick else 2000,
        warmup_steps=200 if args.quick else 1000,
    )
    pyro.set_rng_seed(args.seed)
    svi = SVI(eight_schools, AutoNormal(eight_schools), optim_args={"lr": 0.02}).run(
        data.x, data.y, num_steps=300 if args.quick else 5000, num_samples=1000
    )
    for result in (nuts, svi):
        result.add_log_likelihood(eight_schools, data.x, data.y)
        print(f"--- {result.engine} ({result.wall_time:.1f} s)")
        print(az.summary(result.to_arviz(), var_names=["mu", "tau"], kind="stats").round(2))
    compared = az.compare({"nuts": nuts.to_arviz(), "svi": svi.to_arviz()}, ic="loo")
    print(compared[["elpd_loo", "p_loo"]].round(2))


if __name__ == "__main__":
    main()
