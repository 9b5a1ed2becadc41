"""The shared math of both scripts against closed forms and independently computed numbers."""
import math

import numpy as np
import pytest
import torch

from helpers import (as_torch_schedule, assert_mean_std, data_shape, dirac_predictor, dpm_timesteps,
                     gaussian_predictor, gaussian_recursion, n_for, ode_solution, reference_betas,
                     reference_schedule)

KINDS = ["linear", "cosine"]

# alpha_bar at code index t (the paper's step t+1), computed in float64 with mpmath (30 digits), not with the
# scripts: linear = improved-diffusion's scaled 1000/T * (1e-4 .. 0.02); cosine = Nichol & Dhariwal eq. 17,
# s = 0.008, beta clipped at 0.999 (at T=100 the last beta is exactly 0.999, so abar_T = 1e-3 abar_{T-1}).
REFERENCE_ALPHA_BARS = {
    (100, "linear"): {0: 0.999, 9: 0.903813195923, 49: 0.0741969967174, 98: 2.54876121946e-5,
                      99: 2.03900897556e-5},
    (100, "cosine"): {0: 0.999368718402, 9: 0.972092737114, 49: 0.493843590441, 98: 2.42857227935e-4,
                      99: 2.42857227935e-7},
    (37, "linear"): {0: 0.997297297297, 18: 0.05562156805, 36: 3.19162613763e-6},
    (37, "cosine"): {0: 0.997178552721, 18: 0.472795198639, 36: 1.77307021735e-6},
}


