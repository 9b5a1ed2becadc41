"""Fixtures for the tests (the `script` fixture, shared with bench/, is in the root conftest.py)."""
import numpy as np
import pytest
import torch

from helpers import TINY, import_script, run_main

# Two CPU cores, often shared with another process: one intra-op thread avoids oversubscription stalls
# (tiny tensors gain nothing from a second thread anyway).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def both_scripts():
    """(spiral, sine), for checks that the two copies of the shared math agree."""
    return import_script("diffusion_spiral"), import_script("diffusion_sine")


@pytest.fixture(scope="session")
def trained(script, tmp_path_factory):
    """One tiny training run per script (with plots), shared by the CLI tests."""
    out = tmp_path_factory.mktemp(f"{script.__name__}-run")
    run = run_main(script, *TINY, "--out", out)
    assert run.code == 0, run.stderr
    return dict(out=out, run=run, samples=np.load(out / "samples.npy"))
