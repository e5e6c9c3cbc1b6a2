"""Every example runs in its quick mode (Pyro's tests/test_examples.py pattern)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"

# script -> arguments of its quick mode; "{out}" is replaced by a temporary folder.
EXAMPLES = {
    "svi_logistic.py": ["--quick", "--out", "{out}"],
    "eight_schools.py": ["--quick"],
    "register_engine.py": ["--quick", "--out", "{out}"],
    "svgd_simplex.py": ["--quick", "--out", "{out}"],
    "svgd_logistic.py": ["--quick"],
    "vae.py": ["--quick", "--objective", "iwae", "--estimator", "reparam"],
    "sgld_bnn.py": ["--quick", "--out", "{out}"],
    "federated_sgld.py": ["--quick", "--out", "{out}"],
    "fou_bridge.py": ["--quick", "--out", "{out}"],
    "discrete_latents.py": ["--quick", "--out", "{out}"],
    "counting_objects.py": ["--quick"],
    "custom_objective.py": ["--quick"],
    "koopman_vae.py": ["--quick", "--out", "{out}"],
    "hurst_estimation.py": ["--quick", "--out", "{out}"],
    "latent_video_sde.py": ["--quick", "--out", "{out}"],
}
# further quick runs of an example, for modes its default run does not reach
EXTRA_RUNS = [
    ("koopman_vae.py", ["--quick", "--missing", "0.5", "--encoder", "cde", "--out", "{out}"]),
    ("koopman_vae.py", ["--quick", "--prior-components", "3", "--out", "{out}"]),
    ("koopman_vae.py", ["--quick", "--official", "--out", "{out}"]),
]
# figures an example must write into --out
FIGURES = {"koopman_vae.py": ("series.png", "projection.png", "eigenvalues.png")}
RUNS = [(script, args) for script, args in sorted(EXAMPLES.items())] + EXTRA_RUNS


def _run_id(script: str, args: list[str]) -> str:
    """The script and the arguments that tell its runs apart (not --quick, not --out)."""
    shown = [a for a in args if a not in ("--quick", "--out", "{out}")]
    return " ".join([script, *shown])


def test_every_example_is_listed():
    scripts = sorted(p.name for p in EXAMPLES_DIR.glob("*.py"))
    missing = sorted(set(scripts) - set(EXAMPLES))
    assert not missing, f"add these examples to EXAMPLES in tests/test_examples.py: {missing}"
    stale = sorted(set(EXAMPLES) - set(scripts))
    assert not stale, f"EXAMPLES lists scripts that do not exist: {stale}"


@pytest.mark.parametrize(("script", "args"), RUNS, ids=[_run_id(s, a) for s, a in RUNS])
def test_example_runs(script, args, tmp_path):
    args = [a.replace("{out}", str(tmp_path / "out")) for a in args]
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for name in FIGURES.get(script, ()):
        assert (tmp_path / "out" / name).is_file(), f"{script} did not write {name}"
