"""Helpers for the tests of both lesson scripts (fixtures live in conftest.py).

The references here are what the tests compare against, written independently of the scripts: a float64
schedule from the papers, exact noise predictors for Dirac and Gaussian data, and the exact linear-Gaussian
recursion of each sampler, derived from Gaussian conditioning.
"""
import importlib
import io
import math
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def import_script(name):
    """The lesson script `name`, imported as a module."""
    return importlib.import_module(name)


def other_name(mod):
    """The other lesson script's name."""
    return {"diffusion_spiral": "diffusion_sine", "diffusion_sine": "diffusion_spiral"}[mod.__name__]


def data_shape(mod):
    """Shape of one data point (spiral: (2,), sine: (64,)), from the data itself."""
    return tuple(mod.make_data(2, torch.Generator().manual_seed(0)).shape[1:])


def n_for(mod, total):
    """How many samples to draw so that samples x elements is about `total` (elements are independent)."""
    return max(16, total // math.prod(data_shape(mod)))


# -----------------------------------------------------------------------------
# Reference schedules, float64, written from the papers (not from the scripts)


def reference_betas(timesteps=100, kind="linear", lo=None, hi=None):
    """float64 numpy betas. linear: improved-diffusion's scaled linear (1000/T) * (1e-4 .. 0.02), or lo..hi
    when given (e.g. the unscaled 1e-4..0.02 of test_math.py's table). cosine: Nichol & Dhariwal eq. 17, s=0.008.
    Both clip beta at 0.999 (the scaled linear betas would reach 1 for T <= 20)."""
    T = timesteps
    if kind == "linear":
        scale = 1000 / T
        lo = scale * 1e-4 if lo is None else lo
        hi = scale * 0.02 if hi is None else hi
        return np.minimum(lo + (hi - lo) * np.arange(T, dtype=np.float64) / (T - 1), 0.999)
    if kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * np.pi / 2) ** 2
        return np.minimum(1 - f[1:] / f[:-1], 0.999)
    raise ValueError(kind)


def reference_schedule(timesteps=100, kind="linear", lo=None, hi=None):
    """float64 numpy dict with the scripts' key names. The posterior comes from Bayes' rule for the product of
    two Gaussians in x_{t-1}: prior q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) and likelihood
    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t): precisions add, means are precision-weighted.
    At t = 0 (paper's t = 1) x_{t-1} is x0 itself: variance 0, mean x0."""
    betas = reference_betas(timesteps, kind, lo, hi)
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    var = np.zeros_like(betas)
    coef1, coef2 = np.ones_like(betas), np.zeros_like(betas)
    t = np.arange(1, len(betas))
    precision = 1 / (1 - abar_prev[t]) + alphas[t] / betas[t]          # prior + likelihood precision
    var[t] = 1 / precision
    coef1[t] = var[t] * np.sqrt(abar_prev[t]) / (1 - abar_prev[t])     # weight of x0
    coef2[t] = var[t] * np.sqrt(alphas[t]) / betas[t]                 # weight of x_t
    return dict(betas=betas, alphas=alphas, alpha_bars=abar, alpha_bars_prev=abar_prev,
                sqrt_alpha_bars=np.sqrt(abar), sqrt_one_minus_alpha_bars=np.sqrt(1 - abar),
                posterior_mean_coef1=coef1, posterior_mean_coef2=coef2, posterior_variance=var)


def as_torch_schedule(ref):
    """A hand-made schedule dict the scripts' samplers accept (float32 tensors, like make_schedule's)."""
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in ref.items()}


# -----------------------------------------------------------------------------
# Exact noise predictors, built from the script's own *training* coefficients: q_sample(x0=1, noise=0) is
# sqrt(abar_t) and q_sample(x0=0, noise=1) is sqrt(1 - abar_t), so any off-by-one between q_sample and the
# sampler breaks the exact results.


def training_coefficients(mod, schedule):
    """(sqrt(abar_t), sqrt(1 - abar_t)) for t = 0..T-1, float64, as q_sample applies them."""
    T = len(schedule["betas"])
    t = torch.arange(T)
    one, zero = torch.ones(T, 1), torch.zeros(T, 1)
    a = mod.q_sample(one, t, zero, schedule)[:, 0].double()
    b = mod.q_sample(zero, t, one, schedule)[:, 0].double()
    return a, b


def _per_row(c, t, x):
    return c[t].view((-1,) + (1,) * (x.dim() - 1))                  # (n,) -> (n, 1, ...)


