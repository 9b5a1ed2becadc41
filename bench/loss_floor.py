"""The loss of the exact noise predictor E[eps | x_t] at each script's defaults: the floor that loss.png draws
(LOSS_FLOOR in both scripts). No network can do better: x_t does not determine the noise that made it.

Spiral: the data's density is a mixture of Gaussians along the arc (as data_log_density), so given x_t each
node's posterior weight and Gaussian posterior mean of x0 give E[x0 | x_t] exactly. Sine: a wave is
sin(f x + phi), so E[x0 | x_t] is a posterior mean over (f, phi), on a grid refined around a peaked posterior.
Then eps_hat = (x_t - sqrt(abar_t) E[x0 | x_t]) / sqrt(1 - abar_t), and the loss is Algorithm 1's, t uniform.
Usage: python bench/loss_floor.py (about a minute on one core)."""
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffusion_sine as sine  # noqa: E402
import diffusion_spiral as spiral  # noqa: E402


def spiral_floor(points_per_t=400, noise=spiral.CoreConfig.noise):
    panels = math.ceil(4 * math.pi * math.hypot(1, 4 * math.pi) / spiral.SCALE / (5 * noise))
    z, w = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(8))
    width = 4 * math.pi / panels
    a = ((torch.arange(panels)[:, None] + (z + 1) / 2) * width).flatten()                  # angles of the nodes
    log_w = (w.repeat(panels) * width / 2 * a / (8 * math.pi ** 2)).log()
    centres = a[:, None] * torch.stack([a.cos(), a.sin()], dim=1) / spiral.SCALE           # (m, 2)
    schedule, g, losses = spiral.make_schedule(), torch.Generator().manual_seed(0), []
    for t in range(len(schedule["betas"])):
        s, b = schedule["sqrt_alpha_bars"][t].double(), schedule["sqrt_one_minus_alpha_bars"][t].double()
        x0 = spiral.make_data(points_per_t, g, noise).double()
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x = s * x0 + b * eps
        var = s ** 2 * noise ** 2 + b ** 2                                  # of x given the node
        weight = (log_w - torch.cdist(x, s * centres) ** 2 / (2 * var)).softmax(1)               # (n, m)
        means = centres + (s * noise ** 2 / var) * (x[:, None] - s * centres)                    # (n, m, 2)
        x0_hat = (weight[:, :, None] * means).sum(1)
        losses.append(((eps - (x - s * x0_hat) / b) ** 2).mean().item())
    return sum(losses) / len(losses)


def sine_floor(waves_per_t=40, every=2):
    def posterior_mean(x, s, b, f, phi):
        w = torch.sin(f[:, None] * sine.X + phi[:, None])                                        # (k, 64)
        p = (-((x[:, None] - s * w[None]) ** 2).sum(2) / (2 * b ** 2)).softmax(1)              # (n, k)
        return p @ w, p
    f, phi = torch.meshgrid(torch.linspace(1, 5, 401, dtype=torch.float64)[:-1],
                            torch.linspace(0, 2 * math.pi, 129, dtype=torch.float64)[:-1], indexing="ij")
    f, phi = f.flatten(), phi.flatten()
    schedule, g, losses = sine.make_schedule(), torch.Generator().manual_seed(0), []
    for t in range(0, len(schedule["betas"]), every):
        s, b = schedule["sqrt_alpha_bars"][t].double(), schedule["sqrt_one_minus_alpha_bars"][t].double()
        x0 = sine.make_data(waves_per_t, g).double()
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x = s * x0 + b * eps
        x0_hat, p = posterior_mean(x, s, b, f, phi)
        for i in range(len(x)):
            if p[i].max() > 0.5:                      # a peaked posterior: integrate on a fine grid around it
                k = p[i].argmax()
                ff, pp = torch.meshgrid(f[k] + torch.linspace(-0.03, 0.03, 121, dtype=torch.float64),
                                        phi[k] + torch.linspace(-0.15, 0.15, 121, dtype=torch.float64), indexing="ij")
                x0_hat[i] = posterior_mean(x[i:i + 1], s, b, ff.flatten(), pp.flatten())[0][0]
        losses.append(((eps - (x - s * x0_hat) / b) ** 2).mean().item())
    return sum(losses) / len(losses)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(f"loss of the exact predictor E[eps | x_t] at the defaults: spiral {spiral_floor():.3f}, "
          f"sine {sine_floor():.4f} (2/64 = {2 / 64:.4f})")
