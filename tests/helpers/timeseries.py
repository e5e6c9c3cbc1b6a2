"""Where the tests find the time-series benchmark files that are not bundled."""

from __future__ import annotations

import os
from pathlib import Path

from pplx.timeseries.data import DATA_DIR_ENV

REPO = Path(__file__).resolve().parents[2]


def shared_timeseries_dir() -> Path:
    """``$PPLX_TIMESERIES_DATA`` if set, else the project's ``../shared/data/timeseries/``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return REPO.parent / "shared" / "data" / "timeseries"
