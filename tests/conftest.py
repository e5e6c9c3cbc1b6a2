import os

import pyro
import pytest
import torch

# Progress bars off in tests (they are on only on a terminal anyway).
os.environ.setdefault("PPLX_PROGRESS", "0")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: test tensors are small, and on oversubscribed cores (the suite
    beside other work) extra threads slowed 1000-step runs by an order of magnitude."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
