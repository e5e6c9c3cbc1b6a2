"""The distribution installs both import packages, editable and as a wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env=None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_editable_install_maps_inference_folder(tmp_path):
    # Run from a folder outside the repository so only the installed mapping can be used.
    out = _run(
        [
            sys.executable,
            "-c",
            "import pplx, pplx.inference, pplx.inference.svi; "
            "print(pplx.__file__); print(pplx.inference.__file__)",
        ],
        cwd=tmp_path,
    )
    language, engines = out.split()
    assert Path(language).resolve() == (ROOT / "pplx" / "__init__.py").resolve()
    assert Path(engines).resolve() == (ROOT / "inference" / "__init__.py").resolve()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dist),
            str(ROOT),
        ],
        cwd=ROOT,
    )
    (path,) = dist.glob("pyro_pplx-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "inference").rglob("*.py")}
    expected = {"pplx/inference/" + s[len("inference/") :] for s in sources}
    expected |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "pplx").rglob("*.py")}
    # package data: the type marker and the bundled stocks benchmark with its README
    bundled = ROOT / "pplx" / "timeseries" / "_bundled"
    data = [p for p in bundled.iterdir() if p.suffix in (".csv", ".md")]
    expected |= {"pplx/py.typed"} | {p.relative_to(ROOT).as_posix() for p in data}
    assert "pplx/timeseries/_bundled/stock_data.csv" in expected
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert not any(n.startswith(("inference/", "tests/", "examples/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pplx = pplx.inference.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_imports_outside_the_repository(wheel, tmp_path):
    target = tmp_path / "site"
    _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        cwd=tmp_path,
    )
    # Put the wheel's files first; drop the editable install's finder so it cannot help.
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONNOUSERSITE="1")
    env.pop("PPLX_TIMESERIES_DATA", None)  # the stocks data must come from the wheel
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if 'editable' not in getattr(f, '__module__', '')]; "
        "import pplx, pplx.inference; from pplx.inference import SVI, Result; "
        "from pplx.timeseries import load_stocks; assert load_stocks().shape == (3685, 6); "
        "from pplx.timeseries.data import BUNDLED_DIR; print(BUNDLED_DIR); "
        "print(pplx.__file__); print(pplx.inference.__file__)"
    )
    out = _run([sys.executable, "-c", code], cwd=tmp_path, env=env)
    for line in out.split():
        assert Path(line).resolve().is_relative_to(target.resolve()), out
