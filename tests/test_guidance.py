"""Conditioning on the frequency and classifier-free guidance (diffusion_sine.py only): the guided predictor's
limits, the sampler with exact Gaussian predictors against the exact recursion of the mixed predictor, the
label dropping rate, checkpoints with and without the condition, and the user errors."""
import json
import math

import numpy as np
import pytest
import torch

from helpers import (TINY, assert_mean_std, assert_one_line_error, flow_grid, flow_recursion, gaussian_eps_affine,
                     gaussian_predictor, gaussian_recursion, gaussian_velocity, gaussian_velocity_affine, import_script,
                     reference_schedule, run_main)

sine = import_script("diffusion_sine")


def test_guided_predictor_at_w_0_and_1_is_the_unconditional_and_the_conditional():
    torch.manual_seed(0)
    cfg = sine.Config()
    model = sine.Conditional(sine.build_model("mlp", cfg, sine.make_schedule(cfg.timesteps, cfg.schedule))).eval()
    torch.nn.init.normal_(model.null)                             # a trained, non-zero "no label" vector
    x, t = torch.randn(32, 64), torch.randint(0, cfg.timesteps, (32,))
    freq = 1 + 4 * torch.rand(32)
    with torch.no_grad():
        cond, uncond = model(x, t, freq), model(x, t)
        assert not torch.allclose(cond, uncond)
        assert torch.equal(sine.guided(model, freq, 0.0)(x, t), uncond)
        assert torch.equal(sine.guided(model, freq, 1.0)(x, t), cond)
        torch.testing.assert_close(sine.guided(model, freq, 3.0)(x, t), uncond + 3 * (cond - uncond))


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 10), ("dpm", 10)])
@pytest.mark.parametrize("w", [2.0, 4.0])
def test_guided_sampler_matches_the_recursion_of_the_mixed_predictor(sampler, steps, w):
    """Conditional data N(0.8, 0.1^2), unconditional N(0, 0.5^2), both with their exact predictors (affine in
    x): the guided eps (1 - w) eps_u + w eps_c is affine too, so the samples are exactly Gaussian, with the
    mean and spread of the sampler's recursion for that mixed predictor."""
    s = sine.make_schedule(100, "cosine")
    eps_c, eps_u = gaussian_predictor(sine, s, 0.8, 0.1), gaussian_predictor(sine, s, 0.0, 0.5)
    model = lambda x, t, freq=None: eps_u(x, t) if freq is None else eps_c(x, t)
    mixed = lambda at, c=gaussian_eps_affine(0.8, 0.1), u=gaussian_eps_affine(0.0, 0.5): tuple(
        (1 - w) * a + w * b for a, b in zip(u(at), c(at)))
    m, v = gaussian_recursion(reference_schedule(100, "cosine")["alpha_bars"], 0, 1, sampler, steps,
                              eps_affine=mixed)
    n = 6000
    out = sine.sample(sine.guided(model, torch.full((n,), 2.0), w), n, s, sampler, steps,
                      torch.Generator().manual_seed(11))
    assert_mean_std(out, m, v)
    _, plain = gaussian_recursion(reference_schedule(100, "cosine")["alpha_bars"], 0.8, 0.1, sampler, steps)
    assert v < 0.6 * plain, "guidance sharpens: less spread than the plain conditional sampler's"


@pytest.mark.parametrize("sampler, steps", [("euler", 10), ("midpoint", 5)])
def test_guided_flow_matches_the_recursion_of_the_mixed_velocity(sampler, steps):
    """guided() mixes a flow model's velocities as it mixes noise predictions: with the exact velocities of
    N(0.8, 0.1^2) (conditional) and N(0, 0.5^2) (unconditional), affine in x, the guided (1 - w) v_u + w v_c is affine
    too, and the samples have the mean and spread of the flow sampler's recursion for it."""
    w, n = 3.0, 6000
    v_c, v_u = gaussian_velocity(0.8, 0.1), gaussian_velocity(0.0, 0.5)
    model = lambda x, s, freq=None: v_u(x, s) if freq is None else v_c(x, s)
    mixed = lambda s, c=gaussian_velocity_affine(0.8, 0.1), u=gaussian_velocity_affine(0.0, 0.5): tuple(
        (1 - w) * a + w * b for a, b in zip(u(s), c(s)))
    m, v = flow_recursion(mixed, flow_grid(steps), sampler)
    out = sine.sample(sine.guided(model, torch.full((n,), 2.0), w), n, sine.make_schedule(10), sampler, steps,
                      torch.Generator().manual_seed(12))
    assert_mean_std(out, m, v)
    assert abs(m - 0.8) > 0.01, "guidance moves the mean beyond the conditional one"


