"""Fixtures for the tests (the `script` and `run_loss` fixtures, shared with bench/, are in the root conftest.py)."""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# The cores of both lessons, run as files of their own (test_layers.py), take a minute or two of one core each:
# they start in the background as soon as their test is collected, and run while the other tests do.
CORE_TEST = "test_the_core_alone_draws_samples_at_the_default_runs_quality"
_core_runs = {}


def pytest_collection_modifyitems(session, config, items):
    if any(item.name == CORE_TEST for item in items) and not _core_runs:
        from test_layers import core_program
        folder = Path(tempfile.mkdtemp(prefix="core-"))
        env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")   # one core each, beside the suite
        for name in ["diffusion_spiral", "diffusion_sine"]:
            (folder / f"{name}_core.py").write_text(core_program(name, folder / f"{name}.npy"))
            log = open(folder / f"{name}.log", "w+")
            process = subprocess.Popen([sys.executable, f"{name}_core.py"], cwd=folder, env=env,
                                       stdout=subprocess.DEVNULL, stderr=log)
            _core_runs[name] = (process, time.perf_counter(), log, folder / f"{name}.npy")


def pytest_unconfigure(config):
    for process, *_ in _core_runs.values():
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="session")
def core_runs():
    """A function that waits for the core runs: {name: (exit code, seconds, stderr, samples file)}."""
    def wait():
        results = {}
        for name, (process, start, log, out) in _core_runs.items():
            code = process.wait(timeout=900)
            seconds = time.perf_counter() - start                 # at most: it may have finished earlier
            log.seek(0)
            results[name] = (code, seconds, log.read(), out)
        return results
    return wait
