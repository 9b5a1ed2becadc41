"""Flow matching (--objective flow) in both scripts: the Euler and midpoint samplers with exact velocities against
closed forms and their exact float64 recursions, Euler against the scripts' own DDIM on the straight path, the
loss, the network calls, and the command line (objective, samplers that do not fit, --load)."""
import json
import math

import numpy as np
import pytest
import torch

from helpers import (TINY, assert_mean_std, assert_one_line_error, data_shape, dirac_velocity, flow_grid,
                     flow_recursion, flow_schedule, gaussian_velocity, gaussian_velocity_affine, n_for,
                     nonlinear_velocity, run_main)

FLOW_SAMPLERS = [("euler", 1), ("midpoint", 2)]           # (sampler, network calls a step)


# -----------------------------------------------------------------------------
# Exact velocities


@pytest.mark.parametrize("sampler, calls", FLOW_SAMPLERS)
@pytest.mark.parametrize("steps", [1, 2, 7, 20])
def test_single_point_comes_back_exactly(script, sampler, calls, steps):
    """Data = one point x0*: v*(x, s) = (x - x0*) / s points along the straight line to x0* from anywhere, so
    every step stays on that line and the last lands on x0*, for any K (even one step) and any start."""
    for seed in [0, 1]:
        g = torch.Generator().manual_seed(seed)
        x0 = script.make_data(1, g)[0]
        out = script.sample(dirac_velocity(x0), 128, flow_schedule(script), sampler, steps, g, shape=tuple(x0.shape))
        err = (out - x0).abs().max().item()
        assert out.shape == (128,) + tuple(x0.shape) and err < 1e-5, f"seed {seed}: max |x - x0*| = {err:.2e}"


# mean and spread after K Euler steps (equal steps in s) for data N(0.5, 0.2^2) from noise x ~ N(0, 1) at s = 1, computed
# independently in float64 from the linear recursion of the exact velocity (one step returns E[x0 | x at s = 1] = mu)
EULER_TABLE = {1: 0.0, 2: 0.0385, 5: 0.1139, 10: 0.1542, 20: 0.1760, 50: 0.1901, 100: 0.1950, 1000: 0.1995}


@pytest.mark.parametrize("steps, sd", EULER_TABLE.items())
def test_flow_recursion_reproduces_the_reference_table(steps, sd):
    m, v = flow_recursion(gaussian_velocity_affine(0.5, 0.2), flow_grid(steps), "euler")
    assert m == pytest.approx(0.5, abs=1e-12) and v == pytest.approx(sd, abs=1e-4)


@pytest.mark.parametrize("sampler, steps", [("euler", 2), ("euler", 5), ("euler", 20), ("midpoint", 1),
                                            ("midpoint", 3), ("midpoint", 10)])
def test_gaussian_data_matches_the_exact_recursion(script, sampler, steps):
    """Data N(mu, S^2): the exact velocity is affine in x, so the K-step output is exactly Gaussian with the mean
    and spread of the sampler's float64 recursion (few steps shrink the spread: not N(mu, S^2))."""
    m, v = flow_recursion(gaussian_velocity_affine(0.5, 0.2), flow_grid(steps), sampler)
    out = script.sample(gaussian_velocity(0.5, 0.2), n_for(script, 400_000), flow_schedule(script), sampler, steps,
                        torch.Generator().manual_seed(4), shape=data_shape(script))
    assert_mean_std(out, m, v)


def test_one_euler_step_returns_the_posterior_mean(script):
    """K = 1: one step from the noise x, x - v*(x, 1) = E[x0 | x] = mu for every start: no spread at all."""
    out = script.sample(gaussian_velocity(0.5, 0.2), 256, flow_schedule(script), "euler", 1,
                        torch.Generator().manual_seed(2), shape=data_shape(script))
    torch.testing.assert_close(out, torch.full_like(out, 0.5), rtol=0, atol=1e-6)