@pytest.mark.parametrize("rate", [0.0, 0.15, 1.0])
def test_labels_are_hidden_at_the_configured_rate(rate):
    seen = []
    model = lambda x, t, freq=None: seen.append(freq) or torch.zeros_like(x)
    n = 20_000
    cfg = sine.Config(label_drop=rate)
    loss = sine.training_loss(cfg, model, torch.zeros(n, 64), sine.make_schedule(), torch.Generator().manual_seed(0),
                           torch.full((n,), 2.0))
    loss(torch.arange(n))                                              # one batch: every row once
    hidden = seen[0].isnan().double().mean().item()
    assert hidden == pytest.approx(rate, abs=5 * math.sqrt(rate * (1 - rate) / n) + 1e-12)
    assert (seen[0][~seen[0].isnan()] == 2.0).all()


def test_checkpoints_with_and_without_the_condition(tmp_path):
    """Trained with labels: --load asks for a frequency, scores how close it came, draws guidance.png.
    Trained with --no-condition: the same model as before conditioning, and --frequency says to retrain."""
    assert run_main(sine, *TINY, "--no-plots", "--out", tmp_path / "cond").code == 0
    run = run_main(sine, *TINY, "--load", tmp_path / "cond" / "model.pt", "--frequency", 2.5, "--guidance", 3,
                   "--sampler", "dpm", "--sample-steps", 5, "--out", tmp_path / "asked")
    assert run.code == 0, run.stderr
    assert "median |f - F|" in run.stdout and (tmp_path / "asked" / "guidance.png").is_file()
    metrics = json.loads((tmp_path / "asked" / "metrics.json").read_text())
    assert metrics["frequency"] == 2.5 and metrics["guidance"] == 3 and "freq_err_p90" in metrics["quality"]

    assert run_main(sine, *TINY, "--no-condition", "--no-plots", "--out", tmp_path / "plain").code == 0
    ckpt = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)
    assert not any(k.startswith(("null", "mlp.", "net.")) for k in ckpt["model"]) and ckpt["config"]["condition"] is False
    again = run_main(sine, *TINY, "--no-plots", "--load", tmp_path / "plain" / "model.pt", "--out", tmp_path / "a")
    assert again.code == 0, again.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "samples.npy"), np.load(tmp_path / "plain" / "samples.npy"))
    refused = run_main(sine, *TINY, "--load", tmp_path / "plain" / "model.pt", "--frequency", 2, "--out", tmp_path / "b")
    assert_one_line_error(refused, 2, "retrain")


BAD = {
    "below-range": (["--frequency", "0.5"], "[1, 5)"),
    "at-the-top": (["--frequency", "5"], "[1, 5)"),
    "not-a-number": (["--frequency", "high"], "--frequency"),
    "negative-guidance": (["--frequency", "2", "--guidance", "-1"], "--guidance"),
    "infinite-guidance": (["--frequency", "2", "--guidance", "inf"], "--guidance"),    # sampled NaN before
    "guidance-alone": (["--guidance", "3"], "--frequency"),
}


def test_huge_guidance_names_the_guidance(tmp_path):
    """A finite but absurd weight blows the samples up: the message points at --guidance, not only the model."""
    run = run_main(sine, *TINY, "--frequency", "2", "--guidance", "1e30", "--no-plots", "--out", tmp_path)
    assert_one_line_error(run, 1, "--guidance")
    assert not (tmp_path / "samples.npy").exists()


@pytest.mark.parametrize("case", BAD)
def test_bad_frequency_flags(case, tmp_path):
    args, hint = BAD[case]
    run = run_main(sine, *TINY, *args, "--no-plots", "--out", tmp_path / "out")
    assert_one_line_error(run, 2, hint)
    assert not (tmp_path / "out" / "model.pt").exists()
