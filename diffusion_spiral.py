"""Denoising diffusion (DDPM) from scratch on a 2-D spiral point cloud, then where the field went next.

The core, first and whole: noise is added to the spiral step by step (the forward process), a small network
learns to predict that noise (the training loss), and running the steps backwards from pure noise draws new
spiral points (the reverse process). It ends with ddpm_lesson(): train, sample, show. A teacher can cut the
file at the line "# %% Beyond the core" and hand out a DDPM that runs.

Then optional chapters, each using only what is above it: faster samplers (DDIM, DPM-Solver++), flow matching
(straight paths, Euler steps), fewer network calls (fresh noise, reflow, distillation), evaluation, and the
likelihood in nats against the spiral's own density. Below the ruler "Running the lesson": the command line,
files and figures.

Run it: python diffusion_spiral.py [--model unet] [--objective flow] (--help lists every flag); in a notebook,
paste this file into a cell, or call main(["--model", "unet"]); the core alone runs with ddpm_lesson().

References (each chapter cites its own where it starts):
    DDPM: Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239
    Cosine schedule: Nichol, Dhariwal 2021, "Improved DDPM", arXiv:2102.09672
    Fourier features: Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency Functions"
    Scores: Vincent 2011, "A Connection Between Score Matching and Denoising Autoencoders"; Song, Ermon 2019,
        arXiv:1907.05600; Song et al. 2021, arXiv:2011.13456; Efron 2011, "Tweedie's Formula and Selection Bias"
"""
import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# %% Config: the core's knobs, with their defaults (the default run) and help. The chapters add theirs (Config,
# below the ruler). Each is also a flag: batch_size is --batch-size. min/max bound a number (without them it
# must be positive); unet=... is the default when --model unet is chosen.

def knob(default, help, **flag):
    return field(default=default, metadata=dict(help=help, **flag))

@dataclass
class CoreConfig:
    model: str = knob("mlp", "the network, predicting the noise (or for flow, the velocity)", choices=("mlp", "unet"))
    steps: int = knob(2000, "optimizer steps")
    batch_size: int = knob(512, "points per step: the loss averages over many t, so its gradient is steadier")
    lr: float = knob(2e-3, "peak learning rate of AdamW: a linear warm-up over --warmup steps, times a cosine "
                     "decay from step 0 to 0 at the end")
    warmup: int = knob(100, "warm-up steps, from 0 to --lr")
    timesteps: int = knob(100, "T, the number of noising steps", min=2, max=10_000)
    schedule: str = knob("cosine", "beta schedule: cosine spends more steps at low noise, where the spiral "
                         "forms; linear (scaled for T) leaves more stray points", choices=("cosine", "linear"))
    num_samples: int = knob(2000, "points to generate and score")
    num_train: int = knob(100_000, "size of the training set (a fresh draw of the spiral)")
    noise: float = knob(0.01, "std of the jitter on spiral points, in normalised units", min=0, max=1)
    width: int = knob(128, "MLP width")
    unet_width: int = knob(96, "the UNet's widths are 2x, 1x, 0.5x this: 192 -> 96 -> 48 -> 96 -> 192", min=2)
    blocks: int = knob(3, "MLP residual blocks", min=1, max=100)
    seed: int = knob(0, "random seed: the same seed gives the same samples on CPU", min=0, max=2**64 - 1)
    log_every: int = knob(300, "print progress (and read the loss back, one sync) every so many steps")


# %% Data: a spiral, angle = 4 pi sqrt(u), radius = angle (two turns, points evenly spaced along the arc)

SHAPE = (2,)         # one data point
SCALE = 2 * math.pi  # E[r^2] = E[angle^2] = 8 pi^2, so dividing by 2 pi gives each coordinate mean square 1

def make_data(n, generator=None, noise=CoreConfig.noise):
    """n spiral points, float32 (n, 2), normalised: the forward process mixes data with N(0, I) noise,
    so data at the noise's scale keeps every step of the schedule equally useful."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    angle = 4 * math.pi * u.sqrt()                                             # (n,)
    points = angle[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)   # (n, 1) * (n, 2) -> (n, 2)
    points = points / SCALE + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.float()


# %% Noise schedule: beta_t for t = 0..T-1. Every comment uses this code index t, the papers' t+1: x_t is the
# data x0 after t+1 noising steps, x_{t-1} is one step less noisy, and x_{-1} is x0 itself (abar_{-1} = 1).

def make_schedule(timesteps=CoreConfig.timesteps, kind=CoreConfig.schedule, device="cpu"):
    """Everything the forward and reverse processes need, computed once (float64, stored float32)."""
    if kind == "linear":
        # Ho et al. use 1e-4..0.02 over T=1000. Scaling by 1000/T keeps the same total noise for any T:
        # 1e-3..0.2 at T=100 ends at alpha_bar = 2e-5. Unscaled, 1e-4..0.02 at T=100 would leave
        # abar_{T-1} = 0.36, so x_{T-1} would still be 60 % data, yet sampling starts from pure noise.
        scale = 1000 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
        betas = betas.clamp(max=0.999)         # for T <= 20 the top betas would reach 1 (abar_t = 0) or more
    elif kind == "cosine":
        # alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + offset) / (1 + offset)) pi/2)   (Improved DDPM eq. 17)
        offset = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)                  # beta_t = 1 - abar_t / abar_{t-1}
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)                          # abar_t = prod_{s<=t} alpha_s
    alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])  # abar_{t-1}, 1 at t = 0
    schedule = dict(
        betas=betas, alphas=alphas, alpha_bars=alpha_bars, alpha_bars_prev=alpha_bars_prev,
        sqrt_alpha_bars=alpha_bars.sqrt(), sqrt_one_minus_alpha_bars=(1 - alpha_bars).sqrt(),
        # the variance beta~_t of the posterior q(x_{t-1} | x_t, x0)  (DDPM eq. 7); 0 at t = 0: no noise last
        posterior_variance=betas * (1 - alpha_bars_prev) / (1 - alpha_bars),
    )
    return {name: value.float().to(device) for name, value in schedule.items()}


# %% Forward process

def q_sample(x0, t, noise, schedule):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps   (DDPM eq. 4); t is (B,) of step indices."""
    shape = (-1,) + (1,) * (x0.dim() - 1)                           # broadcast (B,) over (B, ...)
    return (schedule["sqrt_alpha_bars"][t].view(shape) * x0
            + schedule["sqrt_one_minus_alpha_bars"][t].view(shape) * noise)


# %% Models: (x_t, t) -> predicted noise eps, same shape as x_t

TIME_DIM = 64  # size of the sinusoidal step embedding

def timestep_embedding(t, dim, timesteps):
    """Sinusoidal embedding of the step (Transformer-style). t is rescaled to 0..1000 as in improved-diffusion:
    fed raw 0..T-1 (or t/T) most frequencies would barely move and the embedding would be nearly constant."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)  # (half,)
    args = (t.float() * (1000 / timesteps))[:, None] * freqs[None]                    # (B, half)
    return torch.cat([args.sin(), args.cos()], dim=1)                                 # (B, dim)

class Block(nn.Module):
    """Residual block: x + W2 silu(W1 silu(LayerNorm(x)) + time), with a linear skip when the width changes.
    The LayerNorm keeps every block's input at one scale, whatever the noise level: steadier training."""

    def __init__(self, d_in, d_out, d_time):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.lin1, self.lin2 = nn.Linear(d_in, d_out), nn.Linear(d_out, d_out)
        self.time = nn.Linear(d_time, d_out)                       # time enters every block
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)

    def forward(self, x, temb):
        return self.skip(x) + self.lin2(F.silu(self.lin1(F.silu(self.norm(x))) + self.time(temb)))

FREQS = 6                          # Fourier frequencies 2^k pi, k < FREQS
FEATURES = 2 + 2 * 2 * FREQS       # x itself, then sin and cos of both coordinates at every frequency

def fourier_features(x):
    """[x, sin(2^k pi x), cos(2^k pi x)]: a plain MLP draws smooth blobs; these let it draw thin curves."""
    freqs = 2.0 ** torch.arange(FREQS, device=x.device) * math.pi                     # (FREQS,)
    args = (x[:, :, None] * freqs).flatten(1)                                         # (B, 2, FREQS) -> (B, 2 FREQS)
    return torch.cat([x, args.sin(), args.cos()], dim=1)                              # (B, FEATURES)

class MLP(nn.Module):
    """Residual MLP on the point's Fourier features, with the step's embedding in every block."""

    def __init__(self, width, blocks, timesteps):
        super().__init__()
        self.timesteps = timesteps
        self.time = nn.Sequential(nn.Linear(TIME_DIM, width), nn.SiLU())
        self.inp = nn.Linear(FEATURES, width)
        self.blocks = nn.ModuleList([Block(width, width, width) for _ in range(blocks)])
        self.out = nn.Linear(width, 2)

    def forward(self, x, t):
        temb = self.time(timestep_embedding(t, TIME_DIM, self.timesteps))      # (B, width)
        h = self.inp(fourier_features(x))                                       # (B, width)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(F.silu(h))                                              # (B, 2)

