"""Fewer network calls, in both scripts: Euler steps with DDIM's eta (fresh noise on the straight path) against
closed forms and their exact float64 recursion; --reflow and --distill end to end (checkpoints, --load of them,
the sine's --frequency on a reflowed or distilled model); distillation of an exact teacher against its map."""
import json

import numpy as np
import pytest
import torch

from helpers import (TINY, assert_mean_std, assert_one_line_error, data_shape, dirac_velocity, flow_eta_recursion,
                     flow_grid, flow_schedule, gaussian_velocity, n_for, nonlinear_velocity, run_main)


# -----------------------------------------------------------------------------
# --eta on Euler steps, with exact velocities

# the variance after K steps for data N(mu, 0.2^2) from noise x ~ N(0, 1) at s = 1, computed independently in float64 from the
# recursion of the step's coefficients (flow_eta_recursion's docstring): the noise of eta = 1 shrinks it further
ETA_TABLE = {(5, 0): 0.012969, (5, 1): 0.011301, (10, 0): 0.023770, (10, 1): 0.018709, (20, 0): 0.030977,
             (20, 1): 0.025292, (100, 0): 0.038017, (100, 1): 0.035506}


@pytest.mark.parametrize("steps, eta", ETA_TABLE)
def test_eta_recursion_reproduces_the_reference_table(steps, eta):
    m, sd = flow_eta_recursion(0.5, 0.2, flow_grid(steps), eta)
    assert m == pytest.approx(0.5, abs=1e-12) and sd ** 2 == pytest.approx(ETA_TABLE[steps, eta], abs=2e-6)


@pytest.mark.parametrize("steps", [5, 20])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_gaussian_data_with_eta_matches_the_exact_recursion(script, steps, eta):
    """Data N(mu, S^2), exact velocity: each step is affine in x plus fresh Gaussian noise, so the output is exactly
    Gaussian with the recursion's mean and spread. At eta = 0 and 1 the spreads differ by 7-10 % (the variances by
    13-20 %), far beyond the 5 standard errors allowed: a sampler that ignored eta fails one of the two."""
    m, sd = flow_eta_recursion(0.5, 0.2, flow_grid(steps), eta)
    out = script.sample(gaussian_velocity(0.5, 0.2), n_for(script, 400_000), flow_schedule(script), "euler", steps,
                        torch.Generator().manual_seed(8), eta=eta, shape=data_shape(script))
    assert_mean_std(out, m, sd)


@pytest.mark.parametrize("steps", [1, 2, 7])
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_single_point_comes_back_at_any_eta(script, steps, eta):
    """Data = one point x0*: x0_hat = x - s v* = x0* wherever x is, and the last step (s_next = 0, no noise) lands
    on it, however much noise the steps before added."""
    g = torch.Generator().manual_seed(1)
    x0 = script.make_data(1, g)[0]
    out = script.sample(dirac_velocity(x0), 128, flow_schedule(script), "euler", steps, g, eta=eta,
                        shape=tuple(x0.shape))
    assert (out - x0).abs().max().item() < 1e-5


def test_eta_zero_is_plain_euler_bit_for_bit(script):
    """eta = 0 is the Euler step x + (s_next - s) v itself, bit for bit (the samples of every run without --eta are
    unchanged), and draws no noise: the generator is left where drawing the start left it."""
    K, n, shape = 9, 32, data_shape(script)
    g = torch.Generator().manual_seed(3)
    out = script.sample(nonlinear_velocity, n, flow_schedule(script), "euler", K, g, eta=0.0, shape=shape)
    ref_g = torch.Generator().manual_seed(3)
    x = torch.randn((n,) + shape, generator=ref_g)
    s = torch.linspace(1, 0, K + 1)
    for i in range(K):
        x = x + (s[i + 1] - s[i]) * nonlinear_velocity(x, s[i].expand(n))
    assert torch.equal(out, x)
    assert torch.equal(g.get_state(), ref_g.get_state())
    noisy = script.sample(nonlinear_velocity, n, flow_schedule(script), "euler", K, torch.Generator().manual_seed(3),
                          eta=1.0, shape=shape)
    assert (noisy - out).abs().max() > 1e-2, "eta = 1 added no noise"


