"""What tests/ and bench/ share: the two lesson scripts, imported as modules, and a quiet matplotlib."""
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