class UNet(nn.Module):
    """A U-Net for points. What carries over from the image U-Net: an encoder that narrows (192 -> 96 -> 48),
    a decoder that widens back, skip connections joining matching widths, time in every block. What does not:
    there is no space to downsample (a point is one 2-vector), so "narrowing" is fewer features, not fewer
    pixels, and there are no convolutions: every layer sees the whole point."""

    def __init__(self, width, timesteps):
        super().__init__()
        self.timesteps = timesteps
        widths = [2 * width, width, width // 2]
        self.time = nn.Sequential(nn.Linear(TIME_DIM, widths[0]), nn.SiLU())
        self.inp = nn.Linear(FEATURES, widths[0])
        self.down = nn.ModuleList([Block(a, b, widths[0]) for a, b in zip(widths[:-1], widths[1:])])
        self.mid = Block(widths[-1], widths[-1], widths[0])
        self.up = nn.ModuleList([Block(b, a, widths[0]) for a, b in zip(widths[:-1], widths[1:])][::-1])
        self.out = nn.Linear(widths[0], 2)

    def forward(self, x, t):
        temb = self.time(timestep_embedding(t, TIME_DIM, self.timesteps))      # (B, 2w)
        h = self.inp(fourier_features(x))                                       # (B, 2w)
        skips = [h]
        for block in self.down:                                                 # 2w -> w -> w/2
            h = block(h, temb)
            skips.append(h)
        h = self.mid(h, temb)
        for block in self.up:                                                   # w/2 -> w -> 2w
            h = block(h + skips.pop(), temb)                                    # skip joins the same width
        return self.out(F.silu(h + skips.pop()))                                # (B, 2)

def build_model(kind, cfg, schedule):
    """The network of cfg for DDPM: its time input is a step t of the schedule's T steps."""
    if kind == "mlp":
        return MLP(cfg.width, cfg.blocks, len(schedule["betas"]))
    if kind == "unet":
        return UNet(cfg.unet_width, len(schedule["betas"]))
    raise ValueError(f"unknown model {kind!r}")


# %% Training: DDPM Algorithm 1

class DivergedError(RuntimeError):
    pass

def diffusion_loss(model, x0, schedule, generator=None):
    """Algorithm 1: t ~ Uniform, eps ~ N(0, I), minimise || eps - eps_theta(x_t, t) ||^2."""
    t = torch.randint(0, len(schedule["betas"]), (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    return F.mse_loss(model(q_sample(x0, t, noise, schedule), t), noise)

def train(model, batch_loss, n, cfg, generator=None, log=print):
    """cfg.steps steps of AdamW on batch_loss(rows), the loss on a batch of cfg.batch_size random rows of the n
    training examples. Returns the per-step losses (a tensor on the model's device). Stops with DivergedError
    on NaN/inf."""
    try:  # fused: the whole update in one kernel, where this torch has one for the device (CPU: torch >= 2.4)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, fused=True)
    except RuntimeError:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    lr_at = lambda i: min(1.0, (i + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * i / cfg.steps))
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    device = next(model.parameters()).device
    losses = torch.zeros(cfg.steps, device=device)            # kept on the device: no sync per step
    start = time.perf_counter()
    for i in range(cfg.steps):
        loss = batch_loss(torch.randint(0, n, (cfg.batch_size,), generator=generator, device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_schedule.step()
        losses[i] = loss.detach()
        if (i + 1) % cfg.log_every == 0 or i + 1 == cfg.steps:
            recent = losses[max(0, i + 1 - cfg.log_every): i + 1].mean().item()  # the only sync
            if not math.isfinite(recent):
                raise DivergedError(f"training diverged at step {i + 1} (loss {recent}); try a smaller --lr")
            elapsed = time.perf_counter() - start
            left = elapsed / (i + 1) * (cfg.steps - i - 1)
            log(f"step {i + 1:>6}/{cfg.steps}  loss {recent:.4f}  elapsed {elapsed:5.1f}s  left {left:5.1f}s")
    return losses


# %% Sampling: DDPM Algorithm 2. A sampler is a loop that yields x after every step. The step t is a Python
# int: indexing a schedule tensor with it is a view, never a GPU -> CPU sync (.item()).

def ddpm(model, x, schedule, generator=None):
    """DDPM Algorithm 2 from x = x_{T-1} ~ N(0, I): all T steps, t = T-1 .. 0, each adding fresh noise z (with
    sigma = 0 at t = 0). Its mean is the posterior's, q(x_{t-1} | x_t, x0) with x0 predicted from eps (eq. 11)."""
    eps_coef = schedule["betas"] / schedule["sqrt_one_minus_alpha_bars"]   # beta_t / sqrt(1 - abar_t)
    sigmas = schedule["posterior_variance"].sqrt()                        # sigma_t^2 = beta~_t, 0 at t = 0
    inv_sqrt_alphas = schedule["alphas"].rsqrt()                          # 1 / sqrt(alpha_t), once
    for t in range(len(schedule["betas"]) - 1, -1, -1):
        eps = model(x, torch.full((len(x),), t, device=x.device))          # (n, ...) predicted noise
        z = torch.randn(x.shape, generator=generator, device=x.device)
        # x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) + sigma_t z   (Algorithm 2, line 4)
        x = inv_sqrt_alphas[t] * (x - eps_coef[t] * eps) + sigmas[t] * z
        yield x


# %% The score: what predicting the noise learns. x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, so the loss is
# least where eps_theta(x_t, t) is the mean of the eps that could have made x_t, and that mean is a score:
#     eps_theta(x_t, t) = -sqrt(1 - abar_t) grad log p_t(x_t)      (Vincent 2011; Song & Ermon 2019; Song et al. 2021)
# with p_t the density of the noisy data at step t. So -eps_theta / sqrt(1 - abar_t) points from x_t towards
# likelier x_t, back towards the data, and each DDPM step moves along it, then adds fresh noise. Tweedie's formula
# (Efron 2011) turns the score into the mean clean data behind x_t, what the network believes x0 to be:
#     E[x0 | x_t] = (x_t + (1 - abar_t) grad log p_t(x_t)) / sqrt(abar_t) = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)

def predict_x0(x, eps, abar, clip=None):
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): Tweedie's formula above, DDPM eq. 4 solved for x0
    (DDIM eq. 12), clipped to [-clip, clip] if clip is given: near t = T-1, 1/sqrt(abar_t) magnifies any error in
    eps a thousandfold."""
    x0_hat = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
    return x0_hat if clip is None else x0_hat.clamp(-clip, clip)


# %% The whole lesson in one call: data, schedule, network, training, sampling, and a look at the samples

def ddpm_lesson(cfg=None):
    """Trains a DDPM with cfg's settings (CoreConfig()'s if None), draws cfg.num_samples points with Algorithm 2,
    shows them beside the data and returns them: the samples of `python diffusion_spiral.py` (on the CPU)."""
    cfg = cfg or CoreConfig()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)                                                       # the initial weights
    data = make_data(cfg.num_train, torch.Generator().manual_seed(cfg.seed), cfg.noise).to(device)
    schedule = make_schedule(cfg.timesteps, cfg.schedule, device)
    model = build_model(cfg.model, cfg, schedule).to(device)
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)                           # batches, t and noise
    train(model, lambda rows: diffusion_loss(model, data[rows], schedule, gen), len(data), cfg, gen)
    gen = torch.Generator(device).manual_seed(cfg.seed + 2)                           # x_{T-1} and every z
    with torch.no_grad():
        x = torch.randn((cfg.num_samples,) + SHAPE, generator=gen, device=device)    # x_{T-1} ~ N(0, I)
        *_, samples = ddpm(model.eval(), x, schedule, gen)                           # the last of the T steps
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, points, title in zip(axes, [data[:len(samples)], samples], ["the data", "DDPM's samples"]):
        ax.scatter(*points.cpu().T, s=1)
        ax.set(title=title, aspect="equal")
    plt.show()
    return samples.cpu()


# %% Beyond the core: optional chapters. Everything above is a whole first lesson: cut the file here and
# ddpm_lesson() runs. Each chapter below uses only what is above it.


# %% Faster samplers: DDIM (Song, Meng, Ermon 2021, arXiv:2010.02502), and DPM-Solver++(2M) (Lu et al. 2022,
# arXiv:2211.01095), the second-order solver of the ODE that DDIM solves.

def ddim(model, x, schedule, steps, generator=None, eta=0.0, clip=None):
    """DDIM (Song et al. 2021): K = steps of the T steps, predicting x0 and moving straight to the next one."""
    T = len(schedule["betas"])
    # K steps evenly from T-1 to 0: "linspace" (Lin et al. 2023, Table 2), better here than their "trailing"
    ts = torch.linspace(T - 1, 0, steps).round().long().tolist()
    abar = schedule["alpha_bars"][ts]
    abar_prev = torch.cat([abar[1:], abar.new_ones(1)])                   # the last step lands on abar = 1
    sigmas = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()  # DDIM eq. 16
    for i, t in enumerate(ts):
        eps = model(x, torch.full((len(x),), t, device=x.device))          # (n, ...) predicted noise
        x0_hat = predict_x0(x, eps, abar[i], clip)
        # x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z   (DDIM eq. 12)
        # (clamped at 0: at eta = 1 the difference is 0, which float32 can round to -6e-8, whose root is NaN)
        x = abar_prev[i].sqrt() * x0_hat + (1 - abar_prev[i] - sigmas[i] ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + sigmas[i] * torch.randn(x.shape, generator=generator, device=x.device)
        yield x

def dpm_solver(model, x, schedule, steps, clip=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): DDIM's step (eta = 0) with a better x0_hat, one
    network call a step. Its variables: alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) and the time
    lambda_t = log(alpha_t / sigma_t); step i goes from ts[i] to the next step in sampling order, ts[i + 1]
    (the last lands on abar = 1), h_i = lambda_next - lambda_i."""
    T, K = len(schedule["betas"]), steps
    # K steps that shrink towards t = 0: t_i = round((T - K) u_i^1.5) + K - 1 - i with u_i = 1 - i/(K-1), all
    # distinct, T-1 ... 0. The second-order step extrapolates from the previous iteration's prediction, which
    # needs neighbouring steps of similar length in lambda; equal steps in t end with one much longer, where it
    # overshoots.
    u = torch.linspace(1, 0, K, dtype=torch.float64) ** 1.5
    ts = ((T - K) * u).round().long().add(torch.arange(K - 1, -1, -1)).tolist()
    abar = schedule["alpha_bars"][ts]
    abar_next = torch.cat([abar[1:], abar.new_ones(1)])                   # where each step lands
    lam = (abar / (1 - abar)).log() / 2
    h = lam[1:] - lam[:-1]                                                # (K-1,); the last step's h is inf
    w = torch.cat([h.new_zeros(1), h[1:] / (2 * h[:-1])])                # 1 / (2 r_i), r_i = h_{i-1} / h_i
    ratio = ((1 - abar_next) / (1 - abar)).sqrt()                        # sigma_next / sigma_i, 0 at the end
    coef = abar_next.sqrt() - ratio * abar.sqrt()                        # -alpha_next (e^-h - 1), 1 at the end
    last_x0_hat = None                                                    # the previous iteration's prediction
    for i, t in enumerate(ts):
        eps = model(x, torch.full((len(x),), t, device=x.device))          # (n, ...) predicted noise
        x0_hat = predict_x0(x, eps, abar[i], clip)
        # D_i = (1 + 1/(2 r_i)) x0_hat - 1/(2 r_i) last_x0_hat: a second-order correction from the previous
        # iteration. First order (D = x0_hat, exactly DDIM) on the first step (no history yet) and on the last
        # (h = inf: it lands on abar = 1 and returns x0_hat).
        D = x0_hat if last_x0_hat is None or i == K - 1 else (1 + w[i]) * x0_hat - w[i] * last_x0_hat
        x = ratio[i] * x + coef[i] * D      # x_next = (sigma_next / sigma_i) x_i - alpha_next (e^-h_i - 1) D_i
        last_x0_hat = x0_hat
        yield x


# %% Flow matching (Lipman et al. 2023, arXiv:2210.02747; Liu et al. 2023, arXiv:2209.03003): data and noise
# joined by straight lines, x_s = (1 - s) x0 + s eps, s from 0 (data) to 1 (noise); the network learns the
# velocity along them, v = dx_s/ds = eps - x0, and sampling integrates dx/ds = v_theta(x, s) from x = eps at
# s = 1 to s = 0.

def flow_model(kind, cfg):
    """The same networks for flow matching: their time input is s in [0, 1], a time scale of 1 (also 0..1000)."""
    return MLP(cfg.width, cfg.blocks, 1) if kind == "mlp" else UNet(cfg.unet_width, 1)

def flow_loss(model, x0, generator=None):
    """s ~ 3 (1 - s)^2 on [0, 1], eps ~ N(0, I), minimise || v - v_theta(x_s, s) ||^2. This density weighs each s
    as an eps loss with s uniform on this straight path would (eps = x_s + (1 - s) v: an error in v costs
    (1 - s)^2 as much in eps); uniform s and the logit-normal s of Esser et al. 2024 spend more on noisier s and
    blur the thin spiral (measured in RESULTS.md)."""
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device)               # (B,) u ~ U[0, 1)
    s = 1 - (1 - u) ** (1 / 3)                                                        # inverse CDF: s ~ 3 (1 - s)^2
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    x_s = (1 - s[:, None]) * x0 + s[:, None] * noise                                   # (B, 1) * (B, 2)
    return F.mse_loss(model(x_s, s), noise - x0)

def euler(model, x, steps, generator=None, eta=0.0):
    """Euler's method in K equal steps of s (steps that shrink towards s = 0 did no better), one network call
    each. With x0_hat = x - s v and eps_hat = x + (1 - s) v, the data and the noise that x and v point to,
    the step x + (s_next - s) v = (1 - s_next) x0_hat + s_next eps_hat is DDIM's (eta = 0, eq. 12) on the path
    alpha = 1 - s, sigma = s (Gao et al. 2024): flow matching changes the path, the network's target and how
    s is drawn in training, not the solver. So DDIM's eta carries over too: eta = 1 is DDPM's ancestral step
    for a flow model, fresh noise that corrects what the deterministic steps carry along (Karras et al. 2022,
    arXiv:2206.00364)."""
    s = torch.linspace(1, 0, steps + 1, device=x.device)                      # (K + 1,) s_0 = 1 .. s_K = 0
    # DDIM eq. 16 with alpha = 1 - s, sigma = s: the std of q(x_next | x, x0), times eta; 0 on the last step
    sigmas = eta * s[1:] * (1 - ((1 - s[:-1]) * s[1:] / ((1 - s[1:]) * s[:-1])) ** 2).sqrt()  # (K,)
    for i in range(steps):
        v = model(x, s[i].expand(len(x)))                                    # (n, ...) predicted velocity
        if eta == 0:
            x = x + (s[i + 1] - s[i]) * v
        else:  # x_next = (1 - s_next) x0_hat + sqrt(s_next^2 - sigma^2) eps_hat + sigma z   (DDIM eq. 12)
            x0_hat, eps_hat = x - s[i] * v, x + (1 - s[i]) * v
            z = torch.randn(x.shape, generator=generator, device=x.device)
            x = (1 - s[i + 1]) * x0_hat + (s[i + 1] ** 2 - sigmas[i] ** 2).clamp(min=0).sqrt() * eps_hat + sigmas[i] * z
        yield x

def midpoint(model, x, steps):
    """The midpoint method: half an Euler step, then the whole step with the velocity found there. Two network
    calls a step, and second order: its error shrinks as 1/K^2, Euler's as 1/K."""
    s = torch.linspace(1, 0, steps + 1, device=x.device)                      # (K + 1,)
    for i in range(steps):
        s_mid = (s[i] + s[i + 1]) / 2
        x_mid = x + (s_mid - s[i]) * model(x, s[i].expand(len(x)))          # (n, ...) half a step
        x = x + (s[i + 1] - s[i]) * model(x_mid, s_mid.expand(len(x)))
        yield x

@torch.no_grad()
def sample(model, n, schedule, sampler="ddpm", steps=None, generator=None, eta=0.0, shape=SHAPE,
           clip=None, trajectory=None):
    """Draw n samples, starting from noise x ~ N(0, I) (x_{T-1}; for euler and midpoint, x at s = 1). model is
    any callable (x_t, t) -> predicted eps, or for euler and midpoint (x_s, s) -> predicted velocity, s a float
    tensor (n,) in [0, 1]. DDIM and DPM-Solver take `steps` of the T steps (all T if None) and clip x0_hat to
    [-clip, clip] if clip is given. trajectory, if a list, collects the noise and x after every step (on the CPU)."""
    K = steps or len(schedule["betas"])
    x = torch.randn((n,) + shape, generator=generator, device=schedule["betas"].device)  # (n, 2) the noise
    if sampler == "ddpm":
        loop = ddpm(model, x, schedule, generator)
    elif sampler == "ddim":
        loop = ddim(model, x, schedule, K, generator, eta, clip)
    elif sampler == "dpm":
        loop = dpm_solver(model, x, schedule, K, clip)
    elif sampler == "euler":
        loop = euler(model, x, K, generator, eta)
    elif sampler == "midpoint":
        loop = midpoint(model, x, K)
    else:
        raise ValueError(f"unknown sampler {sampler!r}: use 'ddpm', 'ddim', 'dpm', 'euler' or 'midpoint'")
    if trajectory is not None:
        trajectory.append(x.cpu())
    for x in loop:
        if trajectory is not None:
            trajectory.append(x.cpu())
    return x


# %% Fewer calls: reflow (Liu et al. 2023). In training many straight lines cross at each x_s, so the
# network learns their average velocity, and its sampling paths bend. Its own ODE pairs each noise eps with one
# sample x0; trained further on the straight lines between those pairs, it learns a flow whose paths are
# straighter, so one or two Euler steps land near where twenty did. Liu et al. prove that this rectification
# never raises the pairs' transport cost, for any convex cost, and that over k rounds the straightest round's
# deviation from straight lines falls as O(1/k); that one round here gives paths close to straight
# (straightness near 1, README) is a measurement. Fresh noise in Euler steps (eta, above) is the other way.

@torch.no_grad()
def reflow_pairs(model, n, device, generator=None, steps=10):
    """n pairs (x0, eps): noise eps ~ N(0, I) and the sample x0 the model's ODE carries it to in `steps`
    midpoint steps, 20 network calls (twice as many made a somewhat better reflowed model at twice the cost:
    measured in RESULTS.md)."""
    noise = torch.randn((n,) + SHAPE, generator=generator, device=device)        # (n, 2) the noise of each pair
    *_, x0 = midpoint(model, noise, steps)                                        # the last step: s = 0
    return x0, noise

def reflow_loss(model, x0, noise, generator=None):
    """flow_loss on the lines between pairs: each pair's own noise, and s ~ U[0, 1] (one Euler step uses v at
    s = 1 alone, so every s counts as much)."""
    s = torch.rand(x0.shape[0], generator=generator, device=x0.device)                # (B,) s ~ U[0, 1)
    x_s = (1 - s[:, None]) * x0 + s[:, None] * noise                                   # (B, 1) * (B, 2)
    return F.mse_loss(model(x_s, s), noise - x0)

def reflow(model, pairs, cfg, generator=None):
    """cfg.reflow_steps more steps of train() on the pairs (x0, eps), from the trained weights (afresh did
    worse: RESULTS.md). Returns their losses."""
    x0, noise = pairs
    return train(model, lambda rows: reflow_loss(model, x0[rows], noise[rows], generator), len(x0),
                 replace(cfg, steps=cfg.reflow_steps), generator)


# %% Fewer calls, the last step: distillation (Liu et al. 2023). Reflow's pairs are the teacher's answers: for each
# noise eps, the sample x0 its ODE reaches. Distillation regresses that answer directly: one Euler step from s = 1,
# eps - v_theta(eps, 1), trained to land on x0, as one-step distillation methods since do. After reflow it is
# cheap: the pairs are drawn already, and the reflowed model's one step is already near them. What it gives up:
# a one-step map has no ODE, so the ODE's likelihood is no longer the density of what one step samples.

def distill_loss(model, x0, noise, generator=None, share=0.75):
    """reflow_loss with s = 1 for a share of the pairs: there x_s is the noise eps, and the loss is
    || (eps - x0) - v_theta(eps, 1) ||^2, the one Euler step eps - v_theta(eps, 1) against the pair's x0. The rest
    keep s uniform, so the path stays learned and more steps still refine (with s = 1 alone, 2 steps strayed
    more than 1: RESULTS.md)."""
    s = torch.rand(x0.shape[0], generator=generator, device=x0.device)                # (B,) s ~ U[0, 1)
    at_one = torch.rand(x0.shape[0], generator=generator, device=x0.device) < share   # (B,) which pairs
    s = torch.where(at_one, torch.ones_like(s), s)
    x_s = (1 - s[:, None]) * x0 + s[:, None] * noise                                   # (B, 1) * (B, 2)
    return F.mse_loss(model(x_s, s), noise - x0)

def distill(model, pairs, cfg, generator=None):
    """cfg.distill_steps steps of train() on distill_loss over the pairs (x0, eps). Returns their losses."""
    x0, noise = pairs
    return train(model, lambda rows: distill_loss(model, x0[rows], noise[rows], generator), len(x0),
                 replace(cfg, steps=cfg.distill_steps), generator)


# %% Evaluation: how close are generated points to the spiral, and do they cover all of it?

def nearest_distance(a, b, chunk=2048):
    """For each row of a, the distance to the nearest row of b."""
    return torch.cat([torch.cdist(a[i:i + chunk], b).min(dim=1).values for i in range(0, len(a), chunk)])

def evaluate(points, generator=None, noise=CoreConfig.noise):
    """Precision: distance from each point to the nearest of 20,000 fresh real points, relative to the data's
    RMS radius (median, 90th percentile, share beyond 10 %). Coverage, nn_ratio: the median distance from fresh
    real points to the nearest point, over the same median between two fresh real sets: 1.0 = covered evenly,
    above 1 = gaps. The real points have the jitter `noise` of the data the model learned."""
    points = points.double().cpu()
    ref = make_data(20_000, generator, noise).double()
    rms = (ref - ref.mean(0)).pow(2).sum(1).mean().sqrt()
    dist = nearest_distance(points, ref) / rms
    real_a, real_b = (make_data(len(points), generator, noise).double() for _ in range(2))  # two fresh real sets
    ratio = nearest_distance(real_a, points).median() / nearest_distance(real_a, real_b).median()
    return dict(median=dist.median().item(), p90=dist.quantile(0.9).item(),
                outliers=(dist > 0.1).double().mean().item(), nn_ratio=ratio.item())

def straightness(trajectory):
    """How straight the sampling paths are: the mean path length over the mean distance from start to end, for
    trajectory = x at every step, (steps + 1) x (n, 2). 1.0: every point moved along a straight line."""
    path = torch.stack(trajectory).double()                                     # (K + 1, n, 2)
    length = (path[1:] - path[:-1]).norm(dim=2).sum(0)                          # (n,)
    return (length.mean() / (path[-1] - path[0]).norm(dim=1).mean()).item()

QUALITY = {"median": "median distance", "p90": "90th pct dist.", "outliers": "outliers >10%",
           "nn_ratio": "NN ratio (1=even)"}


# %% Likelihood: how much probability the model puts where the data is, in nats, against the data's own density
# KL(p_data || p_model) = E[log p_data(x) - log p_model(x)] over fresh real x: 0 only for a model that has learned
# the density itself. The spiral's density is known; a flow model's is exact; DDPM's has a lower bound (so its KL
# an upper one).

def data_log_density(x, noise=CoreConfig.noise):
    """log p_data(x) for each row of x (n, 2), float64 (n,). A point of make_data is c(u) + noise z, u ~ U[0, 1],
    so p(x) = int_0^1 N(x; c(u), noise^2 I) du; in the angle a = 4 pi sqrt(u) (du = a da / (8 pi^2)) it is a
    mixture of Gaussians at the Gauss-Legendre nodes of short panels of a: accurate even at the curve's outer end,
    where the integral stops and the midpoint rule's error shrinks only as 1 / m^2."""
    if noise <= 0:
        raise ValueError("with noise 0 the data lie on a curve, which has no density in the plane")
    # panels at most 5 noise long on the curve (at most sqrt(1 + (4 pi)^2) / SCALE per radian), 8 nodes each
    panels = math.ceil(4 * math.pi * math.hypot(1, 4 * math.pi) / SCALE / (5 * noise))
    width = 4 * math.pi / panels
    z, w = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(8))      # nodes, weights on [-1, 1]
    a = ((torch.arange(panels)[:, None] + (z + 1) / 2) * width).flatten()        # (panels, 1) + (8,) -> (m,)
    log_w = (w.repeat(panels) * width / 2 * a / (8 * math.pi ** 2)).log()       # (m,) node weight x density of a
    centres = a[:, None] * torch.stack([a.cos(), a.sin()], dim=1) / SCALE       # (m, 1) * (m, 2): c at the nodes
    # log N(x; c, noise^2 I) = -|x - c|^2 / (2 noise^2) - log(2 pi noise^2), mixed by logsumexp, 2^20 pairs at a time
    log_p = [torch.logsumexp(log_w - torch.cdist(chunk, centres) ** 2 / (2 * noise ** 2), dim=1)  # (rows, m)
             for chunk in x.cpu().double().split(2 ** 20 // len(a) + 1)]
    return torch.cat(log_p) - math.log(2 * math.pi * noise ** 2)

@torch.no_grad()
def log_likelihood(model, x, steps=100):
    """log p_model(x) of a flow model, float64 (n,). A flow model is a continuous normalizing flow (Chen et al.
    2018, Neural ODEs, arXiv:1806.07366; Grathwohl et al. 2019, FFJORD, arXiv:1810.01367): along dx/ds = v_theta(x, s) the density changes as
    d log p_s(x_s) / ds = -div v_theta(x_s, s) (Chen et al., Theorem 1), so carrying x from s = 0 to s = 1,
        log p(x) = log N(x at s = 1; 0, I) + int_0^1 div v_theta(x_s, s) ds.
    K midpoint steps on s_i = (i/K)^2: the divergence peaks where s reaches the jitter's scale, but the learned
    velocity changes at every s, so the steps shrink towards s = 0 and yet stay short all the way to s = 1."""
    s = [(i / steps) ** 2 for i in range(steps + 1)]                     # s_0 = 0 (data) .. s_K = 1 (noise)
    at = lambda s_i: torch.full((len(x),), s_i, device=x.device)          # (n,) the model's time input
    x, divs = x.float(), []                                              # div v at each step's midpoint
    for i in range(steps):
        h = s[i + 1] - s[i]
        x_mid = (x + h / 2 * model(x, at(s[i]))).requires_grad_(True)     # half an Euler step
        with torch.enable_grad():                                          # also under a caller's no_grad()
            v = model(x_mid, at(s[i] + h / 2))
            # div v = sum_j dv_j/dx_j, one backward pass per coordinate: rows do not interact (no batch statistics),
            # so the gradient of v_j summed over the rows is each row's own
            div = sum(torch.autograd.grad(v[:, j].sum(), x_mid, retain_graph=True)[0][:, j] for j in range(2))
        x = x + h * v.detach()
        divs.append(div)                                                   # kept on the device: no sync a step
    hs = torch.tensor(s, dtype=torch.float64).diff()                     # (K,) the steps h in s
    log_det = (hs[:, None] * torch.stack(divs).cpu().double()).sum(0)    # int_0^1 div v ds, float64: (K, n) -> (n,)
    x = x.cpu().double()
    return log_det - x.pow(2).sum(1) / 2 - math.log(2 * math.pi)         # log N(x at s = 1; 0, I) in 2-D, + log_det

@torch.no_grad()
def nll_bound(model, x0, schedule, draws=2, generator=None, terms=False):
    """DDPM's variational bound on -log p_theta(x0) (Ho et al. eq. 5) in nats, float64 (n,), or if `terms` its terms
    (T + 1, n), row t Ho et al.'s L_t, each averaged over `draws` noise draws. Rows t = 1..T-1:
    KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t)), two Gaussians of variance sigma_t^2 = beta~_t, so
    |mu~ - mu_theta|^2 / (2 sigma_t^2); mu_theta = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t) and
    mu~ the same with the true eps, so
        L_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) |eps - eps_theta(x_t, t)|^2,
    Algorithm 1's loss (eq. 14) with the weight it drops. Row 0: the decoder -log N(x0; mu_theta(x_t, 0), beta_0 I)
    of the first noisy step x_t, t = 0 (sigma_0^2 = beta_0, as beta~_0 = 0); 1 - abar_0 = beta_0 makes x0 - mu_theta =
    sqrt(beta_0 / alpha_0) (eps_theta - eps): the same weight at t = 0, plus (d/2) log(2 pi beta_0). Row T: the prior
    KL(q(x_{T-1} | x0) || N(0, I))."""
    f64 = {name: value.cpu().double() for name, value in schedule.items()}
    beta, alpha, abar = f64["betas"], f64["alphas"], f64["alpha_bars"]
    one_minus_abar = f64["sqrt_one_minus_alpha_bars"] ** 2               # float32 1 - abar_0 would lose digits
    sigma2 = torch.cat([beta[:1], f64["posterior_variance"][1:]])         # beta~_t, and beta_0 at t = 0
    weight = beta ** 2 / (2 * sigma2 * alpha * one_minus_abar)            # (T,)
    T, n, d = len(beta), len(x0), x0.shape[1]
    x0 = x0.repeat(draws, 1)                                             # (draws n, 2): each point `draws` times
    errors = []                                                          # eps - eps_theta at each t, on the device
    for t in range(T):
        step = torch.full((len(x0),), t, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        errors.append(eps - model(q_sample(x0, step, eps, schedule), step))
    L = torch.zeros(T + 1, len(x0), dtype=torch.float64)
    L[:T] = weight[:, None] * torch.stack(errors).cpu().double().pow(2).sum(2)   # (T, draws n, 2) -> (T, draws n)
    L[0] += d / 2 * math.log(2 * math.pi * beta[0])
    # KL(N(sqrt(abar) x0, (1 - abar) I) || N(0, I)) = (abar |x0|^2 + d (1 - abar) - d - d log(1 - abar)) / 2
    L[T] = (abar[-1] * x0.cpu().double().pow(2).sum(1) - d * abar[-1] - d * torch.log(1 - abar[-1])) / 2
    L = L.view(T + 1, draws, n).mean(1)                                  # (T + 1, draws, n) -> (T + 1, n)
    return L if terms else L.sum(0)

def kl_to_data(model, x, schedule, objective, noise=CoreConfig.noise, generator=None):
    """KL(p_data || p_model) in nats on fresh real points x: the mean of log p_data - log p_model, with its standard
    error; exact for a flow model (by the ODE), an upper bound for an eps model (by DDPM's bound on -log p)."""
    log_p = log_likelihood(model, x) if objective == "flow" else -nll_bound(model, x, schedule, generator=generator)
    log_p_data = data_log_density(x, noise)
    gap = log_p_data - log_p                                              # (n,) one term per point
    return dict(method="ode" if objective == "flow" else "elbo", nll=-log_p.mean().item(),
                entropy=-log_p_data.mean().item(), kl=gap.mean().item(), kl_stderr=(gap.std() / len(gap) ** 0.5).item(),
                points=len(gap))


# %% Running the lesson ======================================================================================
# The command line and its Config, run(): how the flags call the chapters, then checks, files and figures.
# Nothing new about diffusion: skip it unless you want to change how the script is run.

# %% The command line: one flag per Config field

SAMPLERS = dict(eps=("ddpm", "ddim", "dpm"), flow=("euler", "midpoint"))  # what fits each objective, default first

@dataclass
class Config(CoreConfig):
    """Every knob: the core's, then the chapters', then how the lesson is run. Its defaults are the default run."""
    objective: str = knob("eps", "what the network learns: eps, DDPM's noise, or flow, the velocity of a straight "
                          "path from data to noise (flow matching)", choices=("eps", "flow"))
    sampler: str = knob("auto", "reverse process; for eps: ddpm (ancestral, T steps), ddim or dpm (DPM-Solver++); for "
                        "flow: euler or midpoint (2 calls a step); auto: ddpm or euler; others are refused",
                        choices=("auto", *SAMPLERS["eps"], *SAMPLERS["flow"]))
    sample_steps: int = knob(20, "K, steps of every sampler but ddpm: ddim and dpm at most T")
    eta: float = knob(0.0, "noise of ddim and euler steps: 0 deterministic, 1 as much as DDPM's", min=0, max=1)
    clip: float = knob(2.5, "DDIM and DPM-Solver clip their predicted x0 to [-clip, clip]; the spiral lies within 2.1",
                      min=0.01)
    reflow: bool = knob(False, "flow: after training (or --load), retrain on the model's own (noise, sample) pairs, "
                        "so that 1 or 2 euler steps draw the data (rectified flow)")
    reflow_pairs: int = knob(20_000, "(noise, sample) pairs that --reflow draws with the model's own ODE")
    reflow_steps: int = knob(2000, "optimizer steps of --reflow on its pairs, from the trained weights")
    distill: bool = knob(False, "after --reflow (or --load of a reflowed model): train one euler step from the "
                         "noise to land on each pair's sample (then sample with --sample-steps 1)")
    distill_steps: int = knob(3000, "optimizer steps of --distill")
    # how the lesson is run
    device: str = knob("auto", "where to run; auto picks cuda, then mps, then cpu",
                       choices=("auto", "cpu", "cuda", "mps"))
    out: str = knob(os.path.join("outputs", "diffusion_spiral"), "output folder")
    load: str = knob(None, "checkpoint to sample from, skipping training (its model, T and schedule win)")
    plots: bool = knob(True, "draw the figures")
    gif: bool = knob(False, "also animate the reverse process (reverse.gif)")

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit status 2, instead of usage text
        raise UsageError(f"{message} (see --help)")

def parse_args(argv):
    """Config from command-line flags, one per Config field. A flag left out takes the field's default, or
    its default for the chosen --model where the field names one (as in steps: unet=2000)."""
    p = Parser(prog=PROG, description=DESCRIPTION)
    for f in fields(Config):
        flag, meta = "--" + f.name.replace("_", "-"), f.metadata
        if f.type is bool:  # --gif turns on what is off by default, --no-plots turns off what is on
            p.add_argument(f"--no-{f.name}" if f.default else flag, dest=f.name, default=None,
                           action="store_false" if f.default else "store_true",
                           help=("do not " if f.default else "") + meta["help"])
        else:
            recipe = f", unet {meta['unet']}" if "unet" in meta else ""               # the sine's --model unet
            p.add_argument(flag, choices=meta.get("choices"), help=f"{meta['help']} (default {f.default}{recipe})",
                           type=str if f.type is str else number(f.type, meta.get("min"), meta.get("max")))
    args = vars(p.parse_args(argv))
    for f in fields(Config):  # in order, so --model (the first field) is known before its recipe is used
        if args[f.name] is None:
            args[f.name] = f.metadata.get(args["model"], f.default)
    return Config(**args)

def number(kind, low=None, high=None):
    """Parser of a flag's value: a number of this kind, positive, or within [low, high] where given."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number")
        if not math.isfinite(value):                                  # inf and nan parse as floats
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if not (value > 0 if low is None else value >= low) or high is not None and value > high:
            bounds = "positive" if low is None else f"at least {low}" + (f" and at most {high}" if high else "")
            raise argparse.ArgumentTypeError(f"{text!r} must be {bounds}")
        return value
    return parse

PROG = "diffusion_spiral.py"  # the name in messages (not from __file__: a notebook cell has none)
DESCRIPTION = "DDPM and flow matching on a 2-D spiral."
SAVED = ("model", "objective", "timesteps", "schedule", "width", "unet_width", "blocks", "noise",  # what --load takes
         "steps", "batch_size", "lr", "warmup")                                      # from the checkpoint

class UsageError(Exception):  # a user's mistake: main() prints it in one line and exits with status 2
    pass

def main(argv=None):
    if argv is None:  # in a notebook sys.argv holds the kernel's arguments, not ours
        argv = [] if "ipykernel" in sys.modules else sys.argv[1:]
    try:
        return run(parse_args(argv))
    except (UsageError, DivergedError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2 if isinstance(e, UsageError) else 1)
    except OSError as e:  # a folder or file that cannot be written
        print(f"{PROG}: error: cannot write {e.filename} ({e.strerror}); pick another --out", file=sys.stderr)
        raise SystemExit(2)
    except (MemoryError, OverflowError, RuntimeError) as e:  # sizes beyond this machine's memory, or torch's ints
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise
        print(f"{PROG}: error: these sizes do not fit ({str(e).splitlines()[0][:100]}); ask for smaller ones",
              file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; files already saved are intact", file=sys.stderr)
        raise SystemExit(130)

def run(cfg):
    # seeding: one generator per use, so --load samples exactly what the training run sampled
    seed = lambda k: (cfg.seed + k) % 2**64                              # the seed of each use, within torch's
    torch.manual_seed(cfg.seed)                                         # range 0 .. 2^64 - 1; initial weights
    device = pick_device(cfg.device)
    data_gen = torch.Generator().manual_seed(cfg.seed)                  # the training set
    train_gen = torch.Generator(device=device).manual_seed(seed(1))     # batches, t and noise in training
    sample_gen = torch.Generator(device=device).manual_seed(seed(2))    # x_{T-1} and z in sampling
    eval_gen = torch.Generator().manual_seed(seed(3))                   # fresh real data for the metrics
    reflow_gen = torch.Generator(device=device).manual_seed(seed(5))    # reflow's pairs and its batches
    bound_gen = torch.Generator(device=device).manual_seed(seed(6))     # the noise of DDPM's bound
    distill_gen = torch.Generator(device=device).manual_seed(seed(7))   # distillation's batches (and pairs)

    ckpt = check_run(cfg)                                               # refuse what cannot work, before work
    flow = cfg.objective == "flow"
    schedule = ckpt["schedule"] if ckpt else make_schedule(cfg.timesteps, cfg.schedule)
    schedule = {name: value.to(device) for name, value in schedule.items()}
    model = network(cfg, schedule).to(device)
    check_memory(cfg, model, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config: {asdict(cfg)}\ndevice: {device}")
    print(f"model: {cfg.model}, {n_params:,} parameters; alpha_bar at t = T-1: {schedule['alpha_bars'][-1]:.2e}")
    data = make_data(cfg.num_train, data_gen, cfg.noise).to(device)

    losses, times, stages = torch.zeros(0), dict(train=0.0, reflow=0.0, distill=0.0), {}
    if ckpt is None:
        start = time.perf_counter()
        losses = train(model, training_loss(cfg, model, data, schedule, train_gen), len(data), cfg, train_gen).cpu()
        times["train"] = time.perf_counter() - start
        save_checkpoint(os.path.join(cfg.out, "model.pt"), model, cfg, schedule)
        print(f"trained {cfg.steps} steps in {times['train']:.1f}s ({cfg.steps / times['train']:.0f} steps/s)")
    else:
        load_weights(model, ckpt, cfg)
    done = {key: ckpt.get(key, 0) if ckpt else 0 for key in ("reflowed", "distilled")}   # done to the weights
    before, pairs = {}, None                                            # the models before, for reflow.png
    if cfg.reflow:
        before["flow model"] = copy.deepcopy(model).eval()
        start, stages["reflow"] = time.perf_counter(), len(losses)
        pairs = reflow_pairs(model.eval(), cfg.reflow_pairs, device, reflow_gen)
        losses = torch.cat([losses, reflow(model, pairs, cfg, reflow_gen).cpu()])
        times["reflow"], done["reflowed"] = time.perf_counter() - start, done["reflowed"] + 1
        save_checkpoint(os.path.join(cfg.out, "model.pt"), model, cfg, schedule, **done)
        print(f"reflowed on {cfg.reflow_pairs} pairs ({cfg.reflow_steps} steps) in {times['reflow']:.1f}s")
    if cfg.distill:
        before["reflowed"] = copy.deepcopy(model).eval()
        start, stages["distill"] = time.perf_counter(), len(losses)
        pairs = pairs or reflow_pairs(model.eval(), cfg.reflow_pairs, device, distill_gen)  # --load: its own pairs
        losses = torch.cat([losses, distill(model, pairs, cfg, distill_gen).cpu()])
        times["distill"], done["distilled"] = time.perf_counter() - start, done["distilled"] + 1
        save_checkpoint(os.path.join(cfg.out, "model.pt"), model, cfg, schedule, **done)
        print(f"distilled on {len(pairs[0])} pairs ({cfg.distill_steps} steps) in {times['distill']:.1f}s")

    model.eval()
    print(f"sampling {cfg.num_samples} with {cfg.sampler} ...")
    start = time.perf_counter()
    paths = cfg.plots or flow                                           # keep x after every step (a copy to the
    traj, calls = ([] if paths else None), []                           # host each): figures, flow's straightness
    net = recorder(model, calls, 2000) if cfg.plots else model          # and the network's calls, for reverse.png
    samples = sample(net, cfg.num_samples, schedule, cfg.sampler, cfg.sample_steps, sample_gen,
                     eta=cfg.eta, clip=cfg.clip, trajectory=traj).cpu()
    sample_time = time.perf_counter() - start
    if not torch.isfinite(samples).all():
        raise DivergedError("sampling produced NaN/inf; the model is broken, retrain with a smaller --lr")
    print(f"sampled in {sample_time:.2f}s")

    scored = samples[:20_000]                        # score at most 20,000: plenty, and it stays quick
    quality = evaluate(scored, eval_gen, cfg.noise)
    real = evaluate(make_data(len(scored), eval_gen, cfg.noise), eval_gen, cfg.noise)
    likelihood, note = None, likelihood_note(cfg, done["distilled"])
    if note is None:                                         # as many real points as samples, 100 to 1,000
        points = make_data(min(max(cfg.num_samples, 100), 1000), eval_gen, cfg.noise).to(device)   # (KL +- 0.02)
        likelihood = kl_to_data(model, points, schedule, cfg.objective, cfg.noise, bound_gen)
    metrics = dict(quality=quality, real=real, train_seconds=times["train"], sample_seconds=sample_time,
                   steps_per_second=cfg.steps / times["train"] if times["train"] else None, parameters=n_params,
                   device=str(device), sampler=cfg.sampler, model=cfg.model, objective=cfg.objective, eta=cfg.eta,
                   straightness=straightness(traj) if paths else None, **done, reflow_seconds=times["reflow"],
                   distill_seconds=times["distill"], likelihood=likelihood, likelihood_note=note)
    print(f"quality{'generated':>27}   real data")
    for key in quality:
        print(f"  {QUALITY[key]:22} {quality[key]:9.4f}   {real[key]:9.4f}")
    if likelihood:
        how = "exact, by the ODE" if flow else "DDPM's bound: NLL and KL at most"
        print(f"likelihood of {likelihood['points']} real points ({how}): NLL {likelihood['nll']:.3f} nats, data "
              f"entropy {likelihood['entropy']:.3f}, KL {likelihood['kl']:.3f} +- {likelihood['kl_stderr']:.3f}")
    else:
        print(f"likelihood: none ({note})")
    save_results(cfg.out, samples, metrics, losses)
    if cfg.plots:
        plot_all(cfg, data[:2000].cpu(), {k: v.cpu() for k, v in schedule.items()}, losses.numpy(), samples, traj,
                 stages, calls)
        plot_field(cfg, model, schedule, data[:2000].cpu())
    if cfg.plots and before:
        plot_fewer_calls(cfg, {**before, ("distilled" if cfg.distill else "reflowed"): model}, schedule, device)
    print(f"outputs in {cfg.out}/")
    return metrics

def likelihood_note(cfg, distilled):
    """Why the likelihood is not computed, or None."""
    if cfg.noise == 0:
        return "--noise 0: the data lie on a curve, with no density in the plane to compare against"
    if cfg.noise < 1e-3:
        return (f"--noise {cfg.noise:g}: the data's density would be a mixture of over 40,000 Gaussians along the "
                "arc (as many as 40 / noise), too slow; use --noise 0.001 or more")
    if distilled:
        return "a distilled model samples by one step, a map with no ODE whose density could be integrated"
    return None

def network(cfg, schedule):
    """The network a run of cfg trains: DDPM's (build_model) or, for --objective flow, flow matching's."""
    return flow_model(cfg.model, cfg) if cfg.objective == "flow" else build_model(cfg.model, cfg, schedule)

def training_loss(cfg, model, data, schedule, generator=None):
    """What a run of cfg minimises: the loss on the rows `rows` of data, for train()."""
    if cfg.objective == "flow":
        return lambda rows: flow_loss(model, data[rows], generator)
    return lambda rows: diffusion_loss(model, data[rows], schedule, generator)

# %% Checks: a user's mistake ends before any work, in one line

def check_run(cfg):
    """Everything that can be refused before work starts. Returns the checkpoint of --load (or None); its
    saved settings (SAVED) replace cfg's."""
    try:  # torch before 2.3 was built for numpy 1 and cannot hand tensors to numpy 2
        torch.zeros(1).numpy()
    except RuntimeError:
        raise UsageError(f"torch {torch.__version__} cannot use numpy {np.__version__}; "
                         "pip install 'numpy<2' (or torch>=2.3)")
    ckpt = load_checkpoint(cfg) if cfg.load else None
    fits = SAMPLERS[cfg.objective]                                      # (after --load: the checkpoint's)
    cfg.sampler = fits[0] if cfg.sampler == "auto" else cfg.sampler
    if cfg.sampler not in fits:
        raise UsageError(f"--sampler {cfg.sampler} does not fit --objective {cfg.objective}: use {' or '.join(fits)}")
    if (cfg.reflow or cfg.distill) and cfg.objective != "flow":
        raise UsageError("--reflow and --distill work on a flow model's paths: add --objective flow (or --load a "
                         "flow model)")
    if cfg.distill and not cfg.reflow and not (ckpt or {}).get("reflowed"):
        raise UsageError("--distill learns a reflowed model's one step: add --reflow (or --load a reflowed model)")
    if not cfg.reflow and cfg.reflow_steps != Config.reflow_steps:
        raise UsageError("--reflow-steps sets up --reflow: add --reflow")
    if not (cfg.reflow or cfg.distill) and cfg.reflow_pairs != Config.reflow_pairs:
        raise UsageError("--reflow-pairs sets up --reflow or --distill: add one of them")
    if not cfg.distill and cfg.distill_steps != Config.distill_steps:
        raise UsageError("--distill-steps sets up --distill: add --distill")
    if cfg.eta and cfg.sampler not in ("ddim", "euler"):
        raise UsageError(f"--eta adds noise to ddim or euler steps; --sampler {cfg.sampler} takes none")
    if cfg.sampler in ("ddim", "dpm") and cfg.sample_steps > cfg.timesteps:
        raise UsageError(f"--sample-steps {cfg.sample_steps} is more than --timesteps {cfg.timesteps}")
    os.makedirs(cfg.out, exist_ok=True)                                 # can we write there? find out now,
    open(os.path.join(cfg.out, ".write-test"), "w").close()             # not after training (an OSError
    os.remove(os.path.join(cfg.out, ".write-test"))                     # ends in one line, see main)
    return ckpt

def pick_device(name):
    usable = dict(cpu=True, cuda=torch.cuda.is_available(), mps=torch.backends.mps.is_available())
    if name == "auto":
        name = "cuda" if usable["cuda"] else "mps" if usable["mps"] else "cpu"
    if not usable[name]:
        raise UsageError(f"--device {name} was asked for, but this PyTorch sees no {name.upper()} device; "
                         "use --device cpu")
    return torch.device(name)

def check_memory(cfg, model, device):
    """Refuse a size that cannot fit in memory, saying what it would need, rather than crash or swap for
    minutes. An example costs every layer's output (training keeps them and their gradients) and its data."""
    # the GPU's memory, else the RAM (Apple's GPUs share it); Windows has no way to ask: no check
    have = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf)
    sizes = []
    hook = nn.modules.module.register_module_forward_hook(lambda m, i, out: sizes.append(out.numel()))
    model(torch.zeros((1,) + SHAPE, device=device), torch.zeros(1, dtype=torch.long, device=device))
    hook.remove()
    layers, data = 4 * sum(sizes), 8 * math.prod(SHAPE)               # bytes: float32 layers, float64 data
    paths = cfg.plots or cfg.objective == "flow"                                 # x after every step is kept
    kept = (cfg.timesteps if cfg.sampler == "ddpm" else cfg.sample_steps) + 1   # (ddpm's T is at most 10,000)
    if paths and kept * data > have:
        raise UsageError(f"--sample-steps {cfg.sample_steps} would keep more steps than memory holds; ask for fewer")
    steps = kept * data if paths else 0
    for flag, n, each in [("--batch-size", cfg.batch_size, 3 * layers), ("--num-train", cfg.num_train, 3 * data),
                          ("--num-samples", cfg.num_samples, layers + steps + 3 * data),
                          ("--reflow-pairs", cfg.reflow_pairs if cfg.reflow or cfg.distill else 0, layers + 3 * data)]:
        if n * each > have:
            raise UsageError(f"{flag} {n} would need about {n * each / 2**30:,.1f} GiB of memory, more than the "
                             f"{have / 2**30:.1f} GiB here; ask for fewer")

# %% Files: checkpoint, results

def save_checkpoint(path, model, cfg, schedule, reflowed=0, distilled=0):
    tmp = path + ".tmp"
    torch.save(dict(script=PROG, config=asdict(cfg), model=model.state_dict(), reflowed=reflowed, distilled=distilled,
                    schedule={name: value.cpu() for name, value in schedule.items()}), tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken model.pt

def load_checkpoint(cfg):
    """The checkpoint's weights and schedule; the settings it was trained with (SAVED) replace cfg's."""
    if not os.path.isfile(cfg.load):
        raise UsageError(f"--load {cfg.load}: no such file; train first (without --load) to create one")
    try:
        ckpt = torch.load(cfg.load, map_location="cpu", weights_only=True)
        assert ckpt["script"] == PROG
        saved = Config(**ckpt["config"])
    except Exception:
        raise UsageError(f"--load {cfg.load}: not a checkpoint of {PROG}; pass a model.pt it wrote")
    for key in SAVED:
        setattr(cfg, key, getattr(saved, key))
    return ckpt

def load_weights(model, ckpt, cfg):
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:  # an older version of this script named or shaped its layers otherwise
        raise UsageError(f"--load {cfg.load}: written by another version of {PROG}; retrain without --load")
    print(f"loaded {cfg.load}: a {cfg.model} for T={cfg.timesteps}, {cfg.schedule} schedule (the checkpoint's)")

def save_results(out, samples, metrics, losses):
    np.save(os.path.join(out, "samples.npy"), samples.numpy())
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if len(losses):
        np.savetxt(os.path.join(out, "loss.csv"), np.c_[np.arange(1, len(losses) + 1), losses.numpy()],
                   delimiter=",", header="step,loss", comments="", fmt=["%d", "%.6f"])

# %% Figures

def save(fig, out, name):
    fig.set_layout_engine("constrained")  # room for titles, labels and a suptitle
    fig.savefig(os.path.join(out, name), dpi=110, bbox_inches="tight")
    if "ipykernel" in sys.modules:        # in Jupyter: also show it inline (IPython is there)
        from IPython.display import display
        display(fig)
    plt.close(fig)

LOSS_FLOOR = (0.38, "near the spiral, x_t cannot tell noise\nalong the curve from the curve itself")  # make_img.sh

def plot_loss(out, losses, objective, stages):
    """loss.png, and why it stays above 0: x_t does not determine the noise that made it (LOSS_FLOOR: the loss of
    the exact predictor E[eps | x_t], the best any network can do, at the defaults)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(losses, lw=0.5, alpha=0.4, label="per step")
    k = max(1, len(losses) // 50)
    ax.plot(np.arange(k - 1, len(losses)), np.convolve(losses, np.ones(k) / k, "valid"), label=f"mean of {k}")
    for (stage, step), ls in zip(stages.items(), ["--", ":"]):   # where reflow and distillation began
        ax.axvline(step, color="0.5", ls=ls, label=f"{stage}: on the pairs from here")
    what = "velocity (flow matching)" if objective == "flow" else "noise (DDPM Algorithm 1)"
    floor = LOSS_FLOOR[1] if objective == "eps" else "x_s does not determine the noise (nor the data) that made it"
    if objective == "eps":  # the loss of E[eps | x_t] at the default data and schedule (measured by make_img.sh)
        ax.axhline(LOSS_FLOOR[0], color="k", ls="-.", lw=0.8, label="the best prediction's, E[eps | x_t]")
    ax.set(yscale="log", xlabel="optimizer step", ylabel="mean squared error",
           title=f"Training loss: predicted {what}\nIt stays above 0: {floor}")
    ax.legend()
    save(fig, out, "loss.png")

def animate(out, traj, draw, size):
    """reverse.gif: draw(ax, x_t, title) for every step of the reverse process, the last frame held 1 s."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    fig, ax = plt.subplots(figsize=size)
    def frame(i):
        ax.clear()
        draw(ax, traj[i], f"reverse process: step {i} of {len(traj) - 1}")
    frames = list(range(len(traj))) + [len(traj) - 1] * 15
    FuncAnimation(fig, frame, frames=frames).save(os.path.join(out, "reverse.gif"), writer=PillowWriter(fps=15))
    plt.close(fig)

def scatter(ax, x, title, color="C0"):
    if x.dim() == 3:                                  # paths (steps + 1, n, 2): a line for each point, then its end
        ax.plot(x[:, :, 0], x[:, :, 1], lw=0.5, alpha=0.4, color=color)
        x = x[-1]
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5, color=color)
    ax.set(title=title, xlim=(-2.6, 2.6), ylim=(-2.6, 2.6), aspect="equal", xlabel="x", ylabel="y")

def grid(out, name, title, rows, colors=None):
    """Point clouds (or paths) in rows of panels, one panel per (x, panel title)."""
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(3.7 * len(rows[0]), 4.2 * len(rows)), squeeze=False)
    for ax, (x, panel_title), color in zip(axes.flat, sum(rows, []), colors or ["C0"] * len(axes.flat)):
        scatter(ax, x, panel_title, color)
    fig.suptitle(title)
    save(fig, out, name)

def plot_all(cfg, data, schedule, losses, samples, traj, stages, calls):
    out, T, n = cfg.out, len(schedule["betas"]), len(data)
    a, b = schedule["sqrt_alpha_bars"], schedule["sqrt_one_minus_alpha_bars"]     # x = a x0 + b eps at step t
    if cfg.objective == "flow":                                                   # the straight path, s = (t + 1) / T
        a, b = 1 - torch.arange(1, T + 1) / T, torch.arange(1, T + 1) / T
    g = torch.Generator().manual_seed(0)                                         # the forward figure's noise
    noisy = lambda t: a[t] * data + b[t] * torch.randn(data.shape, generator=g)   # as q_sample: x = a x0 + b eps
    grid(out, "forward.png", f"Forward process ({cfg.objective}): the spiral dissolves into N(0, I) noise",
        [[(noisy(t), f"x = {a[t]:.3f} x0 + {b[t]:.3f} eps") for t in [0, T // 10, 3 * T // 10, T - 1]]])
    plot_schedule(out, T)
    if len(losses):  # none after --load
        plot_loss(out, losses, cfg.objective, stages)
    shown = samples[:n]
    grid(out, "samples.png", "", [[(data[:len(shown)], f"original spiral ({len(shown)} points)"),
                                   (shown, f"generated from noise ({len(shown)} points)")]], colors=["C1", "C0"])
    plot_reverse(cfg, schedule, calls, shown, [x[:100] for x in traj])
    if cfg.gif:
        animate(out, [x[:n] for x in traj], scatter, (4.5, 4.5))

def recorder(net, calls, n):
    """net, keeping the input, time and prediction of its first n rows at every call, for reverse.png."""
    def call(x, t):
        out = net(x, t)
        calls.append((x[:n].cpu(), t[:1].cpu(), out[:n].cpu()))
        return out
    return call

def plot_reverse(cfg, schedule, calls, samples, paths):
    """reverse.png: x on the way from noise to data at five levels of noise, and below each the network's
    x0_hat there (what it believes the clean data to be); last, the samples, and the paths of 100 points."""
    flow = cfg.objective == "flow"
    noise = [t.item() if flow else schedule["sqrt_one_minus_alpha_bars"][t].item() for _, t, _ in calls]  # b in x
    picks = sorted({min(range(len(calls)), key=lambda i: abs(noise[i] - b)) for b in (0.9, 0.6, 0.35, 0.15, 0.05)})
    fig, axes = plt.subplots(2, len(picks) + 1, figsize=(2.35 * (len(picks) + 1), 5.4), squeeze=False)
    for ax, i in zip(axes.T, picks):
        x, t, out = calls[i]
        x0_hat = x - t * out if flow else predict_x0(x, out, schedule["alpha_bars"][t])  # x0 = x - s v; Tweedie
        scatter(ax[0], x, f"{'s' if flow else 't'} = {t.item():.3g}: noise std {noise[i]:.2f}")
        scatter(ax[1], x0_hat, "the network's x0_hat", color="C2")
    scatter(axes[0, -1], samples, "the samples")
    if cfg.sampler == "ddpm" or cfg.eta:
        axes[1, -1].axis("off")
        axes[1, -1].text(0.5, 0.5, "fresh noise at every step:\nthe paths are a tangle", ha="center", transform=axes[1, -1].transAxes)
    else:
        scatter(axes[1, -1], torch.stack(paths), f"paths, {straightness(paths):.2f}x as long\nas straight lines")
        axes[1, -1].scatter(*paths[0].T, s=4, color="0.5", label="start: noise")
        axes[1, -1].scatter(*paths[-1].T, s=4, color="k", label="end: sample")
        axes[1, -1].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Reverse process ({cfg.sampler}): x from noise to data (top); below each, the network's guess of the "
                 "clean data from that x (x0_hat)")
    save(fig, cfg.out, "reverse.png")

def plot_schedule(out, T):
    """schedule.png: how much signal each step leaves (abar_t), and the log SNR, for the cosine schedule, the
    linear one scaled for T, and Ho et al.'s 1e-4..0.02 unscaled at this T."""
    curves = {"cosine": make_schedule(T, "cosine")["alpha_bars"].double(),
              "linear, scaled by 1000/T": make_schedule(T, "linear")["alpha_bars"].double(),
              "linear 1e-4..0.02, unscaled": torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, abar in curves.items():
        axes[0].plot(abar, label=f"{name}: at t = T-1, {abar[-1]:.1e}")
        axes[1].plot((abar / (1 - abar)).log(), label=name)
    axes[0].set(xlabel="step t", ylabel="abar_t", title="abar_t in x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps:\n"
                "sampling starts from N(0, I), x_{T-1}'s law only if abar_{T-1} is near 0")
    axes[1].set(xlabel="step t", ylabel="log(abar_t / (1 - abar_t))", title="log signal-to-noise ratio")
    axes[0].legend()
    save(fig, out, "schedule.png")

@torch.no_grad()
def plot_field(cfg, model, schedule, data):
    """field.png: what the network learned, on a grid at four levels of noise over noisy data of that level:
    the score -eps_theta / sqrt(1 - abar_t), or for flow -v_theta, the way sampling moves."""
    flow, device = cfg.objective == "flow", schedule["betas"].device
    xs = torch.linspace(-2.4, 2.4, 21)
    points = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1).view(-1, 2)           # (441, 2)
    panels, g = [], torch.Generator().manual_seed(0)
    for std in (0.8, 0.5, 0.25, 0.08):                                       # the noise's std in x
        t = std if flow else (schedule["sqrt_one_minus_alpha_bars"].cpu() - std).abs().argmin().item()   # its time
        a, b = (1 - std, std) if flow else (schedule["sqrt_alpha_bars"][t].item(), schedule["sqrt_one_minus_alpha_bars"][t].item())
        arrows = -model(points.to(device), torch.full((len(points),), t, device=device)).cpu() / (1 if flow else b)
        noisy = a * data + b * torch.randn(data.shape, generator=g)                  # as q_sample: a x0 + b eps
        panels.append((noisy, arrows, f"{'s' if flow else 't'} = {t:.3g}: x = {a:.2f} x0 + {b:.2f} eps"))
    logs = torch.cat([arrows.norm(dim=1).log10() for _, arrows, _ in panels])
    fig, axes = plt.subplots(1, 4, figsize=(14, 4))
    for ax, (noisy, arrows, title) in zip(axes, panels):
        ax.scatter(*noisy.T, s=1, color="0.8")
        length = arrows.norm(dim=1, keepdim=True)
        q = ax.quiver(*points.T, *(arrows / length).T, length.log10()[:, 0], clim=(logs.min(), logs.max()), cmap="viridis")
        ax.set(title=title, xlim=(-2.6, 2.6), ylim=(-2.6, 2.6), aspect="equal")
    fig.colorbar(q, ax=axes, label="log10 of the arrow's true length")
    what = "-v_theta(x, s), the way sampling moves" if flow else "the learned score -eps_theta(x, t) / sqrt(1 - abar_t)"
    fig.suptitle(f"{what}: arrows of equal length show its direction, colour its size; grey: noisy data at that level")
    save(fig, cfg.out, "field.png")

def plot_fewer_calls(cfg, models, schedule, device):
    """reflow.png: each model's samples in 1 and 2 Euler steps from the same noise (the flow model, reflowed,
    distilled), with the share of stray points."""
    panels = [[], []]
    for name, net in models.items():
        for k in (1, 2):
            x = sample(net, cfg.num_samples, schedule, "euler", k, torch.Generator(device=device).manual_seed(cfg.seed))
            stray = evaluate(x.cpu(), torch.Generator().manual_seed(0), cfg.noise)["outliers"]
            panels[k - 1].append((x.cpu(), f"{name}, {k} Euler step{'s' * (k > 1)}: {stray:.1%} stray"))
    grid(cfg.out, "reflow.png", "Fewer calls: the same noise, the same network calls", panels)

# %% Run the lesson (a script, or a notebook cell: main() reads the flags, ignoring a kernel's own)
if __name__ == "__main__":
    main()
