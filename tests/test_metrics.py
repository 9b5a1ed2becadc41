"""The quality numbers mean what the README says they mean: real data scores perfectly, and each kind of
failure a model can show (shrunk waves, one wave drawn again and again, a blurred or half-covered spiral)
moves the number that is meant to catch it, by the amount a closed form predicts. Also the sine models'
preconditioning against the exact denoiser of Gaussian data."""
import math

import pytest
import torch

from helpers import gaussian_predictor, import_script

spiral, sine = import_script("diffusion_spiral"), import_script("diffusion_sine")


def gen(seed):
    return torch.Generator().manual_seed(seed)


# -----------------------------------------------------------------------------
# Sine: sine fit, frequency and amplitude coverage


@pytest.mark.parametrize("w, amp, phase, offset", [(2.5, 0.8, 1.0, 0.1), (1.0, 1.0, 0.0, 0.0),
                                                   (4.75, 0.3, -2.0, -0.5)])
def test_sine_fit_recovers_a_known_wave(w, amp, phase, offset):
    y = amp * torch.sin(w * sine.X + phase) + offset                       # (64,), w lies on the grid
    r2, freq, a, phi = sine.fit_sines(y[None])
    assert freq.item() == pytest.approx(w, abs=1e-9)
    assert a.item() == pytest.approx(amp, rel=1e-9)
    assert phi.item() == pytest.approx(phase, abs=1e-9)
    assert r2.item() == pytest.approx(1.0, abs=1e-12)


def test_sine_metrics_of_real_waves_are_perfect():
    q = sine.evaluate(sine.make_data(512, gen(1)), gen(2))
    # the frequency grid's step (0.005) is all that keeps the fits from exact
    assert q["r2_median"] > 0.9999 and q["r2_099"] == 1.0
    assert q["amp_ratio"] == pytest.approx(1.0, abs=1e-3) and q["amp_w1"] < 1e-3   # every amplitude is 1
    assert q["freq_w1"] < 0.02                                                     # 512 against 5000 draws


def test_sine_metrics_catch_shrunk_waves():
    q = sine.evaluate(0.9 * sine.make_data(512, gen(1)), gen(2))
    assert q["r2_median"] > 0.9999                                     # still perfect sines ...
    assert q["amp_ratio"] == pytest.approx(0.9, abs=1e-3)              # ... 10 % too small
    assert q["amp_w1"] == pytest.approx(0.1, abs=1e-3)


def test_sine_metrics_catch_one_wave_drawn_again_and_again():
    one = torch.sin(3.0 * sine.X + 0.5).float()
    q = sine.evaluate(one.expand(512, -1), gen(2))
    assert q["r2_median"] > 0.9999 and q["amp_w1"] < 1e-3             # perfect shape and amplitude ...
    assert q["freq_w1"] == pytest.approx(0.25, abs=0.01)               # ... but E|U[1,5) - 3| / 4 = 1/4


def test_sine_frequency_score_compares_against_the_same_labels():
    """Sampled with labels (one f per wave), the samples are scored against real waves of the same labels and
    fresh phases: waves that follow their labels score the fit grid's error alone (every model used to inherit
    the one draw of 512 labels' own distance from U[1, 5)), waves at f + 0.1 score 0.1 / 4, and waves whose f
    ignores the labels score a fresh draw's distance from these labels'."""
    labels = 1 + 4 * torch.rand(512, generator=gen(0))
    follows = sine.make_waves(512, gen(1), labels)[0]
    assert sine.evaluate(follows, gen(2), labels=labels)["freq_w1"] < 0.0013            # grid step 0.005 / 4
    off = sine.evaluate(sine.make_waves(512, gen(1), labels + 0.1)[0], gen(2), labels=labels)["freq_w1"]
    assert off == pytest.approx(0.025, abs=0.0013)
    assert sine.evaluate(sine.make_data(512, gen(1)), gen(2), labels=labels)["freq_w1"] > 0.005


