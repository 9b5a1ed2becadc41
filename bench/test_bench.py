"""Time one training step and the whole sampling loops of both scripts, on CPU and (where present) CUDA.

The timed code is the scripts' own train() and sample(); nothing here re-implements them.
Run: pytest bench --benchmark-only     (see bench/README.md)
"""
import pytest
import torch

from timing import loop_efficiency, timed

TRAIN_STEPS = 20      # train() runs this many optimizer steps per round; the per-step time is extra_info
NUM_SAMPLES = 1000    # batch of the sampling loops
FEW_STEPS = 20       # DDIM, DPM-Solver and Euler steps
REFLOW_PAIRS = 1000  # pairs of the reflow benchmark (the defaults: spiral 20,000, sine 10,000)
DISTILL_STEPS = 20   # distill() steps per round of the distillation benchmark
LIKELIHOOD_POINTS = 1000


@pytest.mark.parametrize("objective", ["eps", "flow"], indirect=True)
def test_train_step(benchmark, script, kind, device, objective, setup, run_loss):
    cfg, schedule, model = setup
    cfg.steps, cfg.log_every = TRAIN_STEPS, TRAIN_STEPS          # one loss read (a sync) at the end
    gen = torch.Generator(device=device).manual_seed(0)
    loss, quiet = run_loss(cfg, model, schedule, gen, 10_000, device), lambda *args: None
    benchmark.group = f"{script.__name__} {kind} train {objective} ({TRAIN_STEPS} steps, batch {cfg.batch_size})"
    benchmark.pedantic(timed(lambda: script.train(model, loss, 10_000, cfg, gen, log=quiet), device),
                       rounds=5, warmup_rounds=1, iterations=1)
    if benchmark.disabled:  # --benchmark-disable: the code ran once, unmeasured
        return
    step = benchmark.stats.stats.median / TRAIN_STEPS
    benchmark.extra_info.update(seconds_per_step=step, steps_per_second=1 / step, batch_size=cfg.batch_size)


@pytest.mark.parametrize("sampler, objective", [("ddpm", "eps"), ("ddim", "eps"), ("dpm", "eps"), ("euler", "flow")],
                         indirect=["objective"])
