"""The spiral's likelihoods in nats against closed forms: the data's own density against an independent integral
and its normalisation, a flow model's exact log-likelihood for Gaussian data and its normalisation for a
nonlinear velocity, DDPM's variational bound for Gaussian data term by term, and the KL of a trained flow model."""
import json
import math

import numpy as np
import pytest
import torch

from helpers import TINY, gaussian_predictor, gaussian_velocity, import_script, reference_schedule, run_main

spiral = import_script("diffusion_spiral")


def gen(seed):
    return torch.Generator().manual_seed(seed)


# -----------------------------------------------------------------------------
# The data's density


def spiral_log_density_trapezoid(x, noise, nodes=2 ** 21):
    """log p_data at the rows of x, float64 numpy: the trapezoid rule over the angle a = 4 pi sqrt(u) of
    u ~ U[0, 1], whose density is du/da = a / (8 pi^2), at 2^21 + 1 nodes (at most 1.3e-5 apart along the
    curve), each row's sum taken with its largest term factored out."""
    a = np.linspace(0, 4 * np.pi, nodes + 1)
    weight = np.full(nodes + 1, 4 * np.pi / nodes) * a / (8 * np.pi ** 2)
    weight[[0, -1]] /= 2                                                  # the trapezoid's end weights
    log_weight = np.log(weight, where=weight > 0, out=np.full_like(weight, -np.inf))   # -inf at a = 0
    cx, cy = a * np.cos(a) / (2 * np.pi), a * np.sin(a) / (2 * np.pi)      # the spiral at radius a / (2 pi)
    out = []
    for px, py in np.asarray(x, dtype=np.float64):
        log_terms = log_weight - ((px - cx) ** 2 + (py - cy) ** 2) / (2 * noise ** 2)
        top = log_terms.max()
        out.append(top + np.log(np.exp(log_terms - top).sum()) - np.log(2 * np.pi * noise ** 2))
    return np.array(out)


# on the curve (at its outer end, a = 4 pi, and its centre), just off it, beyond the outer end, between the arms
POINTS = [(2.0, 0.0), (2.0, 0.01), (2.0, -0.01), (2.02, 0.0), (0.0, 0.0), (0.005, -0.01), (-1.5, 0.0),
          (-1.5, 0.03), (0.3, 0.3), (1.0, 0.02)]


@pytest.mark.parametrize("noise", [0.01, 0.003, 0.05])
def test_data_log_density_is_the_integral_over_the_curve(noise):
    """The script's Gauss-Legendre mixture against a fine trapezoid in numpy, to 1e-3 nats, at points on and off
    the curve, including its two ends (where a quadrature's error is largest) and points many noise away."""
    x = torch.tensor(POINTS, dtype=torch.float64)
    got = spiral.data_log_density(x, noise).numpy()
    expected = spiral_log_density_trapezoid(x, noise)
    assert got.dtype == np.float64 and got.shape == (len(POINTS),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_data_density_integrates_to_one():
    """exp(log p_data) at noise 0.1, summed over a grid of the plane 0.03 apart (a third of the noise), is 1: the
    mixture's weights sum to 1 and each Gaussian is normalised."""
    step = 0.03
    grid = torch.arange(-2.6, 2.6, step, dtype=torch.float64)
    x = torch.cartesian_prod(grid, grid)                                  # (n, 2) every grid point
    total = spiral.data_log_density(x, 0.1).exp().sum().item() * step ** 2
    assert total == pytest.approx(1.0, abs=1e-3)


def test_data_entropy_matches_the_reference():
    """-E[log p_data] on fresh real points at the default jitter is the entropy, -0.632 nats per point (a
    mixture over 400,000 cells), within 4 standard errors; a uniform density along the curve, 12.6 long, times
    the jitter's Gaussian across it would give log 12.6 + log(2 pi e 0.01^2) / 2 = -0.65."""
    log_p = spiral.data_log_density(spiral.make_data(4000, gen(5)))
    se = log_p.std().item() / math.sqrt(len(log_p))
    assert -log_p.mean().item() == pytest.approx(-0.632, abs=4 * se)


def test_data_without_jitter_has_no_density():
    with pytest.raises(ValueError, match="no density"):
        spiral.data_log_density(torch.zeros(3, 2), noise=0.0)


# -----------------------------------------------------------------------------
# A flow model's log-likelihood


@pytest.mark.parametrize("S", [(0.01, 1.0), (0.2, 0.5)])
def test_log_likelihood_of_the_exact_velocity_is_the_gaussians(S):
    """Data N(mu, S^2) per coordinate, one of them as thin as the spiral's jitter: with its exact velocity the
    flow's density is the Gaussian itself, so log_likelihood at the default grid is log N(x; mu, S^2) within
    0.01 nats at every point, also just inside the tails; under torch.no_grad() too."""
    mu, S = torch.tensor([0.5, -0.3], dtype=torch.float64), torch.tensor(S, dtype=torch.float64)
    z = torch.cat([torch.randn(200, 2, generator=gen(0), dtype=torch.float64),
                   torch.tensor([[3.0, 3.0], [-3.0, 1.0]], dtype=torch.float64)])
    x = mu + S * z
    with torch.no_grad():
        got = spiral.log_likelihood(gaussian_velocity(mu, S), x)
    expected = (-z ** 2 / 2 - S.log() - math.log(2 * math.pi) / 2).sum(1)
    assert got.dtype == torch.float64 and got.shape == (len(x),)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.01)


