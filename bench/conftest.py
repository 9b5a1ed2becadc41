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


def loop_efficiency(loop, model, x, t, steps, device, pairs=3, calls=20):
    """(steps x one model forward) / one loop, each pair measured back to back so that both see the same
    machine state (a shared CPU's speed drifts over a run); the median of `pairs` ratios."""
    ratios = []
    with torch.no_grad():
        for _ in range(pairs):
            sync(device)
            start = time.perf_counter()
            loop()
            sync(device)
            loop_time = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(calls):
                model(x, t)
            sync(device)
            forward = (time.perf_counter() - start) / calls
            ratios.append(steps * forward / loop_time)
    return sorted(ratios)[len(ratios) // 2], forward


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


# The sampling benchmarks time a model that has trained a little, as a user's has: an untrained spiral model
# lets x grow to about 1e4 over the loop, where SiLU's exp takes a slow path and every step costs about 2x.
TRAIN_BEFORE_SAMPLING = 300
_trained = {}


@pytest.fixture
def trained(script, kind, device, setup):
    """setup's config, schedule and model, after TRAIN_BEFORE_SAMPLING steps of the script's own train()
    (once per script, model and device; later tests reuse the weights)."""
    cfg, schedule, model = setup
    key = (script.__name__, kind, device)
    if key not in _trained:
        steps, log_every = cfg.steps, cfg.log_every
        cfg.steps = cfg.log_every = TRAIN_BEFORE_SAMPLING
        data = script.make_data(10_000, torch.Generator().manual_seed(0)).to(device)
        script.train(model, data, schedule, cfg, torch.Generator(device=device).manual_seed(0),
                     log=lambda *args: None)
        cfg.steps, cfg.log_every = steps, log_every
        _trained[key] = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(_trained[key])
    return cfg, schedule, model.eval()