def test_sampling_loop(benchmark, script, kind, device, trained, sampler, objective):
    cfg, schedule, model = trained
    steps = cfg.timesteps if sampler == "ddpm" else FEW_STEPS
    gen = torch.Generator(device=device).manual_seed(0)
    benchmark.group = f"{script.__name__} {kind} sample {sampler} ({steps} steps, {NUM_SAMPLES} samples)"
    loop = lambda: script.sample(model, NUM_SAMPLES, schedule, sampler, FEW_STEPS, gen, clip=cfg.clip)
    long = sampler == "ddpm"                  # T steps: fewer rounds (its per-step time is what compares)
    benchmark.pedantic(timed(loop, device), rounds=2 if long else 3, warmup_rounds=1, iterations=1)
    if benchmark.disabled:
        return
    # efficiency: what the network alone costs (steps x one forward on this batch) over the loop's time
    x = script.make_data(NUM_SAMPLES).to(device)                       # a batch of the right shape
    t = torch.full((NUM_SAMPLES,), 0.5 if objective == "flow" else cfg.timesteps // 2, device=device)
    efficiency, forward = loop_efficiency(loop, model, x, t, steps, device, pairs=1 if long else 3)
    benchmark.extra_info.update(steps=steps, forward_seconds=forward, efficiency=efficiency)


@pytest.mark.parametrize("script", ["diffusion_sine"], indirect=True)
def test_guided_sampling_loop(benchmark, script, kind, device, trained):
    """Classifier-free guidance towards one frequency: two network calls a step (conditional and not), so
    about twice the unguided loop of the same steps (compare with the `sample ddim` group of the same model).
    DDIM's 20 steps rather than DDPM's T: the cost per step is what guidance changes, at a tenth of the time."""
    cfg, schedule, model = trained
    gen = torch.Generator(device=device).manual_seed(0)
    net = script.guided(model, torch.full((NUM_SAMPLES,), 2.5, device=device), cfg.guidance)
    calls = f"{FEW_STEPS} steps x 2 calls, {NUM_SAMPLES} samples"
    benchmark.group = f"{script.__name__} {kind} sample ddim guided ({calls})"
    loop = lambda: script.sample(net, NUM_SAMPLES, schedule, "ddim", FEW_STEPS, gen, clip=cfg.clip)
    benchmark.pedantic(timed(loop, device), rounds=3, warmup_rounds=1, iterations=1)
    if benchmark.disabled:
        return
    x = script.make_data(NUM_SAMPLES).to(device)
    t = torch.full((NUM_SAMPLES,), cfg.timesteps // 2, device=device)
    efficiency, forward = loop_efficiency(loop, model, x, t, 2 * FEW_STEPS, device)
    benchmark.extra_info.update(steps=FEW_STEPS, calls_per_step=2, forward_seconds=forward, efficiency=efficiency)


@pytest.mark.parametrize("objective", ["flow"], indirect=True)
def test_reflow_pairs(benchmark, script, kind, device, trained, objective):
    """--reflow's pair generation: REFLOW_PAIRS (noise, sample) pairs by the model's own ODE (the script's 10
    midpoint steps, 20 network calls); extra_info has the time per pair, from which the default's follows."""
    cfg, schedule, model = trained
    gen = torch.Generator(device=device).manual_seed(0)
    benchmark.group = f"{script.__name__} {kind} reflow pairs ({REFLOW_PAIRS} pairs, 10 midpoint steps)"
    benchmark.pedantic(timed(lambda: script.reflow_pairs(model, REFLOW_PAIRS, device, gen), device),
                       rounds=3, warmup_rounds=1, iterations=1)
    if benchmark.disabled:
        return
    per_pair = benchmark.stats.stats.median / REFLOW_PAIRS
    benchmark.extra_info.update(seconds_per_pair=per_pair, default_pairs_seconds=per_pair * cfg.reflow_pairs)


@pytest.mark.parametrize("objective", ["flow"], indirect=True)
def test_distill_round(benchmark, script, kind, device, trained, objective):
    """One --distill round: DISTILL_STEPS steps of the script's distill() on REFLOW_PAIRS pairs drawn once (the
    weights are the trained flow model's: a reflowed network costs the same); extra_info scales it to the
    default --distill-steps."""
    cfg, schedule, model = trained
    gen = torch.Generator(device=device).manual_seed(0)
    pairs = script.reflow_pairs(model, REFLOW_PAIRS, device, gen)
    cfg.distill_steps, cfg.log_every = DISTILL_STEPS, DISTILL_STEPS                # one loss read, at the end
    benchmark.group = f"{script.__name__} {kind} distill ({DISTILL_STEPS} steps, batch {cfg.batch_size})"
    benchmark.pedantic(timed(lambda: script.distill(model, pairs, cfg, gen), device), rounds=3, warmup_rounds=1,
                       iterations=1)
    if benchmark.disabled:
        return
    per_step = benchmark.stats.stats.median / DISTILL_STEPS
    benchmark.extra_info.update(seconds_per_step=per_step, default_steps_seconds=per_step * script.Config.distill_steps)


@pytest.mark.parametrize("objective", ["flow"], indirect=True)
def test_one_step_sample(benchmark, script, kind, device, trained, objective):
    """What a reflowed model buys: NUM_SAMPLES samples in one Euler step, one network call (the weights here are
    the trained flow model's: a reflowed network costs the same)."""
    cfg, schedule, model = trained
    gen = torch.Generator(device=device).manual_seed(0)
    benchmark.group = f"{script.__name__} {kind} sample euler 1 step ({NUM_SAMPLES} samples)"
    benchmark.pedantic(timed(lambda: script.sample(model, NUM_SAMPLES, schedule, "euler", 1, gen), device),
                       rounds=5, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("script", ["diffusion_spiral"], indirect=True)
@pytest.mark.parametrize("objective", ["flow"], indirect=True)
def test_log_likelihood(benchmark, script, kind, device, trained, objective):
    """The spiral's exact log-likelihood of LIKELIHOOD_POINTS real points under a flow model: the ODE from the data
    to the noise, its default 100 midpoint steps, each with the exact divergence (two backward passes)."""
    cfg, schedule, model = trained
    x = script.make_data(LIKELIHOOD_POINTS, torch.Generator().manual_seed(0)).to(device)
    benchmark.group = f"{script.__name__} {kind} log_likelihood ({LIKELIHOOD_POINTS} points, 100 midpoint steps)"
    benchmark.pedantic(timed(lambda: script.log_likelihood(model, x), device), rounds=3, warmup_rounds=1, iterations=1)