# -----------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_bar_is_cumprod_of_one_minus_beta(script, kind):
    s = script.make_schedule(100, kind)
    assert all(v.dtype == torch.float32 and v.shape == (100,) for v in s.values())
    betas = s["betas"].double()
    assert (betas > 0).all() and (betas < 1).all()
    abar = torch.cumprod(1 - betas, 0)  # from float32 betas: 1 - 0.999 carries a relative error of 1.3e-5
    torch.testing.assert_close(s["alphas"].double(), 1 - betas, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s["alpha_bars"].double(), abar, rtol=1e-4, atol=0)
    torch.testing.assert_close(s["alpha_bars_prev"].double(), torch.cat([torch.ones(1).double(), abar[:-1]]),
                               rtol=1e-4, atol=0)
    torch.testing.assert_close(s["sqrt_alpha_bars"].double(), abar.sqrt(), rtol=1e-4, atol=0)
    torch.testing.assert_close(s["sqrt_one_minus_alpha_bars"].double(), (1 - abar).sqrt(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("T, kind", list(REFERENCE_ALPHA_BARS))
def test_schedule_against_reference_numbers(script, T, kind):
    abar = script.make_schedule(T, kind)["alpha_bars"].double()
    for t, expected in REFERENCE_ALPHA_BARS[T, kind].items():
        assert abar[t].item() == pytest.approx(expected, rel=2e-5), f"alpha_bar[{t}]"


@pytest.mark.parametrize("kind", KINDS)
def test_default_schedule_ends_in_noise(script, kind):
    """x_T must be (nearly) pure noise, since sampling starts from N(0, I): at the T the script runs with,
    for either schedule; and make_schedule() with no arguments is the default run's schedule."""
    cfg = script.Config()
    assert script.make_schedule(cfg.timesteps, kind)["alpha_bars"][-1] < 1e-2
    default, configured = script.make_schedule(), script.make_schedule(cfg.timesteps, cfg.schedule)
    assert len(default["betas"]) == cfg.timesteps
    assert all(torch.equal(default[k], configured[k]) for k in configured)


@pytest.mark.parametrize("T", [2, 3, 10, 20, 21])
@pytest.mark.parametrize("kind", KINDS)
def test_short_schedules_are_valid(script, T, kind):
    """--timesteps is the user's choice: every beta stays below 1, abar falls from near 1 to near 0."""
    s = script.make_schedule(T, kind)
    betas, abar = s["betas"].double().numpy(), s["alpha_bars"].double().numpy()
    np.testing.assert_allclose(betas, reference_betas(T, kind), rtol=1e-6)
    assert (betas > 0).all() and (betas < 1).all()
    assert (np.diff(abar) < 0).all() and 0 < abar[-1] < 1e-2
    assert np.isfinite(torch.stack(list(s.values())).numpy()).all()


# -----------------------------------------------------------------------------
# Forward process


@pytest.mark.parametrize("kind", KINDS)
def test_q_sample_closed_form(script, kind):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with abar from the float64 reference."""
    g = torch.Generator().manual_seed(0)
    T = 100
    ref = reference_schedule(T, kind)
    x0 = script.make_data(256, g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.cat([torch.arange(T), torch.randint(0, T, (256 - T,), generator=g)])
    xt = script.q_sample(x0, t, noise, script.make_schedule(T, kind))
    a = torch.tensor(ref["sqrt_alpha_bars"])[t].view((-1,) + (1,) * (x0.dim() - 1))
    b = torch.tensor(ref["sqrt_one_minus_alpha_bars"])[t].view((-1,) + (1,) * (x0.dim() - 1))
    torch.testing.assert_close(xt.double(), a * x0.double() + b * noise.double(), rtol=1e-5, atol=1e-5)


def test_q_sample_matches_iterated_forward_process(script):
    """In distribution: q_sample at step t against t+1 one-step transitions
    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z, started from x0 (mean and variance within 5 SE)."""
    s = script.make_schedule(100, "linear")
    g = torch.Generator().manual_seed(1)
    n = n_for(script, 100_000)
    x0 = torch.full((n,) + data_shape(script), 2.0)
    checkpoints = {0, 3, 10, 25, 50, 99}
    x = x0.clone()
    for t in range(100):
        x = (1 - s["betas"][t]).sqrt() * x + s["betas"][t].sqrt() * torch.randn(x.shape, generator=g)
        if t in checkpoints:
            direct = script.q_sample(x0, torch.full((n,), t), torch.randn(x0.shape, generator=g), s)
            N = x.numel()
            for name, stat, se in [("mean", lambda v: v.mean(), lambda sd: sd / math.sqrt(N)),
                                   ("std", lambda v: v.std(), lambda sd: sd / math.sqrt(2 * N))]:
                a, b = stat(x.double()).item(), stat(direct.double()).item()
                sd = x.double().std().item()
                assert abs(a - b) < 5 * math.sqrt(2) * se(sd), f"t={t} {name}: iterated {a:.4f}, q_sample {b:.4f}"


# -----------------------------------------------------------------------------
# Posterior q(x_{t-1} | x_t, x_0)


@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_step_is_the_posterior_of_bayes_rule(script, kind):
    """Every DDPM step, given the true noise (data = one point x0), is a draw from q(x_{t-1} | x_t, x0): mean
    coef1 x0 + coef2 x_t and variance from the product of the Gaussians q(x_{t-1}|x0) q(x_t|x_{t-1}), with the
    same z the sampler drew (replayed from its generator)."""
    s = script.make_schedule(100, kind)
    ref = reference_schedule(100, kind)
    np.testing.assert_allclose(s["posterior_variance"].double().numpy(), ref["posterior_variance"], rtol=1e-4,
                               atol=1e-7)
    assert s["posterior_variance"][0] == 0, "no noise at the last step"
    shape = data_shape(script)
    x0 = torch.linspace(-0.7, 0.7, math.prod(shape)).view(shape)
    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(1))
    steps = [x] + list(script.ddpm(dirac_predictor(script, s, x0), x, s, torch.Generator().manual_seed(2)))
    replay = torch.Generator().manual_seed(2)
    for i, t in enumerate(range(99, -1, -1)):
        z = torch.randn(x.shape, generator=replay).double()
        x_t = steps[i].double()
        want = ref["posterior_mean_coef1"][t] * x0.double() + ref["posterior_mean_coef2"][t] * x_t
        want = want + math.sqrt(ref["posterior_variance"][t]) * z
        torch.testing.assert_close(steps[i + 1].double(), want, rtol=0, atol=1e-4 * (1 + x_t.abs().max().item()),
                                   msg=f"step t = {t}")


# -----------------------------------------------------------------------------
# Samplers with exact predictors, no training

SAMPLERS = [("ddpm", None), ("ddim", None), ("ddim", 10), ("dpm", None), ("dpm", 10), ("dpm", 3)]
SAMPLER_IDS = ["ddpm", "ddim-T", "ddim-10", "dpm-T", "dpm-10", "dpm-3"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sampler, steps", SAMPLERS, ids=SAMPLER_IDS)
def test_dirac_data_comes_back_exactly(script, kind, sampler, steps):
    """Data = one point x0*: x0_hat = x0* at every step, and the last step (no noise; abar_prev = 1) returns
    it to float precision, for any seed."""
    s = script.make_schedule(100, kind)
    for seed in [0, 1, 2]:
        g = torch.Generator().manual_seed(seed)
        x0 = script.make_data(1, g)[0]
        out = script.sample(dirac_predictor(script, s, x0), 128, s, sampler, steps, generator=g,
                            shape=tuple(x0.shape))
        assert out.shape == (128,) + tuple(x0.shape)
        err = (out - x0).abs().max().item()
        assert err < 1e-5, f"seed {seed}: max |x - x0*| = {err:.2e}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sampler, steps", SAMPLERS, ids=SAMPLER_IDS)
def test_gaussian_data_matches_exact_recursion(script, kind, sampler, steps):
    """Data N(mu, s^2): the output is exactly N(m, V) from the sampler's linear recursion (not N(mu, s^2))."""
    mu, sd = 0.5, 0.2
    s = script.make_schedule(100, kind)
    m, v = gaussian_recursion(reference_schedule(100, kind)["alpha_bars"], mu, sd, sampler, steps)
    g = torch.Generator().manual_seed(4)
    out = script.sample(gaussian_predictor(script, s, mu, sd), n_for(script, 400_000), s, sampler, steps,
                        generator=g, shape=data_shape(script))
    assert_mean_std(out, m, v)


@pytest.mark.parametrize("kind", KINDS)
def test_dpm_approaches_the_probability_flow_ode(kind):
    """DPM-Solver++(2M) solves the probability-flow ODE, whose exact output for Gaussian data is known in
    closed form (helpers.ode_solution): its error shrinks as K grows and stays below DDIM's (the first-order
    solver of the same ODE) at every K; at K = T it is within 0.2 % of the data's spread."""
    abar = reference_schedule(100, kind)["alpha_bars"]
    exact = np.array(ode_solution(abar, 0.5, 0.2))
    error = lambda sampler, K: np.abs(np.array(gaussian_recursion(abar, 0.5, 0.2, sampler, K)) - exact).sum()
    dpm = [error("dpm", K) for K in (20, 50, 100)]
    assert dpm[0] > dpm[1] > dpm[2] and dpm[2] < 2e-3 * 0.2 * 10, dpm
    assert all(d < error("ddim", K) / 4 for d, K in zip(dpm, (20, 50, 100)))


@pytest.mark.parametrize("steps", [1, 2, 7, 10, 100])
def test_dpm_makes_exactly_k_network_calls_on_distinct_steps(script, steps):
    """K steps, K calls, each at a different t, from T-1 down to 0 (K = 1: one jump from T-1 to abar = 1)."""
    s = script.make_schedule(100, "cosine")
    seen = []
    model = lambda x, t: seen.append(int(t[0])) or torch.zeros_like(x)
    script.sample(model, 4, s, "dpm", steps, torch.Generator().manual_seed(0))
    assert seen == list(dpm_timesteps(100, steps)) and len(set(seen)) == steps
    assert seen[0] == 99 and (steps == 1 or seen[-1] == 0)


def test_ddim_with_eta_one_is_ddpm(script):
    """DDIM eq. 16 at eta = 1 and K = T gives sigma_t = sqrt(beta~_t), the DDPM posterior's, at every step:
    the two samplers are then one, and draw the same samples from the same generator (unclipped)."""
    s = script.make_schedule(100, "cosine")
    predictor = gaussian_predictor(script, s, 0.3, 0.5)
    ddpm = script.sample(predictor, 256, s, "ddpm", generator=torch.Generator().manual_seed(8), shape=(8,))
    ddim = script.sample(predictor, 256, s, "ddim", 100, torch.Generator().manual_seed(8), eta=1.0, shape=(8,))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


def test_ddim_with_eta_one_matches_the_ddpm_recursion(script):
    """With the Gaussian oracle, DDIM at eta = 1 and K = T has DDPM's exact output distribution."""
    s = script.make_schedule(100, "linear")
    m, v = gaussian_recursion(reference_schedule(100, "linear")["alpha_bars"], 0.5, 0.2, "ddpm")
    out = script.sample(gaussian_predictor(script, s, 0.5, 0.2), n_for(script, 400_000), s, "ddim", 100,
                        torch.Generator().manual_seed(9), eta=1.0, shape=data_shape(script))
    assert_mean_std(out, m, v)


# A table computed independently in float64: the mean and sd of each sampler's output for Gaussian data N(mu, s^2),
# T = 100, starting from x_{T-1} ~ N(0, 1). The 10-step DDIM rows use diffusers' "trailing" steps 99, 89, ..., 9
# or its "leading" ones 90, 80, ..., 0; the scripts use linspace(99, 0, 10).round().
LIN_02, LIN_X10 = (1e-4, 0.02), (None, None)
TABLE = [  # (schedule lo/hi, mu, s, sampler, timesteps, mean, sd)
    (LIN_02, 0.0, 1.0, "ddpm", None, 0.0, 0.9875),
    (LIN_02, 0.0, 1.0, "ddim", None, 0.0, 0.9957),
    (LIN_02, 0.0, 1.0, "ddim", range(90, -1, -10), 0.0, 0.9611),
    (LIN_02, 0.0, 1.0, "ddim", range(99, -1, -10), 0.0, 0.9579),
    (LIN_02, 0.5, 0.2, "ddpm", None, 0.4888, 0.1915),
    (LIN_02, 0.5, 0.2, "ddim", None, 0.4268, 0.2429),
    (LIN_02, 0.5, 0.2, "ddim", range(99, -1, -10), 0.4391, 0.2020),
    (LIN_02, 0.0, 0.5, "ddpm", None, 0.0, 0.5006),
    (LIN_02, 0.0, 0.5, "ddim", None, 0.0, 0.5813),
    ((1e-4, 0.1), 0.5, 0.2, "ddpm", None, 0.4999, 0.1807),
    ((1e-4, 0.1), 0.5, 0.2, "ddim", range(90, -1, -10), 0.4925, 0.1276),
    (LIN_X10, 0.5, 0.2, "ddpm", None, 0.5000, 0.1751),
    (LIN_X10, 0.5, 0.2, "ddim", None, 0.4996, 0.1876),
    (LIN_X10, 0.5, 0.2, "ddim", range(99, -1, -10), 0.4998, 0.0996),
]


@pytest.mark.parametrize("lohi, mu, s, sampler, timesteps, mean, sd", TABLE)
def test_recursion_reproduces_math_table(lohi, mu, s, sampler, timesteps, mean, sd):
    """The reference recursion itself, against that independently computed table."""
    abar = reference_schedule(100, "linear", *lohi)["alpha_bars"]
    m, v = gaussian_recursion(abar, mu, s, sampler, timesteps=timesteps)
    assert m == pytest.approx(mean, abs=1e-4) and v == pytest.approx(sd, abs=1e-4)


def test_ddpm_on_unscaled_schedule_matches_math_table(script):
    """The script's DDPM sampler on a hand-made 1e-4..0.02 schedule (where the table applies): N(.5, .2^2)
    comes back as .4888/.1915, not as .5/.2 (x_T is still 60 % signal but sampling starts from N(0, 1))."""
    ref = reference_schedule(100, "linear", 1e-4, 0.02)
    s = as_torch_schedule(ref)
    g = torch.Generator().manual_seed(5)
    out = script.sample(gaussian_predictor(script, s, 0.5, 0.2), n_for(script, 400_000), s, "ddpm",
                        generator=g, shape=data_shape(script))
    assert_mean_std(out, 0.4888, 0.1915, n_se=6)  # table rounded to 4 digits: 5e-5 is < 1 SE here


# -----------------------------------------------------------------------------
# The two scripts' copies of the shared math agree


@pytest.mark.parametrize("T", [100, 37])
@pytest.mark.parametrize("kind", KINDS)
def test_scripts_agree_on_schedule_and_q_sample(both_scripts, T, kind):
    a, b = both_scripts
    sa, sb = a.make_schedule(T, kind), b.make_schedule(T, kind)
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-6, atol=0, msg=key)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    t = torch.randint(0, T, (64,), generator=g)
    torch.testing.assert_close(a.q_sample(x0, t, noise, sa), b.q_sample(x0, t, noise, sb), rtol=1e-6, atol=1e-7)


def test_scripts_agree_on_timestep_embedding(both_scripts):
    a, b = both_scripts
    t = torch.arange(100)
    for dim in [16, 32]:
        torch.testing.assert_close(a.timestep_embedding(t, dim, 100), b.timestep_embedding(t, dim, 100),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler, steps", SAMPLERS, ids=SAMPLER_IDS)
def test_scripts_agree_on_sampling(both_scripts, sampler, steps):
    """Same analytic predictor, same seed, same shape: the same samples."""
    outs = []
    for mod in both_scripts:
        s = mod.make_schedule(100, "linear")
        g = torch.Generator().manual_seed(7)
        outs.append(mod.sample(gaussian_predictor(mod, s, 0.3, 0.5), 256, s, sampler, steps, generator=g,
                               shape=(8,)))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# Models


def test_timestep_embedding_separates_neighbouring_steps(script):
    """Neighbouring steps get clearly different embeddings (fed t/T, a sinusoidal embedding with
    max_period 1e4 is nearly constant, a pitfall reported in several public repositories)."""
    e = script.timestep_embedding(torch.arange(100), 32, 100).double()   # (T, 32)
    assert e.shape == (100, 32)
    step = (e[1:] - e[:-1]).norm(dim=1)                                  # (T-1,)
    assert step.min() > 0.25 * e.norm(dim=1).mean(), f"smallest step {step.min():.4f}"


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_model_shape_and_time_dependence(script, kind):
    torch.manual_seed(0)
    cfg = script.Config(model=kind)
    model = script.build_model(kind, cfg, script.make_schedule(cfg.timesteps, cfg.schedule)).eval()
    x = script.make_data(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out0 = model(x, torch.zeros(16, dtype=torch.long))
        out1 = model(x, torch.full((16,), cfg.timesteps - 1, dtype=torch.long))
        out_mixed = model(x, torch.randint(0, cfg.timesteps, (16,)))
    assert out0.shape == x.shape and out_mixed.shape == x.shape
    assert torch.isfinite(out0).all() and torch.isfinite(out1).all()
    assert (out0 - out1).abs().max() > 1e-3, "the prediction ignores t"


# -----------------------------------------------------------------------------
# The score view: eps_theta estimates -sqrt(1 - abar_t) grad log p_t, and predict_x0 is Tweedie's formula


def test_exact_noise_is_the_scaled_score_and_predict_x0_is_tweedies_formula(script):
    """Gaussian data N(mu, S^2 I): p_t = N(sqrt(abar) mu, (abar S^2 + 1 - abar) I), whose score is
    -(x - sqrt(abar) mu) / (abar S^2 + 1 - abar). The exact predictor is -sqrt(1 - abar) times it, and
    predict_x0 of it is Tweedie's (x + (1 - abar) score) / sqrt(abar), which for Gaussians is the posterior mean
    E[x0 | x_t] = mu + sqrt(abar) S^2 (x - sqrt(abar) mu) / (abar S^2 + 1 - abar), by Gaussian conditioning."""
    schedule = script.make_schedule()
    T, (mu, S) = len(schedule["betas"]), (0.3, 0.7)
    eps = gaussian_predictor(script, schedule, mu, S)
    x = 2 * torch.randn(256, *data_shape(script), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in [0, T // 4, T // 2, 3 * T // 4]:
        a, b = schedule["sqrt_alpha_bars"][t].double(), schedule["sqrt_one_minus_alpha_bars"][t].double()
        abar = a ** 2                                                  # as q_sample applies it (float32 a, b)
        var = abar * S ** 2 + b ** 2
        score = -(x - a * mu) / var
        predicted = eps(x, torch.full((len(x),), t)).double()
        torch.testing.assert_close(predicted, -b * score, rtol=1e-5, atol=1e-6)
        x0_hat = script.predict_x0(x, predicted, abar)
        torch.testing.assert_close(x0_hat, (x + b ** 2 * score) / a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x0_hat, mu + a * S ** 2 * (x - a * mu) / var, rtol=1e-5, atol=1e-5)