def test_gaussian_data_is_reached_as_steps_grow(script):
    """The exact ODE carries N(0, 1) to N(mu, S^2) itself: the recursions' spread rises towards S as K grows (the
    error shrinks as 1/K for Euler, 1/K^2 for midpoint, far smaller at the same network calls), and 20 midpoint
    steps of the script give N(0.5, 0.2^2) within the samples' standard errors."""
    affine = gaussian_velocity_affine(0.5, 0.2)
    for sampler in ["euler", "midpoint"]:
        sds = [flow_recursion(affine, flow_grid(k), sampler)[1] for k in (2, 5, 20, 100, 1000)]
        assert all(a < b < 0.2 for a, b in zip(sds, sds[1:])) and sds[-1] > 0.199, (sampler, sds)
    gap = lambda name, k: 0.2 - flow_recursion(affine, flow_grid(k), name)[1]
    assert gap("midpoint", 10) < gap("euler", 20) / 10, "second order: far closer at the same network calls"
    out = script.sample(gaussian_velocity(0.5, 0.2), n_for(script, 400_000), flow_schedule(script), "midpoint", 20,
                        torch.Generator().manual_seed(6), shape=data_shape(script))
    assert_mean_std(out, 0.5, 0.2)


# -----------------------------------------------------------------------------
# Euler is DDIM on the straight path


def test_euler_is_ddim_on_the_straight_path(script):
    """The lesson's key fact, checked with the scripts' own DDIM: the path x_s = (1 - s) x0 + s eps is DDIM's
    Gaussian path with alpha = 1 - s, sigma = s, and as DDIM is unchanged by rescaling x, it is the variance-
    preserving schedule abar(s) = (1 - s)^2 / c(s)^2, c(s) = sqrt((1 - s)^2 + s^2), for the state y = x / c(s).
    The noise prediction that a velocity implies is eps_hat = x + (1 - s) v. After a first Euler step from s = 1
    (where abar = 0 and DDIM's x0_hat divides by zero), ddim() over those abar visits the same points as euler()."""
    K, n = 12, 64
    s = flow_grid(K)
    c = lambda si: math.sqrt((1 - si) ** 2 + si ** 2)
    shape = data_shape(script)
    traj = []
    script.sample(nonlinear_velocity, n, flow_schedule(script), "euler", K, torch.Generator().manual_seed(5),
                  shape=shape, trajectory=traj)
    x1 = traj[0]                                                     # the start the sampler drew, the noise at s = 1
    x = x1 + (s[1] - s[0]) * nonlinear_velocity(x1, torch.ones(n))   # the first Euler step, by hand
    visited = s[1:-1]                                                # DDIM's steps: s_1 .. s_{K-1}, then abar = 1
    abar = torch.tensor([(1 - si) ** 2 / c(si) ** 2 for si in visited[::-1]], dtype=torch.float32)  # t = 0 .. T-1
    vp = dict(betas=1 - abar, alpha_bars=abar)

    def eps_hat(y, t):
        si = torch.tensor(visited[::-1].copy(), dtype=torch.float32)[t]           # (n,) the s of step index t
        xs = y * torch.sqrt((1 - si) ** 2 + si ** 2)[:, None]
        return xs + (1 - si)[:, None] * nonlinear_velocity(xs, si)

    ys = list(script.ddim(eps_hat, x / c(s[1]), vp, K - 1))
    assert len(ys) == K - 1
    for k, y in enumerate(ys, start=2):                              # DDIM's state k is Euler's x after k steps
        torch.testing.assert_close(y * c(s[k]), traj[k], rtol=1e-5, atol=1e-5, msg=f"step {k}")


# -----------------------------------------------------------------------------
# Network calls and the loss