def dirac_predictor(mod, schedule, x0):
    """Data = the single point x0: eps*(x, t) = (x - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
    a, b = training_coefficients(mod, schedule)
    x0 = x0.double()

    def eps(x, t):
        xd = x.double()
        return ((xd - _per_row(a, t, x) * x0) / _per_row(b, t, x)).to(x.dtype)
    return eps


def gaussian_predictor(mod, schedule, mu, s):
    """Data ~ N(mu, s^2 I): eps*(x, t) = sqrt(1 - abar_t) (x - sqrt(abar_t) mu) / (abar_t s^2 + 1 - abar_t)."""
    a, b = training_coefficients(mod, schedule)

    def eps(x, t):
        at, bt = _per_row(a, t, x), _per_row(b, t, x)
        return (bt * (x.double() - at * mu) / (at ** 2 * s ** 2 + bt ** 2)).to(x.dtype)
    return eps


# -----------------------------------------------------------------------------
# The exact recursion: with the Gaussian predictor every sampler step is linear in x plus Gaussian noise,
# so starting from x_T ~ N(m, V) the output is exactly N(m_0, V_0)


def ddim_timesteps(T, steps):
    """The scripts' DDIM spacing, "linspace" in Lin et al. 2023 (Table 2): linspace(T-1, 0, K).round()."""
    return np.round(np.linspace(T - 1, 0, steps)).astype(int)


def dpm_timesteps(T, steps):
    """The scripts' DPM-Solver spacing, written from its rule: t_i = round((T - K) (1 - i/(K-1))^1.5) + K-1-i."""
    K = steps
    return np.round((T - K) * np.linspace(1, 0, K) ** 1.5).astype(int) + np.arange(K - 1, -1, -1)


def gaussian_recursion(alpha_bars, mu, s, sampler="ddpm", steps=None, m=0.0, V=1.0, timesteps=None,
                       eps_affine=None):
    """Mean and std of the sampler's output for data N(mu, s^2), exact, float64.
    x0_hat = A x + B with A = sqrt(abar) s^2 / v, B = (1 - abar) mu / v, v = abar s^2 + 1 - abar.
    DDPM (sigma_t^2 = beta~_t): x_{t-1} = c0 x0_hat + ct x_t + sigma_t z with the posterior coefficients.
    DDIM (eta = 0): x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps_hat, the last step to abar = 1.
    DPM-Solver++(2M), from Lu et al.'s Algorithm 2 in its own variables (alpha = sqrt(abar), sigma =
    sqrt(1 - abar), lambda = log(alpha / sigma), h = lambda_next - lambda):
    x_next = (sigma_next / sigma) x - alpha_next (e^-h - 1) D, D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev,
    r = h_prev / h, first order (D = x0_hat) on the first and the last step. D depends on the previous x0_hat,
    so the state is the pair (x, x0_hat_prev): mean vector M, covariance C, updated as M <- L M + c,
    C <- L C L^T + noise. DDIM and DPM visit the scripts' timesteps unless `timesteps` lists others.
    eps_affine(abar) -> (P, Q), if given, replaces the Gaussian's exact predictor by eps = P x + Q (any
    predictor affine in x, e.g. a guided mix of two Gaussians'): then x0_hat = A x + B with
    A = (1 - sqrt(1 - abar) P) / sqrt(abar), B = -sqrt(1 - abar) Q / sqrt(abar)."""
    abar = np.asarray(alpha_bars, dtype=np.float64)
    T = len(abar)
    if sampler == "ddpm":
        ts = np.arange(T - 1, -1, -1)
        prevs = [abar[t - 1] if t > 0 else 1.0 for t in ts]
    else:
        spacing = dpm_timesteps if sampler == "dpm" else ddim_timesteps
        ts = spacing(T, steps or T) if timesteps is None else np.asarray(timesteps)
        prevs = list(abar[ts[1:]]) + [1.0]
    lam = lambda a: math.log(math.sqrt(a) / math.sqrt(1 - a)) if a < 1 else math.inf
    mean, cov = np.array([m, 0.0]), np.array([[V, 0.0], [0.0, 0.0]])
    h_prev = None
    for i, (t, ap) in enumerate(zip(ts, prevs)):
        at = abar[t]
        v = at * s ** 2 + 1 - at
        A, B = math.sqrt(at) * s ** 2 / v, (1 - at) * mu / v
        if eps_affine is not None:
            P, Q = eps_affine(at)
            A, B = (1 - math.sqrt(1 - at) * P) / math.sqrt(at), -math.sqrt(1 - at) * Q / math.sqrt(at)
        var, w = 0.0, 0.0
        if sampler == "ddpm":
            alpha = at / ap
            c0 = (1 - alpha) * math.sqrt(ap) / (1 - at)
            ct = (1 - ap) * math.sqrt(alpha) / (1 - at)
            var = (1 - alpha) * (1 - ap) / (1 - at)
        elif sampler == "ddim":
            # eps_hat = (x - sqrt(at) x0_hat) / sqrt(1 - at)
            ct = math.sqrt((1 - ap) / (1 - at))
            c0 = math.sqrt(ap) - ct * math.sqrt(at)
        else:
            h = lam(ap) - lam(at)
            ct = math.sqrt(1 - ap) / math.sqrt(1 - at)
            c0 = -math.sqrt(ap) * (math.exp(-h) - 1)
            if 0 < i < len(ts) - 1:
                w = 1 / (2 * (h_prev / h))
            h_prev = h
        # x' = ct x + c0 ((1 + w) x0_hat - w x0_hat_prev), x0_hat_prev' = x0_hat, x0_hat = A x + B
        L = np.array([[ct + c0 * (1 + w) * A, -c0 * w], [A, 0.0]])
        mean = L @ mean + np.array([c0 * (1 + w) * B, B])
        cov = L @ cov @ L.T + np.array([[var, 0.0], [0.0, 0.0]])
    return mean[0], math.sqrt(cov[0, 0])