def test_sine_metrics_catch_noisy_waves():
    noisy = sine.make_data(512, gen(1)) + 0.3 * torch.randn(512, 64, generator=gen(3))
    q = sine.evaluate(noisy, gen(2))
    # R^2 of a unit sine (variance 1/2) plus noise of variance 0.09: about 0.5 / 0.59 = 0.85
    assert 0.8 < q["r2_median"] < 0.9 and q["r2_099"] == 0.0


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_zero_output_is_the_exact_denoiser_of_gaussian_data(kind):
    """Preconditioning: a network whose last layer outputs 0 predicts exactly the noise of data ~ N(0, sd^2),
    sd = the data's std, at every t (EDM's c_skip); the network only has to learn what differs from that."""
    cfg = sine.Config(model=kind)
    schedule = sine.make_schedule(cfg.timesteps, cfg.schedule)
    model = sine.build_model(kind, cfg, schedule).eval()
    last = model.out if kind == "mlp" else model.out[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    exact = gaussian_predictor(sine, schedule, 0.0, model.precond.sd)
    x = 3 * torch.randn(cfg.timesteps, 64, generator=gen(0))
    t = torch.arange(cfg.timesteps)                                    # every t once
    with torch.no_grad():
        got = model(x, t)
    assert model.precond.sd == pytest.approx(sine.make_data(20_000, gen(1)).std().item(), rel=0.02)
    torch.testing.assert_close(got, exact(x, t), rtol=1e-4, atol=1e-5)


# -----------------------------------------------------------------------------
# Spiral: precision, outliers, coverage (the nearest-neighbour ratio)


def test_spiral_metrics_of_real_points_are_perfect():
    q = spiral.evaluate(spiral.make_data(2000, gen(1)), gen(2))
    assert q["median"] < 0.005 and q["outliers"] == 0.0
    assert q["nn_ratio"] == pytest.approx(1.0, abs=0.1)


def test_spiral_metrics_catch_blurred_points():
    # every point moved by 0.5 (RMS radius 1.41): most land between the arms (1 apart)
    real = spiral.make_data(2000, gen(1))
    angle = 2 * math.pi * torch.rand(2000, generator=gen(3))
    q = spiral.evaluate(real + 0.5 * torch.stack([angle.cos(), angle.sin()], dim=1), gen(2))
    assert q["median"] > 0.1 and q["outliers"] > 0.5


def test_spiral_metrics_catch_a_partly_covered_spiral():
    # only the inner points (radius in the lowest third): each is on the spiral, but most of it is missing
    real = spiral.make_data(6000, gen(1))
    inner = real[real.norm(dim=1) < real.norm(dim=1).quantile(1 / 3)]
    q = spiral.evaluate(inner, gen(2))
    assert q["median"] < 0.005 and q["outliers"] == 0.0                # precision alone says "perfect" ...
    assert q["nn_ratio"] > 3                                           # ... the ratio sees what is missing


def test_sine_metrics_catch_a_missed_frequency_and_one_phase():
    """Asked for F = 3: waves at 3.1 are off by 0.1 everywhere; waves of one phase bunch to 1, real ones don't."""
    phases = 2 * math.pi * torch.rand(512, 1, generator=gen(4))
    off = torch.sin(3.1 * sine.X + phases).float()
    q = sine.evaluate(off, gen(2), frequency=3.0)
    assert q["freq_err_median"] == pytest.approx(0.1, abs=1e-6) and q["freq_err_p90"] == pytest.approx(0.1, abs=1e-6)
    assert q["phase_bunching"] < 0.15                                  # 512 uniform phases: about 0.04
    one = torch.sin(3.0 * sine.X + 0.5).float().expand(512, -1)
    q = sine.evaluate(one, gen(2), frequency=3.0)
    assert q["freq_err_median"] < 1e-9 and q["phase_bunching"] == pytest.approx(1.0, abs=1e-9)