# -----------------------------------------------------------------------------
# --reflow end to end

REFLOW = ["--objective", "flow", "--reflow", "--reflow-pairs", "128", "--reflow-steps", "10"]


@pytest.fixture(scope="session")
def reflowed(script, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"{script.__name__}-reflow")
    run = run_main(script, *TINY, *REFLOW, "--out", out)
    assert run.code == 0, run.stderr
    return out


def test_reflow_run_trains_further_and_says_so(script, reflowed):
    """The reflow run: the loss of both trainings in loss.csv, its checkpoint marked reflowed, metrics with the
    paths' straightness, the figure of 1 and 2 Euler steps before and after."""
    metrics = json.loads((reflowed / "metrics.json").read_text())
    assert metrics["reflowed"] == 1 and metrics["reflow_seconds"] > 0 and metrics["straightness"] >= 1.0
    assert len(np.loadtxt(reflowed / "loss.csv", delimiter=",", skiprows=1)) == 30 + 10
    assert torch.load(reflowed / "model.pt", weights_only=True)["reflowed"] == 1
    assert (reflowed / "reflow.png").is_file() and (reflowed / "loss.png").is_file()


def test_load_of_a_reflowed_checkpoint(script, reflowed, tmp_path):
    """--load of the reflowed model samples what the reflow run sampled, one Euler step too, and --reflow on it
    reflows once more."""
    ckpt = reflowed / "model.pt"
    run = run_main(script, *TINY, "--no-plots", "--load", ckpt, "--out", tmp_path / "a")
    assert run.code == 0, run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "samples.npy"), np.load(reflowed / "samples.npy"))
    run = run_main(script, *TINY, "--no-plots", "--load", ckpt, "--sample-steps", "1", "--out", tmp_path / "b")
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert run.code == 0 and metrics["reflowed"] == 1 and metrics["objective"] == "flow"
    run = run_main(script, *TINY, "--no-plots", "--load", ckpt, *REFLOW[2:], "--out", tmp_path / "c")
    assert run.code == 0, run.stderr
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["reflowed"] == 2


@pytest.mark.parametrize("script", ["diffusion_sine"], indirect=True)
def test_frequency_on_a_reflowed_sine_model(script, reflowed, tmp_path):
    """The pairs keep their labels and the label dropping, so a reflowed model is still conditional: --frequency
    and --guidance run on it, with --eta too."""
    run = run_main(script, *TINY, "--no-plots", "--load", reflowed / "model.pt", "--frequency", "2.5",
                   "--guidance", "3", "--eta", "1", "--out", tmp_path)
    assert run.code == 0, run.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["frequency"] == 2.5 and metrics["reflowed"] == 1 and metrics["eta"] == 1.0
    assert np.isfinite(np.load(tmp_path / "samples.npy")).all()


# -----------------------------------------------------------------------------
# --distill: end to end, and on an exact teacher

DISTILL = ["--distill", "--distill-steps", "5"]


def test_distill_after_reflow_in_one_run(script, tmp_path):
    """--reflow --distill: both trainings' losses, a checkpoint marked reflowed and distilled, the figure of the
    three models; the spiral's likelihood line says why there is none."""
    run = run_main(script, *TINY, *REFLOW, *DISTILL, "--sample-steps", "1", "--out", tmp_path)
    assert run.code == 0, run.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["reflowed"] == 1 and metrics["distilled"] == 1 and metrics["distill_seconds"] > 0
    assert len(np.loadtxt(tmp_path / "loss.csv", delimiter=",", skiprows=1)) == 30 + 10 + 5
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert (ckpt["reflowed"], ckpt["distilled"]) == (1, 1) and (tmp_path / "reflow.png").is_file()
    if script.__name__ == "diffusion_spiral":
        assert metrics["likelihood"] is None and "no ODE" in metrics["likelihood_note"]


