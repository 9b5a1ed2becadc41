"""The sampling loops never read a value back from the device: on a GPU every such read (`.item()`, or
indexing a tensor with a 0-d tensor, which calls it) stops the host until the GPU has caught up, once per
step. Checked on the CPU with the profiler, which sees the same calls."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 10)])
def test_sampling_loop_never_reads_back(script, sampler, steps):
    schedule = script.make_schedule(50)
    shape = tuple(script.make_data(1).shape[1:])
    model = lambda x, t: 0.1 * x + 1e-3 * t[:, None].float()           # any (x, t) -> eps
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        script.sample(model, 8, schedule, sampler, steps, torch.Generator().manual_seed(0), clip=1.0,
                      shape=shape)
    reads = {e.key: e.count for e in prof.key_averages() if e.key in ("aten::item", "aten::_local_scalar_dense")}
    assert not reads, f"{sampler}: host reads inside the loop: {reads}"
