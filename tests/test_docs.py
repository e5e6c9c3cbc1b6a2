"""The documentation builds with Sphinx, warnings treated as errors."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_without_warnings(tmp_path):
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "-q",
        "docs",
        str(tmp_path / "html"),
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"sphinx-build failed (exit code {proc.returncode}):\n{proc.stderr}\n{proc.stdout[-4000:]}"
    )
    assert (tmp_path / "html" / "index.html").is_file()
