import json
import shutil
import subprocess
import sys
from pathlib import Path

import arviz as az
import pytest
import torch

from pplx.inference import FitConfig, Result, engines, get_engine, register_engine
from pplx.inference import registry as registry_module
from pplx.inference.cli import main
from pplx.inference.workflow import compare, eight_schools_problem, format_table, run_workflow


@pytest.fixture
def temporary_engine():
    """Register engines for one test only."""
    added = []

    def register(name, fit, reference=False):
        register_engine(name, "test engine", reference)(fit)
        added.append(name)

    yield register
    for name in added:
        registry_module._REGISTRY.pop(name, None)


def test_builtin_engines_are_registered():
    known = engines()
    assert {"nuts", "svi-meanfield", "svi-fullrank", "svi-iwae"} <= set(known)
    assert known["nuts"].reference


def test_unknown_engine_names_the_available_ones():
    with pytest.raises(KeyError, match="unknown engine 'nope'.*svi-meanfield"):
        get_engine("nope")


def test_registering_a_different_function_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_engine("nuts", "another")(lambda problem, config: None)


def test_compare_against_itself_is_exact():
    draws = {
        "mu": torch.randn(200),
        "tau": torch.randn(200).exp(),
        "theta_raw": torch.randn(200, 8),
    }
    result = Result.from_draws("x", draws)
    row = compare(result, result, ("mu", "tau", "theta_raw"))
    assert row.mean_error_max == 0 and row.sd_error == 0
    assert row.ess_kind == "bulk" and row.ess > 50


def test_workflow_keeps_going_when_an_engine_fails(tmp_path, temporary_engine):
    def broken(problem, config):
        raise RuntimeError("boom")

    def prior_draws(problem, config):
        n = config.num_samples
        return Result.from_draws(
            "prior",
            {
                "mu": 5 * torch.randn(n, dtype=torch.float64),
                "tau": (5 * torch.randn(n, dtype=torch.float64)).abs(),
                "theta_raw": torch.randn(n, 8, dtype=torch.float64),
            },
        )

    temporary_engine("test-broken", broken)
    temporary_engine("test-prior", prior_draws, reference=True)  # no MCMC needed
    problem = eight_schools_problem(torch.device("cpu"), torch.float64)
    lines = []
    report = run_workflow(
        problem,
        tmp_path / "report",
        FitConfig(quick=True, num_samples=50, progress_bar=False),
        ["test-broken"],
        reference="test-prior",
        log=lines.append,
    )
    rows = {row.engine: row for row in report.comparisons}
    assert "boom" in rows["test-broken"].error
    assert (tmp_path / "report" / "test-prior.nc").exists()
    assert "RuntimeError: boom" in (tmp_path / "report" / "test-broken.error.txt").read_text()
    assert "failed" in format_table(report.comparisons)
    assert any("test-broken failed" in line for line in lines)


def test_demo_quick_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "demo",
            "--quick",
            "--model",
            "eight_schools",
            "--engines",
            "svi-meanfield",
            "--num-samples",
            "100",
            "--out",
            str(out),
            "--no-progress",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean err max" in printed and "svi-meanfield" in printed
    for name in ("nuts.nc", "svi-meanfield.nc", "posteriors.png", "traces.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    idata = az.from_netcdf(str(out / "svi-meanfield.nc"))
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        assert group in idata.groups(), group
    assert idata.posterior["theta_raw"].shape == (1, 100, 8)
    summary = (out / "summary.md").read_text()
    assert "| svi-meanfield |" in summary and "![posterior marginals](posteriors.png)" in summary
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["engine"] for r in rows] == ["nuts", "svi-meanfield"]
    # The mean-field fit of eight schools is rough, but not wildly off the NUTS reference.
    assert rows[1]["mean_error_rms"] < 1.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--engines", "nope"], "unknown engine 'nope'"),
        (["demo", "--reference", "nope"], "unknown engine 'nope'"),
        (["demo", "--num-samples", "1"], "--num-samples must be at least 2"),
    ],
)
def test_demo_bad_arguments_fail_before_any_work(argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        main([*argv, "--out", str(tmp_path / "r")])


def test_demo_unwritable_out(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="cannot write the report folder"):
        main(["demo", "--out", str(blocker / "report")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_cuda_without_gpu(tmp_path):
    with pytest.raises(SystemExit, match="sees no GPU"):
        main(["demo", "--device", "cuda", "--out", str(tmp_path / "r")])


def test_engines_command(capsys):
    assert main(["engines"]) == 0
    out = capsys.readouterr().out
    assert "nuts" in out and "(reference)" in out and "svi-fullrank" in out


def test_module_entry_point_and_console_script():
    proc = subprocess.run(
        [sys.executable, "-m", "pplx.inference", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("pplx ")
    script = shutil.which("pplx", path=str(Path(sys.executable).parent))
    assert script is not None, "the pplx console script is not installed next to python"
    proc = subprocess.run([script, "engines"], capture_output=True, text=True)
    assert proc.returncode == 0 and "svi-meanfield" in proc.stdout
