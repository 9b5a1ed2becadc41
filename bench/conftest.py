"""Fixtures for the benchmarks: models, devices and trained weights (the `script` fixture, shared with
tests/, is in the root conftest.py; the timing helpers are in timing.py)."""
import pytest
import torch

from timing import describe

MODELS = ["mlp", "unet"]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA GPU visible to torch on this machine")),
]


@pytest.fixture(params=MODELS)
def kind(request):
    return request.param


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=["eps"])
def objective(request):
    """What the model learns: DDPM's noise (eps), or flow matching's velocity (tests ask for it indirectly)."""
    return request.param


@pytest.fixture
def setup(script, kind, device, objective, benchmark):
    """The config a user gets from `--model KIND --objective OBJECTIVE` (the script's own parser and defaults), its
    schedule and model on the device; common extra_info filled in."""
    cfg = script.parse_args(["--model", kind, "--objective", objective])
    schedule = script.make_schedule(cfg.timesteps, cfg.schedule, device)
    model = script.network(cfg, schedule).to(device)
    benchmark.extra_info.update(device=describe(device), torch=torch.__version__,
                                threads=torch.get_num_threads(),
                                parameters=sum(p.numel() for p in model.parameters()))
    return cfg, schedule, model


# The sampling benchmarks time a model that has trained a little, as a user's has: an untrained spiral model
# lets x grow to about 1e4 over the loop, where SiLU's exp takes a slow path and every step costs about 2x.
TRAIN_BEFORE_SAMPLING = 300
_trained = {}


@pytest.fixture
def trained(script, kind, device, objective, setup, run_loss):
    """setup's config, schedule and model, after TRAIN_BEFORE_SAMPLING steps of the script's own train()
    (once per script, model, device and objective; later tests reuse the weights)."""
    cfg, schedule, model = setup
    key = (script.__name__, kind, device, objective)
    if key not in _trained:
        steps, log_every = cfg.steps, cfg.log_every
        cfg.steps = cfg.log_every = TRAIN_BEFORE_SAMPLING
        gen = torch.Generator(device=device).manual_seed(0)
        script.train(model, run_loss(cfg, model, schedule, gen, 10_000, device), 10_000, cfg, gen,
                     log=lambda *args: None)
        cfg.steps, cfg.log_every = steps, log_every
        _trained[key] = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(_trained[key])
    return cfg, schedule, model.eval()