def gaussian_eps_affine(mu, s):
    """The exact predictor of N(mu, s^2) data as eps = P x + Q: P = sqrt(1 - abar) / v,
    Q = -sqrt(1 - abar) sqrt(abar) mu / v, v = abar s^2 + 1 - abar."""
    def affine(at):
        v = at * s ** 2 + 1 - at
        return math.sqrt(1 - at) / v, -math.sqrt(1 - at) * math.sqrt(at) * mu / v
    return affine


def ode_solution(alpha_bars, mu, s, m=0.0, V=1.0):
    """The probability-flow ODE's exact output for data N(mu, s^2), started from x_T ~ N(m, V) and run to
    abar = 1: along the ODE, (x_t - sqrt(abar_t) mu) / sqrt(v_t) is constant, v_t = abar_t s^2 + 1 - abar_t
    (the marginal's variance), so the output is mu + s (x_T - sqrt(abar_T) mu) / sqrt(v_T)."""
    aT = float(alpha_bars[-1])
    k = s / math.sqrt(aT * s ** 2 + 1 - aT)
    return mu + k * (m - math.sqrt(aT) * mu), k * math.sqrt(V)


def assert_mean_std(x, mean, std, n_se=5.0):
    """Sample mean and std of all elements of x against (mean, std), within n_se standard errors:
    SE(mean) = std/sqrt(N), SE(std) ~ std/sqrt(2N)."""
    x = x.double().flatten()
    N = x.numel()
    m, sd = x.mean().item(), x.std().item()
    se_m, se_s = std / math.sqrt(N), std / math.sqrt(2 * N)
    assert abs(m - mean) < n_se * se_m, f"mean {m:.5f}, expected {mean:.5f} +- {n_se} x {se_m:.2e}"
    assert abs(sd - std) < n_se * se_s, f"std {sd:.5f}, expected {std:.5f} +- {n_se} x {se_s:.2e}"


# -----------------------------------------------------------------------------
# Running main() and capturing what a user would see

TINY = ["--steps", "30", "--batch-size", "128", "--num-samples", "64", "--seed", "3"]


@dataclass
class Run:
    code: int      # exit status: 0 when main returned normally
    stdout: str
    stderr: str


def run_main(mod, *args):
    """main([...]) with stdout and stderr captured; SystemExit becomes .code. Any other exception propagates
    (a traceback is a test failure)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            mod.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return Run(code, out.getvalue(), err.getvalue())


def assert_one_line_error(run, code, hint=None):
    """Exit status `code`, exactly one non-empty line on stderr (containing `hint`), no traceback."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.code == code, f"exit status {run.code}, expected {code}; stderr: {run.stderr!r}"
    assert "Traceback" not in run.stderr + run.stdout
    assert len(lines) == 1 and len(run.stderr.strip().splitlines()) == 1, f"stderr: {run.stderr!r}"
    if hint:
        assert hint in lines[0], f"{hint!r} not in {lines[0]!r}"
    return lines[0]


# -----------------------------------------------------------------------------
# Flow matching: the straight path x_s = (1 - s) x0 + s eps, s = 1 noise, s = 0 data; the network's target is the
# velocity v = eps - x0, and sampling integrates dx/ds = v from s = 1 to 0.


def flow_schedule(script):
    """sample() reads only the device from the schedule on the flow path; a default one stands in."""
    return script.make_schedule(10)


