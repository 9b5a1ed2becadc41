"""What tests/ and bench/ share: the two lesson scripts, imported as modules, a quiet matplotlib, and what a run
of a script minimises."""
import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib: no windows in tests

import pytest

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCRIPTS = ["diffusion_spiral", "diffusion_sine"]


@pytest.fixture(scope="session", params=SCRIPTS)
def script(request):
    """Each lesson script, imported as a module: a test that takes it runs once per script."""
    return importlib.import_module(request.param)


@pytest.fixture
def run_loss(script):
    """loss(cfg, model, schedule, generator, n, device): what a run of cfg minimises on n fresh training examples
    (the sine's with their frequencies), as the script's own training_loss() gives it to train()."""
    import torch

    def loss(cfg, model, schedule, generator, n, device="cpu"):
        if hasattr(script, "make_waves"):
            data, labels = (x.to(device) for x in script.make_waves(n, torch.Generator().manual_seed(0)))
            return script.training_loss(cfg, model, data, schedule, generator, labels)
        data = script.make_data(n, torch.Generator().manual_seed(0)).to(device)
        return script.training_loss(cfg, model, data, schedule, generator)
    return loss
