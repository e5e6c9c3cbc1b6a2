"""The Bayesian workflow behind ``pplx demo``: fit one model with every engine, compare, report.

Steps: build the problem (model + bundled data), check the output folder and the engine names
*before* any fitting, fit the reference (Pyro NUTS) and every registered engine with the same
seed, add the pointwise log-likelihood and posterior predictive to each result, write one
netCDF file per engine as soon as it is done (so a later failure loses nothing), then compare
each engine with the reference and write plots and a markdown summary.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from pplx import datasets, models
from pplx.inference.checkpoint import check_writable
from pplx.inference.registry import FitConfig, Problem, engines, get_engine
from pplx.inference.results import Result


def logistic_problem(device: torch.device, dtype: torch.dtype) -> Problem:
    """Bayesian logistic regression on the breast-cancer data (569 x 30, standardised)."""
    data = datasets.breast_cancer(dtype=dtype).to(device)
    return Problem(
        "logistic",
        "Bayesian logistic regression, w ~ N(0, 1), b ~ N(0, 5^2); " + data.description,
        models.logistic_regression,
        (data.x, data.y),
        sites=("w", "b"),
        num_data=data.x.shape[0],
        subsample_kwarg="subsample_size",
    )


def eight_schools_problem(device: torch.device, dtype: torch.dtype) -> Problem:
    """Non-centred eight schools."""
    data = datasets.eight_schools(dtype=dtype).to(device)
    return Problem(
        "eight_schools",
        "Non-centred hierarchical model; " + data.description,
        models.eight_schools,
        (data.x, data.y),
        sites=("mu", "tau", "theta_raw"),
        num_data=8,
    )


PROBLEMS: dict[str, Callable[[torch.device, torch.dtype], Problem]] = {
    "logistic": logistic_problem,
    "eight_schools": eight_schools_problem,
}


@dataclass
class Comparison:
    """How one engine's posterior compares with the reference's.

    Attributes:
        engine: Engine name.
        mean_error_max: Largest ``|mean - mean_ref| / sd_ref`` over all compared coordinates.
        mean_error_rms: Root mean square of the same standardised errors.
        sd_error: Mean of ``|sd / sd_ref - 1|`` over coordinates.
        ess: Effective sample size: minimum bulk ESS for MCMC draws, the importance-
            weighted (Kish) ESS for variational draws, the number of particles for particle
            methods.
        ess_kind: ``"bulk"``, ``"importance"`` or ``"particles"``.
        wall_time: Seconds spent fitting.
        error: The error message if the engine failed.
    """

    engine: str
    mean_error_max: float = math.nan
    mean_error_rms: float = math.nan
    sd_error: float = math.nan
    ess: float = math.nan
    ess_kind: str = ""
    wall_time: float = math.nan
    error: str = ""


def _flat(result: Result, sites: Sequence[str]) -> torch.Tensor:
    draws = result.get_samples()
    return torch.cat([draws[s].reshape(draws[s].shape[0], -1) for s in sites], -1).double().cpu()


def compare(result: Result, reference: Result, sites: Sequence[str]) -> Comparison:
    """Standardised posterior mean and sd errors of ``result`` against ``reference``."""
    ref, got = _flat(reference, sites), _flat(result, sites)
    ref_mean, ref_sd = ref.mean(0), ref.std(0)
    z = (got.mean(0) - ref_mean).abs() / ref_sd
    importance = result.importance_ess()
    if importance is not None:
        ess, kind = importance, "importance"
    elif "num_particles" in result.info:  # interacting particles are not a Markov chain
        ess, kind = float(result.info["num_particles"]), "particles"
    else:
        ess_all = result.effective_sample_size()
        ess = float(min(ess_all[s].min() for s in sites))
        kind = "bulk"
    return Comparison(
        engine=result.engine,
        mean_error_max=float(z.max()),
        mean_error_rms=float(z.square().mean().sqrt()),
        sd_error=float((got.std(0) / ref_sd - 1).abs().mean()),
        ess=ess,
        ess_kind=kind,
        wall_time=result.wall_time,
    )


@dataclass
class WorkflowReport:
    """What one workflow run produced.

    Attributes:
        problem: The fitted problem.
        reference: Name of the reference engine.
        results: Engine name to Result (failed engines are missing).
        comparisons: One row per engine, reference first.
        out: The report folder.
        files: Files written, relative to ``out``.
    """

    problem: Problem
    reference: str
    results: dict[str, Result]
    comparisons: list[Comparison]
    out: Path
    files: list[str] = field(default_factory=list)


def format_table(rows: Sequence[Comparison]) -> str:
    """The comparison as an aligned plain-text table."""
    header = ("engine", "mean err max", "mean err rms", "sd err", "ESS", "ESS kind", "time s")
    lines = []
    for row in rows:
        if row.error:
            lines.append((row.engine, "failed", "", "", "", "", row.error.splitlines()[0][:60]))
            continue
        lines.append(
            (
                row.engine,
                f"{row.mean_error_max:.3f}",
                f"{row.mean_error_rms:.3f}",
                f"{100 * row.sd_error:.1f}%",
                f"{row.ess:.0f}",
                row.ess_kind,
                f"{row.wall_time:.1f}",
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in lines]
    return "\n".join(out)


def resolve_engines(names: Sequence[str] | None, reference: str) -> list[str]:
    """Engine names to run after the reference; unknown names raise before any work."""
    known = engines()
    get_engine(reference)
    if not names:
        return [n for n in known if n != reference]
    for name in names:
        get_engine(name)
    return [n for n in names if n != reference]


def run_workflow(
    problem: Problem,
    out: str | Path,
    config: FitConfig,
    engine_names: Sequence[str] | None = None,
    reference: str = "nuts",
    log: Callable[[str], None] = print,
) -> WorkflowReport:
    """Fit ``problem`` with the reference and each engine, compare them, write the report.

    Args:
        problem: Model and data.
        out: Report folder (created; must be writable).
        config: Shared settings.
        engine_names: Engines to compare (default: every registered engine).
        reference: Engine whose posterior is the yardstick.
        log: Where progress lines go.

    Returns:
        The :class:`WorkflowReport`; its files are already on disk.
    """
    from pplx.inference import report

    out = Path(out)
    check_writable(out / "summary.md", what="report folder")
    names = resolve_engines(engine_names, reference)
    results: dict[str, Result] = {}
    failures: dict[str, str] = {}
    files: list[str] = []
    for name in [reference, *names]:
        spec = get_engine(name)
        log(f"fitting {name}: {spec.description}")
        pyro.clear_param_store()
        pyro.set_rng_seed(config.seed)
        start = time.perf_counter()
        try:
            result = spec.fit(problem, config)
            if math.isnan(result.wall_time):
                result.wall_time = time.perf_counter() - start
            result.add_log_likelihood(problem.model, *problem.args, **problem.kwargs)
            result.add_posterior_predictive(problem.model, *problem.args, **problem.kwargs)
        except Exception as error:  # noqa: BLE001 - one engine's failure must not lose the rest
            if name == reference:
                raise
            failures[name] = f"{type(error).__name__}: {error}"
            log(f"  {name} failed: {failures[name]}")
            (out / f"{name}.error.txt").write_text(traceback.format_exc())
            files.append(f"{name}.error.txt")
            continue
        results[name] = result
        path = out / f"{name}.nc"
        result.to_arviz().to_netcdf(str(path))
        files.append(path.name)
        log(f"  done in {result.wall_time:.1f} s -> {path}")
    comparisons = []
    for name in [reference, *names]:
        if name in failures:
            comparisons.append(Comparison(name, error=failures[name]))
        else:
            comparisons.append(compare(results[name], results[reference], problem.sites))
    workflow = WorkflowReport(problem, reference, results, comparisons, out, files)
    workflow.files += report.write_report(workflow, config)
    return workflow