def sheared_velocity(x, s):
    """A velocity that is not affine in x and mixes the coordinates: only its Jacobian's diagonal (d/dx_j of the
    tanh) adds to the divergence, the shear by the other coordinate y does not."""
    y = x.flip(1)                                                         # (n, 2) the other coordinate
    return torch.tanh(x + 0.5) * (1 + s[:, None]) - 0.4 * torch.sin(2 * y) * s[:, None] + 0.3 * y


def test_log_likelihood_of_any_velocity_is_a_density():
    """Whatever the velocity, the flow carries N(0, I) to a density: exp(log_likelihood) summed over a grid of the
    plane (0.1 apart over [-7, 7]^2, wider than where the flow puts any mass) is 1, within the default grid's error."""
    step = 0.1
    grid = torch.arange(-7, 7 + step / 2, step, dtype=torch.float64)
    x = torch.cartesian_prod(grid, grid)
    total = spiral.log_likelihood(sheared_velocity, x).exp().sum().item() * step ** 2
    assert total == pytest.approx(1.0, abs=1e-3)


def test_trained_flow_model_kl_is_not_negative():
    """KL(p_data || p_model) = E[log p_data - log p_model] >= 0 for any model: after a quick training of the
    default flow MLP, its estimate on fresh real points is at least -3 standard errors."""
    torch.manual_seed(0)
    cfg = spiral.Config(objective="flow", steps=300, batch_size=256, warmup=30)
    model = spiral.network(cfg, None)
    data, g = spiral.make_data(20_000, gen(1)), gen(2)
    spiral.train(model, spiral.training_loss(cfg, model, data, None, g), len(data), cfg, g, log=lambda _: None)
    x = spiral.make_data(400, gen(3))
    gap = spiral.data_log_density(x) - spiral.log_likelihood(model.eval(), x)
    kl, se = gap.mean().item(), gap.std().item() / math.sqrt(len(x))
    assert math.isfinite(kl) and kl >= -3 * se, f"KL {kl:.3f} +- {se:.3f}"


# -----------------------------------------------------------------------------
# DDPM's variational bound


