"""Data files bundled with pplx.timeseries (see README.md here); no code."""
