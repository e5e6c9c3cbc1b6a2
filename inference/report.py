"""Plots and the markdown summary of a workflow run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

if TYPE_CHECKING:
    from pplx.inference.registry import FitConfig
    from pplx.inference.results import Result
    from pplx.inference.workflow import WorkflowReport

MAX_PANELS = 12


def _coordinates(result: Result, sites: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    draws = result.get_samples()
    coords = []
    for site in sites:
        flat = draws[site].reshape(draws[site].shape[0], -1).double().cpu().numpy()
        for i in range(flat.shape[1]):
            label = site if flat.shape[1] == 1 else f"{site}[{i}]"
            coords.append((label, flat[:, i]))
    return coords


def _density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    from scipy.stats import gaussian_kde

    if np.std(values) == 0:
        return np.zeros_like(grid)
    return gaussian_kde(values)(grid)


def plot_posteriors(workflow: WorkflowReport, path: Path) -> None:
    """Marginal densities of each engine over the reference's, one panel per coordinate."""
    sites = workflow.problem.sites
    reference = _coordinates(workflow.results[workflow.reference], sites)[:MAX_PANELS]
    others = {
        name: _coordinates(result, sites)[:MAX_PANELS]
        for name, result in workflow.results.items()
        if name != workflow.reference
    }
    cols = min(4, len(reference))
    rows = math.ceil(len(reference) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for index, (label, ref_values) in enumerate(reference):
        ax = axes.flat[index]
        lo, hi = np.quantile(ref_values, [0.001, 0.999])
        pad = 0.3 * (hi - lo + 1e-12)
        grid = np.linspace(lo - pad, hi + pad, 200)
        ax.fill_between(grid, _density(ref_values, grid), color="0.8", label=workflow.reference)
        for name, coords in others.items():
            ax.plot(grid, _density(coords[index][1], grid), lw=1.2, label=name)
        ax.set_title(label, fontsize=9)
        ax.set_yticks([])
    for ax in axes.flat[len(reference) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{workflow.problem.name}: posterior marginals vs {workflow.reference}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_traces(workflow: WorkflowReport, path: Path) -> None:
    """Loss curves (SVI), step-norm curves (particle methods) and log-density traces (MCMC)."""
    results = list(workflow.results.items())
    cols = min(4, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(results) :]:
        ax.axis("off")
    for ax, (name, result) in zip(axes.flat, results):
        if "loss" in result.trace and len(result.trace["loss"]):
            loss = result.trace["loss"].double().numpy()
            ax.plot(loss, lw=0.6, color="0.6")
            window = max(1, len(loss) // 50)
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window - 1, len(loss)), smooth, lw=1.2)
            ax.set_yscale("symlog")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
        elif "step_norm" in result.trace and len(result.trace["step_norm"]):
            ax.plot(result.trace["step_norm"].double().numpy(), lw=1.0)
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel("mean |update direction|")
        elif "lp" in result.sample_stats:
            lp = result.sample_stats["lp"].double().cpu().numpy()
            for chain in range(lp.shape[0]):
                ax.plot(lp[chain], lw=0.6, label=f"chain {chain}")
            ax.set_xlabel("draw")
            ax.set_ylabel("log joint")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown_table(workflow: WorkflowReport) -> str:
    head = "| engine | mean err max (z) | mean err rms (z) | sd err | ESS | ESS kind | time (s) |"
    lines = [head, "|" + "---|" * 7]
    for row in workflow.comparisons:
        if row.error:
            lines.append(f"| {row.engine} | failed: {row.error.splitlines()[0]} | | | | | |")
            continue
        lines.append(
            f"| {row.engine} | {row.mean_error_max:.3f} | {row.mean_error_rms:.3f} | "
            f"{100 * row.sd_error:.1f}% | {row.ess:.0f} | {row.ess_kind} | {row.wall_time:.1f} |"
        )
    return "\n".join(lines)


def write_report(workflow: WorkflowReport, config: FitConfig) -> list[str]:
    """Write plots, ``summary.md`` and ``comparison.json`` into the report folder."""
    out = workflow.out
    written = []
    if len(workflow.results) > 0:
        plot_posteriors(workflow, out / "posteriors.png")
        plot_traces(workflow, out / "traces.png")
        written += ["posteriors.png", "traces.png"]
    (out / "comparison.json").write_text(
        json.dumps([row.__dict__ for row in workflow.comparisons], indent=2, default=str)
    )
    written.append("comparison.json")
    notes = []
    for name, result in workflow.results.items():
        facts = ", ".join(
            f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
            for k, v in result.info.items()
            if isinstance(v, (int, float, str, bool))
        )
        notes.append(f"- **{name}**: {facts}")
    lines = [
        f"# pplx workflow report: {workflow.problem.name}",
        "",
        workflow.problem.description,
        "",
        f"Reference: `{workflow.reference}`. Seed {config.seed}, device `{config.device}`, "
        f"{'quick' if config.quick else 'full'} mode, torch {torch.__version__}.",
        "",
        "## Comparison with the reference",
        "",
        "Errors are standardised by the reference posterior's standard deviation, over the "
        f"coordinates of {', '.join(f'`{s}`' for s in workflow.problem.sites)}. ESS is the "
        "minimum bulk effective sample size for MCMC draws, the importance-weighted "
        "(Kish) effective sample size for variational draws (how many exact posterior draws "
        "the guide's draws are worth), and the number of particles for particle methods.",
        "",
        _markdown_table(workflow),
        "",
        "## Engines",
        "",
        *notes,
        "",
        "## Figures",
        "",
        "![posterior marginals](posteriors.png)",
        "",
        "![loss and log-density traces](traces.png)",
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in [*workflow.files, *written, "summary.md"]],
        "",
        "Open an engine's draws with `arviz.from_netcdf('<engine>.nc')`.",
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))
    written.append("summary.md")
    return written
