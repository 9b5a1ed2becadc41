"""The sampling loops never read a value back from the device, and training reads one only to print a
progress line: on a GPU every such read (`.item()`, or indexing a tensor with a 0-d tensor, which calls
it) stops the host until the GPU has caught up. Checked on the CPU with the profiler, which sees the same
calls."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 10), ("dpm", 10), ("euler", 10), ("midpoint", 5)])
def test_sampling_loop_never_reads_back(script, sampler, steps):
    schedule = script.make_schedule(50)
    shape = tuple(script.make_data(1).shape[1:])
    model = lambda x, t: 0.1 * x + 1e-3 * t[:, None].float()           # any (x, t) -> eps, or (x, s) -> v
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        script.sample(model, 8, schedule, sampler, steps, torch.Generator().manual_seed(0), clip=1.0,
                      shape=shape)
    reads = {e.key: e.count for e in prof.key_averages() if e.key in ("aten::item", "aten::_local_scalar_dense")}
    assert not reads, f"{sampler}: host reads inside the loop: {reads}"


@pytest.mark.parametrize("objective", ["eps", "flow"])
def test_training_loop_reads_back_only_to_log(script, run_loss, monkeypatch, objective):
    """One read per progress line, none per step. (AdamW reads its own step counters with .item(); they
    live on the CPU even when training on a GPU, so they cost no sync. SGD stands in to keep the count
    about the training loop itself.)"""
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, weight_decay, **fused: torch.optim.SGD(params, lr=lr))
    cfg = script.Config(steps=20, log_every=10, batch_size=16, objective=objective)
    schedule = script.make_schedule(cfg.timesteps, cfg.schedule)
    model = script.network(cfg, schedule)
    gen = torch.Generator().manual_seed(0)
    lines = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        script.train(model, run_loss(cfg, model, schedule, gen, 64), 64, cfg, gen, log=lines.append)
    reads = sum(e.count for e in prof.key_averages() if e.key == "aten::item")
    assert len(lines) == 2 and reads == 2