def nonlinear_velocity(x, s):
    """Any velocity field will do, as long as it is not affine in x: an identity of the samplers must hold for every
    model, not only for the exact velocities."""
    s = s.view((-1,) + (1,) * (x.dim() - 1))
    return torch.tanh(2 * x) * (1 + s) - torch.sin(3 * x) * s + 0.3


def flow_grid(steps):
    """The scripts' grid of s, written from their rule: K + 1 equal steps from s = 1 to s = 0, float64."""
    return 1 - np.arange(steps + 1) / steps


def dirac_velocity(x0):
    """Data = the single point x0: every path ends at x0, so v*(x, s) = (x - x0) / s."""
    x0 = x0.double()

    def velocity(x, s):
        return ((x.double() - x0) / s.double().view((-1,) + (1,) * (x.dim() - 1))).to(x.dtype)
    return velocity


def gaussian_velocity_affine(mu, S):
    """The exact velocity of data N(mu, S^2) (per coordinate) as v = a(s) x + b(s). x_s has mean m = (1 - s) mu and
    variance V = (1 - s)^2 S^2 + s^2; Gaussian conditioning gives E[x0 | x] = mu + (1 - s) S^2 (x - m) / V and
    E[eps | x] = s (x - m) / V, and v* = E[eps | x] - E[x0 | x]: a = (s - (1 - s) S^2) / V, b = -a m - mu."""
    def affine(s):
        V = (1 - s) ** 2 * S ** 2 + s ** 2
        a = (s - (1 - s) * S ** 2) / V
        return a, -a * (1 - s) * mu - mu
    return affine


def gaussian_velocity(mu, S, affine=None):
    """gaussian_velocity_affine as a predictor (x, s) -> v, computed in float64."""
    affine = affine or gaussian_velocity_affine(mu, S)

    def velocity(x, s):
        a, b = affine(s.double().view((-1,) + (1,) * (x.dim() - 1)))
        return (a * x.double() + b).to(x.dtype)
    return velocity


def flow_recursion(affine, times, sampler="euler", m=0.0, sd=1.0):
    """Mean and std of the flow sampler's output, exact, float64, for a velocity affine in x (affine(s) -> (a, b)),
    started from noise x ~ N(m, sd^2) at s = 1. Euler: x' = x + h v(x, s), h = s' - s, so x' = (1 + h a) x + h b.
    Midpoint: x_mid = x + (h/2) v(x, s), x' = x + h v(x_mid, s + h/2)."""
    for s, s_next in zip(times[:-1], times[1:]):
        h = s_next - s
        a, b = affine(s)
        if sampler == "euler":
            L, c = 1 + h * a, h * b
        else:
            am, bm = affine(s + h / 2)
            L, c = 1 + h * am * (1 + h * a / 2), h * (am * h * b / 2 + bm)
        m, sd = L * m + c, abs(L) * sd
    return m, sd


def flow_eta_recursion(mu, S, times, eta, m=0.0, sd=1.0):
    """Mean and std of Euler steps with DDIM's eta on the straight path (alpha = 1 - s, sigma = s), exact, float64,
    for data N(mu, S^2) and its exact velocity, from noise x ~ N(m, sd^2) at s = 1. The posterior q(x_{s'} | x_s, x0) of the
    path x_s = (1 - s) x0 + s eps, written as DDIM writes it (eq. 16), has std
    sig = eta s' sqrt(1 - ((1 - s) s' / ((1 - s') s))^2), and the step is
    x' = (1 - s') x0_hat + sqrt(s'^2 - sig^2) eps_hat + sig z. Gaussian conditioning on x_s (mean (1 - s) mu,
    variance V = (1 - s)^2 S^2 + s^2) gives x0_hat = mu + c0 c, eps_hat = c1 c, c = x - (1 - s) mu,
    c0 = (1 - s) S^2 / V, c1 = s / V: x' is affine in x plus independent noise."""
    var = sd ** 2
    for s, s_next in zip(times[:-1], times[1:]):
        sig = eta * s_next * math.sqrt(1 - ((1 - s) * s_next / ((1 - s_next) * s)) ** 2)
        V = (1 - s) ** 2 * S ** 2 + s ** 2
        c0, c1 = (1 - s) * S ** 2 / V, s / V
        gain = (1 - s_next) * c0 + math.sqrt(s_next ** 2 - sig ** 2) * c1        # d x' / d x
        m = (1 - s_next) * mu + gain * (m - (1 - s) * mu)
        var = gain ** 2 * var + sig ** 2
    return m, math.sqrt(var)