def gaussian_bound_terms(ref, mu, s, d=2):
    """The expected terms of the bound (Ho et al. eq. 5) for data N(mu, s^2 I) and its exact noise predictor,
    float64 numpy (T + 1,), from the posterior's coefficients. x0 and x_t are jointly Gaussian: with
    v_t = abar_t s^2 + 1 - abar_t, Var(x0 | x_t) = s^2 (1 - abar_t) / v_t per coordinate. The exact predictor
    makes mu_theta = c1 E[x0 | x_t] + c2 x_t, the posterior mean with x0 replaced by its guess, so
    mu~ - mu_theta = c1 (x0 - E[x0 | x_t]) and E[KL_t] = d c1^2 Var(x0 | x_t) / (2 beta~_t). The decoder's mean
    is E[x0 | x_t] at t = 0 itself: E[-log N(x0; mu_theta, beta_0)] = d Var(x0 | x_t) / (2 beta_0) + (d/2) log(2 pi beta_0).
    The prior: E[KL(N(sqrt(abar) x0, 1 - abar) || N(0, 1))] per coordinate is
    ((1 - abar) + abar E[x0^2] - 1 - log(1 - abar)) / 2, with E[x0^2] = mu^2 + s^2."""
    abar, beta = ref["alpha_bars"], ref["betas"]
    var_x0 = s ** 2 * (1 - abar) / (abar * s ** 2 + 1 - abar)            # (T,) Var(x0 | x_t)
    T = len(beta)
    terms = np.zeros(T + 1)
    terms[1:T] = d * ref["posterior_mean_coef1"][1:] ** 2 * var_x0[1:] / (2 * ref["posterior_variance"][1:])
    terms[0] = d * var_x0[0] / (2 * beta[0]) + d / 2 * np.log(2 * np.pi * beta[0])
    terms[T] = d * ((1 - abar[-1]) + abar[-1] * (mu ** 2 + s ** 2) - 1 - np.log(1 - abar[-1])) / 2
    return terms


@pytest.mark.parametrize("timesteps, kind", [(20, "cosine"), (50, "linear")])
def test_bound_of_the_exact_predictor_matches_its_closed_form(timesteps, kind):
    """Data N(0.5, 0.2^2) per coordinate with its exact noise predictor: each of the T + 1 terms, averaged over
    fresh points and noise, is its expected value from gaussian_bound_terms within 5 standard errors; their sum
    is the bound, and exceeds the data's own entropy (2 coordinates of log(2 pi e s^2) / 2) as a bound must."""
    mu, s, n = 0.5, 0.2, 4000
    schedule = spiral.make_schedule(timesteps, kind)
    x0 = mu + s * torch.randn(n, 2, generator=gen(1))
    eps_model = gaussian_predictor(spiral, schedule, mu, s)
    terms = spiral.nll_bound(eps_model, x0, schedule, draws=4, generator=gen(2), terms=True)
    assert terms.dtype == torch.float64 and terms.shape == (timesteps + 1, n)
    expected = gaussian_bound_terms(reference_schedule(timesteps, kind), mu, s)
    se = terms.std(1).numpy() / math.sqrt(n)
    worst = np.abs(terms.mean(1).numpy() - expected) / se
    assert worst.max() < 5, f"term {worst.argmax()} is {worst.max():.1f} standard errors off"
    bound = spiral.nll_bound(eps_model, x0, schedule, draws=4, generator=gen(2))
    torch.testing.assert_close(bound, terms.sum(0))
    assert expected.sum() > 2 * math.log(2 * math.pi * math.e * s ** 2) / 2


# -----------------------------------------------------------------------------
# Every run reports it


@pytest.mark.parametrize("objective, method, words", [("flow", "ode", "exact, by the ODE"), ("eps", "elbo", "at most")])
def test_every_run_reports_its_likelihood(objective, method, words, tmp_path):
    """metrics.json: the model's NLL of fresh real points (as many as samples, 100 to 1,000), the data's entropy on
    the same points and their difference, the KL, with its standard error; printed with the quality numbers,
    labelled exact or a bound."""
    run = run_main(spiral, *TINY, "--objective", objective, "--no-plots", "--out", tmp_path)
    assert run.code == 0, run.stderr
    lik = json.loads((tmp_path / "metrics.json").read_text())["likelihood"]
    assert lik["method"] == method and lik["points"] == 100                # TINY: 64 samples
    assert lik["kl"] == pytest.approx(lik["nll"] - lik["entropy"], abs=1e-9)
    assert lik["entropy"] == pytest.approx(-0.632, abs=5 * 0.65 / math.sqrt(100))     # the jitter's 0.01
    assert lik["kl_stderr"] > 0 and lik["kl"] > -3 * lik["kl_stderr"]            # a tiny budget: far from 0
    assert words in run.stdout and "KL" in run.stdout


def test_without_jitter_no_likelihood_is_reported(tmp_path):
    """--noise 0: the data lie on a curve and have no density, so no KL: null in metrics.json, a note saying why."""
    run = run_main(spiral, *TINY, "--noise", "0", "--no-plots", "--out", tmp_path)
    assert run.code == 0, run.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["likelihood"] is None and "curve" in metrics["likelihood_note"]
    assert "likelihood: none" in run.stdout