@pytest.mark.parametrize("sampler, calls", FLOW_SAMPLERS)
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_network_calls_and_their_times(script, sampler, calls, steps):
    """K steps make K (Euler) or 2K (midpoint) calls, each with s a float tensor (n,) in (0, 1], the first at
    s = 1 (pure noise), Euler's at the grid's s_0 .. s_{K-1}, midpoint's also halfway between them."""
    seen = []

    def model(x, s):
        seen.append(s.clone())
        return torch.zeros_like(x)
    script.sample(model, 4, flow_schedule(script), sampler, steps, torch.Generator().manual_seed(0))
    assert len(seen) == calls * steps
    assert all(s.shape == (4,) and s.is_floating_point() and (s == s[0]).all() for s in seen)
    times = np.array([float(s[0]) for s in seen])
    g = flow_grid(steps)
    expected = g[:-1] if sampler == "euler" else np.ravel([g[:-1], (g[:-1] + g[1:]) / 2], order="F")
    np.testing.assert_allclose(times, expected, rtol=1e-6, atol=1e-7)
    assert times[0] == 1.0 and (times > 0).all()


def test_flow_loss_of_the_exact_velocity_is_zero(script):
    """Single-point data: the true velocity (x_s - x0*) / s is exactly the target eps - x0* on every line, so its
    loss is 0 (float64); a velocity off by 0.1 everywhere costs 0.1^2."""
    g = torch.Generator().manual_seed(0)
    x0 = script.make_data(1, g)[0].double()
    data = x0.expand(512, *x0.shape)                                 # (512, ...) the one point, again and again
    exact = dirac_velocity(x0)
    assert script.flow_loss(lambda x, s: exact(x, s).double(), data, g).item() < 1e-12
    off = script.flow_loss(lambda x, s: exact(x, s).double() + 0.1, data, g).item()
    assert off == pytest.approx(0.01, rel=1e-6)


def test_flow_model_takes_s_in_0_1(script):
    """A flow model's time input is s in [0, 1]: s = 0 and s = 1 give different predictions, and its embedding
    sees s on the scale the steps use (0 .. 1000, as an eps model's t of T)."""
    torch.manual_seed(0)
    cfg = script.Config(objective="flow")
    model = script.flow_model("mlp", cfg).eval()
    eps_model = script.build_model("mlp", script.Config(), script.make_schedule(cfg.timesteps)).eval()
    assert model.timesteps == 1 and eps_model.timesteps == cfg.timesteps
    x = script.make_data(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(x, torch.zeros(16)) - model(x, torch.ones(16))).abs().max()
    assert diff > 1e-3, "the velocity ignores s"


# -----------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="session")
def trained_flow(script, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"{script.__name__}-flow")
    run = run_main(script, *TINY, "--objective", "flow", "--out", out)
    assert run.code == 0, run.stderr
    return out


def test_flow_run_defaults_to_euler(script, trained_flow):
    """`--objective flow` runs as typed: the sampler follows the objective."""
    metrics = json.loads((trained_flow / "metrics.json").read_text())
    assert metrics["objective"] == "flow" and metrics["sampler"] == "euler"
    assert np.isfinite(np.load(trained_flow / "samples.npy")).all()
    assert (trained_flow / "forward.png").is_file() and (trained_flow / "reverse.png").is_file()


def test_load_of_a_flow_checkpoint_samples_as_flow(script, trained_flow, tmp_path):
    """--load restores the objective, and the sampler's default follows it: the training run's samples again;
    midpoint also runs on it; an eps sampler is refused."""
    ckpt = trained_flow / "model.pt"
    run = run_main(script, *TINY, "--no-plots", "--load", ckpt, "--out", tmp_path / "a")
    assert run.code == 0, run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "samples.npy"), np.load(trained_flow / "samples.npy"))
    run = run_main(script, *TINY, "--no-plots", "--load", ckpt, "--sampler", "midpoint", "--out", tmp_path / "b")
    assert run.code == 0, run.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["sampler"] == "midpoint"
    assert_one_line_error(run_main(script, *TINY, "--load", ckpt, "--sampler", "ddim", "--out", tmp_path / "c"), 2,
                          "--sampler ddim")