def test_distill_a_loaded_reflowed_model(script, reflowed, tmp_path):
    """--distill on a --load-ed reflowed model draws its own pairs; --load of the distilled checkpoint samples
    what that run sampled; distilling again counts twice."""
    run = run_main(script, *TINY, "--no-plots", "--load", reflowed / "model.pt", "--reflow-pairs", "64", *DISTILL,
                   "--sample-steps", "1", "--out", tmp_path / "a")
    assert run.code == 0, run.stderr
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["distilled"] == 1
    run = run_main(script, *TINY, "--no-plots", "--load", tmp_path / "a" / "model.pt", "--sample-steps", "1",
                   "--out", tmp_path / "b")
    assert run.code == 0, run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "samples.npy"), np.load(tmp_path / "a" / "samples.npy"))
    run = run_main(script, *TINY, "--no-plots", "--load", tmp_path / "a" / "model.pt", *DISTILL, "--out", tmp_path / "c")
    assert run.code == 0 and json.loads((tmp_path / "c" / "metrics.json").read_text())["distilled"] == 2


@pytest.mark.parametrize("script", ["diffusion_sine"], indirect=True)
def test_guidance_on_a_distilled_sine_model(script, tmp_path):
    """A distilled model's one step returns a wave, not a direction: any guidance but w = 1 is refused in one line
    (the default w = 2 too; w = 0, the unlabelled path, regresses to the mean of the labels' waves), and w = 1 runs
    in one network call."""
    assert run_main(script, *TINY, *REFLOW, *DISTILL, "--no-plots", "--out", tmp_path / "d").code == 0
    ckpt = tmp_path / "d" / "model.pt"
    for w in ["2", "1.5", "0"]:
        run = run_main(script, *TINY, "--load", ckpt, "--frequency", "2.5", "--guidance", w, "--out", tmp_path / "x")
        assert_one_line_error(run, 2, "--guidance 1")
    run = run_main(script, *TINY, "--load", ckpt, "--frequency", "2.5", "--out", tmp_path / "y")
    assert_one_line_error(run, 2, "on a distilled model")
    run = run_main(script, *TINY, "--no-plots", "--load", ckpt, "--frequency", "2.5", "--guidance", "1",
                   "--sample-steps", "1", "--out", tmp_path / "w1")
    assert run.code == 0, run.stderr


def test_distillation_learns_the_exact_teachers_affine_map(script):
    """Data N(mu, S^2 I): the exact velocity's ODE carries the noise eps to mu + S eps, an affine map. reflow_pairs
    with that velocity as the teacher (10 midpoint steps) pairs each eps with its image to 1e-3; a tiny network
    distilled 600 steps on 2,000 pairs then lands one Euler step from fresh noise within 0.05 (RMS) of the map."""
    mu, S = 0.5, 0.3
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x0, noise, *labels = script.reflow_pairs(gaussian_velocity(mu, S), 2000, "cpu", g)
    assert (x0 - (mu + S * noise)).abs().max() < 1e-3
    cfg = script.Config(objective="flow", width=256, blocks=1, **({"channels": 8, "condition": False} if hasattr(script, "Conditional") else {}), distill_steps=600,
                        batch_size=256, lr=1e-2, warmup=20, log_every=600)
    model = script.network(cfg, None)
    script.distill(model, (x0, noise, *labels), cfg, g)
    fresh = torch.randn(500, *data_shape(script), generator=g)
    with torch.no_grad():
        landed = fresh - model(fresh, torch.ones(500))                              # one Euler step from s = 1
    error = (landed - (mu + S * fresh)).pow(2).mean().sqrt().item()
    assert error < 0.05, f"RMS {error:.3f} from mu + S eps"
