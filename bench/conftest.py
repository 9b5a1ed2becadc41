"""Shared fixtures for the benchmarks: the two lesson scripts, the devices, and honest CUDA timing."""
import importlib
import os
import sys
import time

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPTS = ["diffusion_spiral", "diffusion_sine"]
MODELS = ["mlp", "unet"]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA GPU visible to torch on this machine")),
]


def sync(device):
    """CUDA runs asynchronously: wait for the queue to drain so a timer sees the real work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """Wrap fn so that the GPU is idle when the timer starts and finished when it stops."""
    def run():
        sync(device)
        out = fn()
        sync(device)
        return out
    return run


def forward_seconds(model, x, t, device, repeats=20):
    """Median time of one model forward on this batch (no_grad, after warm-up), for loop efficiency."""
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            sync(device)
            start = time.perf_counter()
            model(x, t)
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def describe(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@pytest.fixture(params=SCRIPTS)
def script(request):
    return importlib.import_module(request.param)


@pytest.fixture(params=MODELS)
def kind(request):
    return request.param


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def setup(script, kind, device, benchmark):
    """The config a user gets from `--model KIND` (the script's own parser and defaults), its schedule and
    model on the device; common extra_info filled in."""
    cfg = script.parse_args(["--model", kind])
    schedule = script.make_schedule(cfg.timesteps, cfg.schedule, device)
    model = script.build_model(kind, cfg).to(device)
    benchmark.extra_info.update(device=describe(device), torch=torch.__version__,
                                threads=torch.get_num_threads(),
                                parameters=sum(p.numel() for p in model.parameters()))
    return cfg, schedule, model
