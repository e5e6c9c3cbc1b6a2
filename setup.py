"""Package discovery for the pplx layout: ``inference/`` is installed as ``pplx.inference``.

Everything else lives in ``pyproject.toml``; this file only lists the packages, because
``packages.find`` cannot map a top-level folder under another package's name.
"""

from setuptools import find_packages, setup

language = find_packages(include=["pplx", "pplx.*"])
engines = ["pplx.inference"] + [
    f"pplx.inference.{name}" for name in find_packages("inference", exclude=["tests*"])
]
setup(packages=language + engines)
