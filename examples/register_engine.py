"""Add your own engine to the pplx workflow: it joins `pplx demo` and the comparison table.

Here a Laplace approximation (MAP with AutoLaplaceApproximation, then a Gaussian at the mode)
registers as "laplace" and is compared with NUTS on the eight-schools model.

    python examples/register_engine.py --quick --out laplace-report
"""

import argparse

import pyro
import torch
from pyro.infer.autoguide import AutoLaplaceApproximation

from pplx.inference import SVI, FitConfig, Problem, Result, register_engine
from pplx.inference.workflow import eight_schools_problem, format_table, run_workflow


@register_engine("laplace", "Laplace approximation at the MAP (AutoLaplaceApproximation)")
def fit_laplace(problem: Problem, config: FitConfig) -> Result:
    guide = AutoLaplaceApproximation(problem.model)
    svi = SVI(problem.model, guide, optim_args={"lr": 0.05}, name="laplace-map")
    fit = svi.run(*problem.args, num_steps=300 if config.quick else 2000, num_samples=2)
    with svi.params_scope(fit.state):
        laplace = guide.laplace_approximation(*problem.args)
        result = Result.from_guide(
            "laplace", problem.model, laplace, *problem.args, num_samples=config.num_samples
        )
    result.wall_time = fit.wall_time
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="laplace-report")
    args = parser.parse_args(argv)
    problem = eight_schools_problem(torch.device("cpu"), torch.float64)
    config = FitConfig(quick=args.quick, num_samples=200 if args.quick else 1000)
    pyro.set_rng_seed(0)
    report = run_workflow(problem, args.out, config, engine_names=["laplace", "svi-meanfield"])
    print(format_table(report.comparisons))


if __name__ == "__main__":
    main()
