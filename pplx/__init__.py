"""pplx: programmable inference for Pyro.

The language layer: what users write next to their Pyro models (strategies, objectives,
processes, model families, metrics). The engines live in :mod:`pplx.inference`; this package
never imports them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
