import os

import pyro
import pytest
import torch

# Progress bars off in tests (they are on only on a terminal anyway).
os.environ.setdefault("PPLX_PROGRESS", "0")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
