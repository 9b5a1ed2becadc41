"""Denoising diffusion (DDPM) from scratch on 1-D sine waves of length 64, then where the field went next.

The core, first and whole: noise is added to a sine wave step by step (the forward process), a network learns
to predict that noise (the training loss), and running the steps backwards from pure noise draws new waves (the
reverse process). Each wave is one 64-dimensional data point; the model must learn that nearby samples move
together. Both networks return the predicted noise, as DDPM's math expects, but compute it from a unit-scale
output (preconditioning), which keeps the generated waves from coming out too small. The core ends with
ddpm_lesson(): train, sample, show. A teacher can cut the file at the line "# %% Beyond the core" and hand out
a DDPM that runs.

Then optional chapters, each using only what is above it: faster samplers (DDIM, DPM-Solver++); asking for a
frequency (the network also learns each wave's frequency, and classifier-free guidance steers sampling towards
the one you ask for, the idea behind a text prompt in an image generator); flow matching (straight paths, Euler
steps); fewer network calls (fresh noise, reflow, distillation); evaluation. Below the ruler "Running the
lesson": the command line, files and figures.

Run it: python diffusion_sine.py [--model unet] [--objective flow] (--help lists every flag); in a notebook,
paste this file into a cell, or call main(["--model", "unet"]); the core alone runs with ddpm_lesson().

References (each chapter cites its own where it starts):
    DDPM: Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239
    Cosine schedule: Nichol, Dhariwal 2021, "Improved DDPM", arXiv:2102.09672
    U-Net: Ronneberger, Fischer, Brox 2015, arXiv:1505.04597 (with GroupNorm residual blocks as in DDPM)
    Preconditioning: Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space", arXiv:2206.00364
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
    steps: int = knob(3000, "optimizer steps", unet=2000)
    batch_size: int = knob(256, "waves per step", unet=128)
    lr: float = knob(4e-3, "peak learning rate of AdamW: a linear warm-up over --warmup steps, times a cosine "
                     "decay from step 0 to 0 at the end")
    warmup: int = knob(100, "warm-up steps, from 0 to --lr")
    timesteps: int = knob(200, "T, the number of noising steps", min=2, max=10_000)
    schedule: str = knob("cosine", "beta schedule: cosine gives sharper waves than linear (scaled for T)",
                         choices=("cosine", "linear"))
    num_samples: int = knob(512, "waves to generate and score")
    num_train: int = knob(50_000, "size of the training set (fresh random waves)")
    width: int = knob(384, "MLP width")
    blocks: int = knob(2, "MLP residual blocks", min=1, max=100)
    channels: int = knob(16, "UNet channels at length 64; 2x, 3x, 4x that at lengths 32, 16, 8")
    seed: int = knob(0, "random seed: the same seed gives the same samples on CPU", min=0, max=2**64 - 1)
    log_every: int = knob(500, "print progress (and read the loss back, one sync) every so many steps")


# %% Data: a sin(f x + phi) on 64 points over [0, 2 pi], both ends included (as in the seed project)

LENGTH = 64
SHAPE = (LENGTH,)                                                # one data point
X = torch.linspace(0, 2 * math.pi, LENGTH, dtype=torch.float64)  # (64,) the sample positions

F_MIN, F_MAX = 1.0, 5.0                                          # the range of frequencies f

def make_waves(n, generator=None, frequency=None):
    """n waves, float32 (n, 64): sin(f x + phi) with frequency f ~ U[1, 5) (or `frequency`, one or n of them)
    and phase phi ~ U[0, 2 pi), and their frequencies (n,), the label a conditional model learns. Already at
    unit scale (values in [-1, 1], the range images use), so no normalising is needed. Every real wave has
    amplitude 1, so a model that shrinks its waves shows up at once in the numbers."""
    u, phi = torch.rand(2, n, 1, generator=generator, dtype=torch.float64)          # 2 x (n, 1)
    given = None if frequency is None else torch.as_tensor(frequency, dtype=torch.float64).view(-1, 1)  # (1 or n, 1)
    freq = F_MIN + (F_MAX - F_MIN) * u if given is None else given.expand(n, 1)                         # (n, 1)
    return torch.sin(freq * X + 2 * math.pi * phi).float(), freq[:, 0].float()      # (n, 1) * (64,) -> (n, 64)

def make_data(n, generator=None):
    """The waves alone, float32 (n, 64)."""
    return make_waves(n, generator)[0]


# %% Noise schedule: beta_t for t = 0..T-1. Every comment uses this code index t, the papers' t+1: x_t is the
# data x0 after t+1 noising steps, x_{t-1} is one step less noisy, and x_{-1} is x0 itself (abar_{-1} = 1).

def make_schedule(timesteps=CoreConfig.timesteps, kind=CoreConfig.schedule, device="cpu"):
    """Everything the forward and reverse processes need, computed once (float64, stored float32)."""
    if kind == "linear":
        # Ho et al. use 1e-4..0.02 over T=1000. Scaling by 1000/T keeps the same total noise for any T:
        # 5e-4..0.1 at T=200 ends at alpha_bar = 3e-5. Unscaled, 1e-4..0.02 at T=200 would leave
        # abar_{T-1} = 0.13, so x_{T-1} would still be 36 % data, yet sampling starts from pure noise.
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


# %% Models: (x_t, t) -> predicted noise eps, both (B, 64)

TIME_DIM = 64  # size of the sinusoidal step embedding

def timestep_embedding(t, dim, timesteps):
    """Sinusoidal embedding of the step (Transformer-style). t is rescaled to 0..1000 as in improved-diffusion:
    fed raw 0..T-1 (or t/T) most frequencies would barely move and the embedding would be nearly constant."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)  # (half,)
    args = (t.float() * (1000 / timesteps))[:, None] * freqs[None]                    # (B, half)
    return torch.cat([args.sin(), args.cos()], dim=1)                                 # (B, dim)

class Preconditioning(nn.Module):
    """Turns the network's output `out` into the noise prediction, so that `out` has a unit-scale target at
    every noise level. With the noise-to-signal ratio r_t = sqrt((1 - abar_t) / abar_t), y = x_t / sqrt(abar_t)
    = x0 + r_t eps and sd = the data's std (a unit sine's, 1/sqrt(2)):
        eps = r y / (r^2 + sd^2) - sd / sqrt(r^2 + sd^2) out.
    The first term is the exact eps of Gaussian data with std sd, so an output of 0 is that denoiser
    (tests/test_metrics.py) and the network learns only what differs. With sd = 1 this is v-prediction
    (Salimans & Ho 2022, arXiv:2202.00512): out's target is -v, v = sqrt(abar) eps - sqrt(1 - abar) x0; with
    the data's sd it is the c_skip / c_out of Karras et al. 2022 (EDM eq. 7), written for eps. Only the output
    is scaled: no input scaling, and the loss stays DDPM's eps MSE. Why: x0 = y - r eps, so an error in a raw
    network's eps is r_t times larger in x0, and r_t reaches thousands near t = T-1 (measured in RESULTS.md:
    without it the waves come out too small)."""

    def __init__(self, schedule, sd=math.sqrt(0.5)):
        super().__init__()
        abar = schedule["alpha_bars"]
        self.register_buffer("ratio", ((1 - abar) / abar).sqrt(), persistent=False)  # (T,) r_t
        self.sd = sd

    def forward(self, out, x, t):
        r = self.ratio[t][:, None]                                                # (B, 1)
        y = x * (1 + r ** 2).sqrt()                                               # x_t / sqrt(abar_t)
        return r * y / (r ** 2 + self.sd ** 2) - self.sd / (r ** 2 + self.sd ** 2).sqrt() * out

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

class MLP(nn.Module):
    """The whole wave in, the whole noise out: every layer sees all 64 samples, nothing tells it that
    neighbours are related; it has to learn that from data (compare the UNet's convolutions)."""

    def __init__(self, width, blocks, precond, timesteps):
        super().__init__()
        self.precond, self.timesteps = precond, timesteps
        self.time = nn.Sequential(nn.Linear(TIME_DIM, width), nn.SiLU())
        self.inp = nn.Linear(LENGTH, width)
        self.blocks = nn.ModuleList([Block(width, width, width) for _ in range(blocks)])
        self.out = nn.Linear(width, LENGTH)

    def forward(self, x, t):
        return self.denoise(x, t, self.time(timestep_embedding(t, TIME_DIM, self.timesteps)))   # (B, width)

    def denoise(self, x, t, temb):
        """The prediction, given the step's embedding temb, which enters every block."""
        h = self.inp(x)                                                         # (B, 64) -> (B, width)
        for block in self.blocks:
            h = block(h, temb)
        return self.precond(self.out(F.silu(h)), x, t)                          # (B, 64)

def group_norm(c):
    """GroupNorm in groups of channels (8 groups, as DDPM's 32 for its wider layers), fewer if 8 do not divide c."""
    return nn.GroupNorm(math.gcd(8, c), c)

class ConvBlock(nn.Module):
    """Residual conv block (as in DDPM's U-Net): GroupNorm, SiLU, conv; add the time; again; add the input."""

    def __init__(self, c_in, c_out, d_time):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv1d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(d_time, c_out)                       # time enters every block
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x))) + self.time(temb)[:, :, None]   # (B, C, L) + (B, C, 1)
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))

class UNet(nn.Module):
    """1-D U-Net: the encoder halves the length 64 -> 32 -> 16 -> 8 while widening the channels, so each
    value sees more of the wave; the decoder doubles it back, and skip connections hand each scale's
    features to the decoder at the same length, so fine detail is not lost in the bottleneck."""

    def __init__(self, channels, precond, timesteps):
        super().__init__()
        self.precond, self.timesteps = precond, timesteps
        cs = [channels, 2 * channels, 3 * channels, 4 * channels]           # at lengths 64, 32, 16, 8
        d = 4 * channels                                                     # width of the time embedding
        self.time = nn.Sequential(nn.Linear(TIME_DIM, d), nn.SiLU())
        self.inp = nn.Conv1d(1, cs[0], 3, padding=1)
        self.down = nn.ModuleList([ConvBlock(a, a, d) for a in cs[:-1]])
        self.pool = nn.ModuleList([nn.Conv1d(a, b, 3, stride=2, padding=1) for a, b in zip(cs[:-1], cs[1:])])
        self.mid = ConvBlock(cs[-1], cs[-1], d)
        self.unpool = nn.ModuleList([nn.Conv1d(b, a, 3, padding=1) for a, b in zip(cs[:-1], cs[1:])])
        self.up = nn.ModuleList([ConvBlock(2 * a, a, d) for a in cs[:-1]])
        self.out = nn.Sequential(group_norm(cs[0]), nn.SiLU(), nn.Conv1d(cs[0], 1, 3, padding=1))

    def forward(self, x, t):
        return self.denoise(x, t, self.time(timestep_embedding(t, TIME_DIM, self.timesteps)))   # (B, 4C)

    def denoise(self, x, t, temb):
        """The prediction, given the step's embedding temb, which enters every block."""
        h = self.inp(x[:, None])                                                # (B, 64) -> (B, 1, 64) -> (B, C, 64)
        skips = []
        for block, pool in zip(self.down, self.pool):                          # lengths 64 -> 32 -> 16 -> 8
            h = block(h, temb)
            skips.append(h)
            h = pool(h)                                                         # (B, C', L/2), strided conv
        h = self.mid(h, temb)                                                   # (B, 4C, 8)
        for i in reversed(range(len(self.up))):                                # lengths 8 -> 16 -> 32 -> 64
            h = self.unpool[i](F.interpolate(h, scale_factor=2, mode="nearest"))  # (B, C', 2L)
            h = self.up[i](torch.cat([h, skips.pop()], dim=1), temb)          # skip joins the same length
        return self.precond(self.out(h)[:, 0], x, t)                            # (B, 1, 64) -> (B, 64)

def build_model(kind, cfg, schedule):
    """The network of cfg for DDPM: preconditioned for this schedule, its time input a step t of T."""
    precond, timesteps = Preconditioning(schedule), len(schedule["betas"])
    if kind == "mlp":
        return MLP(cfg.width, cfg.blocks, precond, timesteps)
    if kind == "unet":
        return UNet(cfg.channels, precond, timesteps)
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
    """Trains a DDPM with cfg's settings (CoreConfig()'s if None; no frequency condition: that is a chapter below),
    draws cfg.num_samples waves with Algorithm 2, shows eight of them beside real ones and returns them all."""
    cfg = cfg or CoreConfig()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)                                                       # the initial weights
    data = make_data(cfg.num_train, torch.Generator().manual_seed(cfg.seed)).to(device)
    schedule = make_schedule(cfg.timesteps, cfg.schedule, device)
    model = build_model(cfg.model, cfg, schedule).to(device)
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)                           # batches, t and noise
    train(model, lambda rows: diffusion_loss(model, data[rows], schedule, gen), len(data), cfg, gen)
    gen = torch.Generator(device).manual_seed(cfg.seed + 2)                           # x_{T-1} and every z
    with torch.no_grad():
        x = torch.randn((cfg.num_samples,) + SHAPE, generator=gen, device=device)    # x_{T-1} ~ N(0, I)
        *_, samples = ddpm(model.eval(), x, schedule, gen)                           # the last of the T steps
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, shown, title in zip(axes, [data[:8], samples[:8]], ["real waves", "DDPM's samples"]):
        ax.plot(X, shown.cpu().T)                                                     # (64, 8): a line per wave
        ax.set(title=title, xlabel="position x (radians)")
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


# %% Asking for a frequency: conditioning, label dropping and classifier-free guidance (Ho & Salimans 2022,
# arXiv:2207.12598)

class Conditional(nn.Module):
    """A core network (MLP or UNet) that also takes each wave's frequency f (B,), the label it learns: f is
    embedded like a step (0..1000 over [1, 5)), then Linear + SiLU, and added to the step's embedding, so it
    enters every block. A missing label (freq None, or NaN in a row: hidden in training) gets a learned "no
    condition" vector instead, so one network predicts eps(x_t, t, f) and eps(x_t, t)."""

    def __init__(self, net):
        super().__init__()
        self.net, d = net, net.time[0].out_features                  # d: the width of the step's embedding
        self.mlp = nn.Sequential(nn.Linear(TIME_DIM, d), nn.SiLU())
        self.null = nn.Parameter(torch.zeros(d))

    def forward(self, x, t, freq=None):
        temb = self.net.time(timestep_embedding(t, TIME_DIM, self.net.timesteps))    # (B, d)
        if freq is None:
            return self.net.denoise(x, t, temb + self.null)
        steps = (freq.nan_to_num(F_MIN) - F_MIN) * (1000 / (F_MAX - F_MIN))       # (B,) f as a step in 0..1000
        emb = self.mlp(timestep_embedding(steps, TIME_DIM, 1000))                  # (B, d)
        return self.net.denoise(x, t, temb + torch.where(freq.isnan()[:, None], self.null, emb))

def with_labels(model, freq, label_drop=0.0, generator=None):
    """model(x, t) for waves of frequencies freq (B,), each hidden (NaN) with probability label_drop, so that
    the network learns eps(x_t, t) as well as eps(x_t, t, f)   (Ho & Salimans 2022, Algorithm 1)."""
    hidden = torch.rand(freq.shape, generator=generator, device=freq.device) < label_drop  # (B,) per wave
    freq = freq.masked_fill(hidden, math.nan)
    return lambda x, t: model(x, t, freq)

def guided(model, freq, w):
    """Classifier-free guidance as a predictor the samplers take: (x_t, t) -> eps for waves of frequency freq
    (n,). eps = eps(x_t, t) + w (eps(x_t, t, f) - eps(x_t, t))   (Ho & Salimans 2022, eq. 6 with w = 1 + theirs):
    w = 0 ignores f, w = 1 is the plain conditional model, w > 1 pushes further away from the unconditional
    prediction, towards what makes f likely (RESULTS.md measures w). A flow model's velocities mix the same way:
    like eps, v is affine in the score, with coefficients that depend on s alone."""
    if w == 1:
        return lambda x, t: model(x, t, freq)                     # one network call per step
    def eps(x, t):
        uncond = model(x, t)                                      # two calls of n: faster on a CPU than one of 2n
        return uncond if w == 0 else uncond + w * (model(x, t, freq) - uncond)
    return eps

def conditional_predictor(model, n, frequency, w, generator=None):
    """What a conditional model samples with, and the frequencies asked for. Asked for F: guided towards it. Not
    asked: p(x) is the average of p(x | f) over the data's f ~ U[1, 5), so draw each wave's f independently, as
    ancestral sampling of (f, x) would, and sample p(x | f) (w = 1): the conditional path, trained on most waves."""
    device = next(model.parameters()).device
    if frequency:
        return guided(model, torch.full((n,), frequency, device=device), w), frequency
    freq = F_MIN + (F_MAX - F_MIN) * torch.rand(n, generator=generator)      # (n,) f ~ U[1, 5)
    return guided(model, freq.to(device), 1.0), freq


# %% Flow matching (Lipman et al. 2023, arXiv:2210.02747; Liu et al. 2023, arXiv:2209.03003): data and noise
# joined by straight lines, x_s = (1 - s) x0 + s eps, s from 0 (data) to 1 (noise); the network learns the
# velocity along them, v = dx_s/ds = eps - x0, and sampling integrates dx/ds = v_theta(x, s) from x = eps at
# s = 1 to s = 0.

def flow_model(kind, cfg):
    """The same networks for flow matching: their time input is s in [0, 1], a time scale of 1 (also 0..1000),
    and no preconditioning: the velocity eps - x0 has the same variance, 1 + Var(x0), at every s (RESULTS.md
    measures it anyway)."""
    identity = lambda out, x, s: out
    return MLP(cfg.width, cfg.blocks, identity, 1) if kind == "mlp" else UNet(cfg.channels, identity, 1)

def flow_loss(model, x0, generator=None):
    """s = sigmoid(z), z ~ N(0, 1), eps ~ N(0, I), minimise || v - v_theta(x_s, s) ||^2. This logit-normal s
    (Esser et al. 2024) visits the middle of the path more, and its ends less, than uniform s does; here it made
    cleaner waves (measured in RESULTS.md)."""
    s = torch.sigmoid(torch.randn(x0.shape[0], generator=generator, device=x0.device))  # (B,) in (0, 1)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    x_s = (1 - s[:, None]) * x0 + s[:, None] * noise                                   # (B, 1) * (B, 64)
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
    x = torch.randn((n,) + shape, generator=generator, device=schedule["betas"].device)  # (n, 64) the noise
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
    """n pairs (x0, eps, f): noise eps ~ N(0, I) and the sample x0 the model's ODE carries it to in `steps`
    midpoint steps, 20 network calls (twice as many made a somewhat better reflowed model at twice the cost:
    measured in RESULTS.md). A Conditional model draws each pair's label f ~ U[1, 5) and follows its plain
    conditional ODE (w = 1); f is None for an unconditional one."""
    freq = None
    if isinstance(model, Conditional):
        freq = F_MIN + (F_MAX - F_MIN) * torch.rand(n, generator=generator, device=device)   # (n,) f
        model = guided(model, freq, 1.0)
    noise = torch.randn((n,) + SHAPE, generator=generator, device=device)        # (n, 64) the noise of each pair
    *_, x0 = midpoint(model, noise, steps)                                        # the last step: s = 0
    return x0, noise, freq

def pair_model(model, freq, rows, cfg, generator=None):
    """The model for a batch of pairs: with their labels, label dropping as in training, if they have labels."""
    return model if freq is None else with_labels(model, freq[rows], cfg.label_drop, generator)

def reflow_loss(model, x0, noise, generator=None):
    """flow_loss on the lines between pairs: each pair's own noise, and s ~ U[0, 1] (one Euler step uses v at
    s = 1 alone, so every s counts as much)."""
    s = torch.rand(x0.shape[0], generator=generator, device=x0.device)                # (B,) s ~ U[0, 1)
    x_s = (1 - s[:, None]) * x0 + s[:, None] * noise                                   # (B, 1) * (B, 64)
    return F.mse_loss(model(x_s, s), noise - x0)

def reflow(model, pairs, cfg, generator=None):
    """cfg.reflow_steps more steps of train() on the pairs (x0, eps), from the trained weights (afresh did
    worse: RESULTS.md). Returns their losses."""
    x0, noise, freq = pairs
    return train(model, lambda rows: reflow_loss(pair_model(model, freq, rows, cfg, generator), x0[rows], noise[rows],
                                                 generator), len(x0),
                 replace(cfg, steps=cfg.reflow_steps), generator)


# %% Fewer calls, the last step: distillation (Liu et al. 2023). Reflow's pairs are the teacher's answers: for each
# noise eps, the sample x0 its ODE reaches. Distillation regresses that answer directly: one Euler step from s = 1,
# eps - v_theta(eps, 1), trained to land on x0, as one-step distillation methods since do. After reflow it is
# cheap: the pairs are drawn already, and the reflowed model's one step is already near them. What it gives up:
# v at s = 1 becomes an answer, not a direction, so guidance, which extrapolates between two of them, no longer
# steers; and without its label, one step can only land on the mean of the waves the labels would have given.

def distill_loss(model, x0, noise, generator=None, share=0.75):
    """reflow_loss with s = 1 for a share of the pairs: there x_s is the noise eps, and the loss is
    || (eps - x0) - v_theta(eps, 1) ||^2, the one Euler step eps - v_theta(eps, 1) against the pair's x0. The rest
    keep s uniform, so the path stays learned and more steps still refine (with s = 1 alone, 2 steps strayed
    more than 1: RESULTS.md)."""
    s = torch.rand(x0.shape[0], generator=generator, device=x0.device)                # (B,) s ~ U[0, 1)
    at_one = torch.rand(x0.shape[0], generator=generator, device=x0.device) < share   # (B,) which pairs
    s = torch.where(at_one, torch.ones_like(s), s)
    x_s = (1 - s[:, None]) * x0 + s[:, None] * noise                                   # (B, 1) * (B, 64)
    return F.mse_loss(model(x_s, s), noise - x0)

def distill(model, pairs, cfg, generator=None):
    """cfg.distill_steps steps of train() on distill_loss over the pairs (x0, eps). Returns their losses."""
    x0, noise, freq = pairs
    return train(model, lambda rows: distill_loss(pair_model(model, freq, rows, cfg, generator), x0[rows],
                                                  noise[rows], generator), len(x0),
                 replace(cfg, steps=cfg.distill_steps), generator)


# %% Evaluation: is each sample a clean sine (shape), and do the samples vary like real waves (coverage)?

W_GRID = torch.arange(0.5, 8.0, 0.005, dtype=torch.float64)                   # (W,) candidate frequencies

def fit_sines(y):
    """Least squares y ~ a sin(w x) + b cos(w x) + c, for every w on W_GRID at once, keeping the best w.
    For fixed w the fit is linear: with Q an orthonormal basis of the columns [sin, cos, 1] (QR), the fitted
    part of y is Q Q^T y, so the residual is |y|^2 - |Q^T y|^2 and the best w maximises |Q^T y|^2.
    Returns R^2 = 1 - SSE / SST, the frequency w, the amplitude sqrt(a^2 + b^2) and the phase phi of
    a sin + b cos = amplitude sin(w x + phi), each (n,)."""
    y = y.double().cpu()                                                            # (n, 64)
    basis = torch.stack([torch.sin(W_GRID[:, None] * X), torch.cos(W_GRID[:, None] * X),
                         torch.ones(len(W_GRID), LENGTH, dtype=torch.float64)], dim=2)  # (W, 64, 3)
    Q = torch.linalg.qr(basis).Q                                                    # (W, 64, 3)
    explained = torch.cat([torch.einsum("wlk,nl->nwk", Q, chunk).pow(2).sum(2)    # |Q^T y|^2: (n, W)
                           for chunk in y.split(500)])
    best = explained.argmax(1)                                                      # (n,) index of the best w
    coef = (torch.linalg.pinv(basis[best]) @ y[:, :, None])[:, :, 0]               # (n, 3, 64) @ (n, 64, 1) -> (n, 3)
    fitted = (basis[best] @ coef[:, :, None])[:, :, 0]                             # (n, 64)
    sse = (y - fitted).pow(2).sum(1)
    sst = (y - y.mean(1, keepdim=True)).pow(2).sum(1)
    amplitude = coef[:, :2].norm(dim=1)                                             # sqrt(a^2 + b^2)
    phase = torch.atan2(coef[:, 1], coef[:, 0])                                     # a = A cos phi, b = A sin phi
    return 1 - sse / sst, W_GRID[best], amplitude, phase

def wasserstein1(a, b):
    """1-D Wasserstein distance: the mean gap between the two quantile functions."""
    q = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    return (torch.quantile(a, q) - torch.quantile(b, q)).abs().mean().item()

def evaluate(samples, generator=None, frequency=None, labels=None):
    """Shape: R^2 of each sample's best sine fit (median; shares at >= 0.99 and >= 0.95); real waves score 1.
    Coverage: Wasserstein-1 of the fitted frequencies against real waves', relative to the real range (4), and
    of the amplitudes, relative to the real mean amplitude (1): 0 means matching spreads; a model that draws
    one perfect wave again and again scores R^2 = 1 but fails here. The real waves: 5000 fresh ones, or given
    the labels the samples were drawn with (one per sample, or one F), real waves of those labels and fresh
    phases; else a model that follows its labels would score the labels' own distance from U[1, 5). Asked for a
    frequency: how far the fitted ones are from it (median, 90th percentile), and whether the phases still
    spread over the circle, |mean of exp(i phi)| (about 0.04 for 512 uniform phases, 1 for a single one)."""
    r2, freq, amp, phase = fit_sines(samples)
    _, ref_freq, ref_amp, _ = fit_sines(make_waves(5000 if labels is None else len(samples), generator, labels)[0])
    quality = dict(r2_median=r2.median().item(), r2_099=(r2 >= 0.99).double().mean().item(),
                   r2_095=(r2 >= 0.95).double().mean().item(), freq_w1=wasserstein1(freq, ref_freq) / 4,
                   amp_w1=wasserstein1(amp, ref_amp) / ref_amp.mean().item(),
                   amp_ratio=(amp.mean() / ref_amp.mean()).item())
    if frequency:
        error = (freq - frequency).abs()
        quality.update(freq_err_median=error.median().item(), freq_err_p90=error.quantile(0.9).item(),
                       phase_bunching=torch.polar(torch.ones_like(phase), phase).mean().abs().item())
    return quality

def straightness(trajectory):
    """How straight the sampling paths are: the mean path length over the mean distance from start to end, for
    trajectory = x at every step, (steps + 1) x (n, 64). 1.0: every wave moved along a straight line."""
    path = torch.stack(trajectory).double()                                     # (K + 1, n, 64)
    length = (path[1:] - path[:-1]).norm(dim=2).sum(0)                          # (n,)
    return (length.mean() / (path[-1] - path[0]).norm(dim=1).mean()).item()

QUALITY = {"r2_median": "median R^2 of sine fit", "r2_099": "share R^2 >= 0.99", "r2_095": "share R^2 >= 0.95",
           "freq_w1": "frequency W1 / 4", "amp_w1": "amplitude W1 / mean", "amp_ratio": "mean amplitude ratio",
           "freq_err_median": "median |f - F|", "freq_err_p90": "90th pct |f - F|",
           "phase_bunching": "phase bunching"}


# %% Running the lesson ======================================================================================
# The command line and its Config, run(): how the flags call the chapters, then checks, files and figures.
# Nothing new about diffusion: skip it unless you want to change how the script is run.

# %% The command line: one flag per Config field

SAMPLERS = dict(eps=("ddpm", "ddim", "dpm"), flow=("euler", "midpoint"))  # what fits each objective, default first

@dataclass
class Config(CoreConfig):
    """Every knob: the core's, then the chapters', then how the lesson is run. Its defaults are the default run."""
    condition: bool = knob(True, "train with each wave's frequency as a condition (classifier-free guidance)")
    label_drop: float = knob(0.15, "share of training waves whose frequency is hidden, so the same network "
                             "also learns p(x) without it", min=0, max=1)
    frequency: float = knob(0.0, "ask for waves of this frequency, in [1, 5); 0: any frequency", min=0)
    guidance: float = knob(2.0, "guidance weight w towards --frequency: 0 ignores it, 1 plain conditional, "
                           "more steers harder", min=0)
    objective: str = knob("eps", "what the network learns: eps, DDPM's noise, or flow, the velocity of a straight "
                          "path from data to noise (flow matching)", choices=("eps", "flow"))
    sampler: str = knob("auto", "reverse process; for eps: ddpm (ancestral, T steps), ddim or dpm (DPM-Solver++); for "
                        "flow: euler or midpoint (2 calls a step); auto: ddpm or euler; others are refused",
                        choices=("auto", *SAMPLERS["eps"], *SAMPLERS["flow"]))
    sample_steps: int = knob(20, "K, steps of every sampler but ddpm: ddim and dpm at most T")
    eta: float = knob(0.0, "noise of ddim and euler steps: 0 deterministic, 1 as much as DDPM's", min=0, max=1)
    clip: float = knob(1.5, "DDIM and DPM-Solver clip their predicted x0 to [-clip, clip]; the waves lie within 1",
                      min=0.01)
    reflow: bool = knob(False, "flow: after training (or --load), retrain on the model's own (noise, sample) pairs, "
                        "so that 1 or 2 euler steps draw the data (rectified flow)")
    reflow_pairs: int = knob(10_000, "(noise, sample) pairs that --reflow draws with the model's own ODE")
    reflow_steps: int = knob(1000, "optimizer steps of --reflow on its pairs, from the trained weights")
    distill: bool = knob(False, "after --reflow (or --load of a reflowed model): train one euler step from the "
                         "noise to land on each pair's sample (then sample with --sample-steps 1)")
    distill_steps: int = knob(2000, "optimizer steps of --distill")
    # how the lesson is run
    device: str = knob("auto", "where to run; auto picks cuda, then mps, then cpu",
                       choices=("auto", "cpu", "cuda", "mps"))
    out: str = knob(os.path.join("outputs", "diffusion_sine"), "output folder")
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

PROG = "diffusion_sine.py"  # the name in messages (not from __file__: a notebook cell has none)
DESCRIPTION = "DDPM and flow matching on 1-D sine waves of length 64."
SAVED = ("model", "objective", "timesteps", "schedule", "width", "blocks", "channels", "condition",  # what --load takes
         "steps", "batch_size", "lr", "warmup", "label_drop")                        # from the checkpoint

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
    label_gen = torch.Generator().manual_seed(seed(4))                  # frequencies when none is asked for
    reflow_gen = torch.Generator(device=device).manual_seed(seed(5))    # reflow's pairs, labels and batches
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
    data, labels = (tensor.to(device) for tensor in make_waves(cfg.num_train, data_gen))

    losses, times, stages = torch.zeros(0), dict(train=0.0, reflow=0.0, distill=0.0), {}
    if ckpt is None:
        start = time.perf_counter()
        losses = train(model, training_loss(cfg, model, data, schedule, train_gen, labels), len(data), cfg, train_gen).cpu()
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
    asked = f" at frequency {cfg.frequency}, guidance {cfg.guidance}" if cfg.frequency else ""
    print(f"sampling {cfg.num_samples} with {cfg.sampler}{asked} ...")
    start = time.perf_counter()
    paths = cfg.plots or flow                                           # keep x after every step (a copy to the
    traj, calls = ([] if paths else None), []                           # host each): figures, flow's straightness
    net, labels = model, None                                           # (x_t, t) -> eps, what sample() calls
    if cfg.condition:
        net, labels = conditional_predictor(model, cfg.num_samples, cfg.frequency, cfg.guidance, label_gen)
    net = recorder(net, calls, 3) if cfg.plots else net                 # and its calls, for reverse.png
    samples = sample(net, cfg.num_samples, schedule, cfg.sampler, cfg.sample_steps, sample_gen,
                     eta=cfg.eta, clip=cfg.clip, trajectory=traj).cpu()
    sample_time = time.perf_counter() - start
    if not torch.isfinite(samples).all():
        hint = ", or --guidance is too large" if cfg.frequency else ""
        raise DivergedError(f"sampling produced NaN/inf; the model is broken, retrain with a smaller --lr{hint}")
    print(f"sampled in {sample_time:.2f}s")

    scored = samples[:20_000]                        # score at most 20,000: plenty, and it stays quick
    labels = labels if labels is None or cfg.frequency else labels[:20_000]        # what the scored were asked for
    quality = evaluate(scored, eval_gen, cfg.frequency, labels)
    real = evaluate(make_waves(len(scored), eval_gen, labels)[0], eval_gen, cfg.frequency, labels)
    metrics = dict(quality=quality, real=real, train_seconds=times["train"], sample_seconds=sample_time,
                   steps_per_second=cfg.steps / times["train"] if times["train"] else None, parameters=n_params,
                   device=str(device), sampler=cfg.sampler, model=cfg.model, objective=cfg.objective,
                   frequency=cfg.frequency or None, guidance=cfg.guidance if cfg.frequency else None, eta=cfg.eta,
                   straightness=straightness(traj) if paths else None, **done, reflow_seconds=times["reflow"],
                   distill_seconds=times["distill"])
    print(f"quality{'generated':>27}   real data")
    for key in quality:
        print(f"  {QUALITY[key]:22} {quality[key]:9.4f}   {real[key]:9.4f}")
    save_results(cfg.out, samples, metrics, losses)
    if cfg.plots:
        plot_all(cfg, data[:2000].cpu(), {k: v.cpu() for k, v in schedule.items()}, losses.numpy(), samples, traj,
                 stages, calls)
    if cfg.plots and cfg.frequency:
        plot_guidance(cfg, model, schedule, torch.Generator(device=device).manual_seed(cfg.seed))
    if cfg.plots and before:
        plot_fewer_calls(cfg, {**before, ("distilled" if cfg.distill else "reflowed"): model}, schedule, device)
    print(f"outputs in {cfg.out}/")
    return metrics

def network(cfg, schedule):
    """The network a run of cfg trains: DDPM's (build_model) or, for --objective flow, flow matching's, taking the
    frequency too (Conditional) unless --no-condition."""
    net = flow_model(cfg.model, cfg) if cfg.objective == "flow" else build_model(cfg.model, cfg, schedule)
    return Conditional(net) if cfg.condition else net

def training_loss(cfg, model, data, schedule, generator=None, labels=None):
    """What a run of cfg minimises: the loss on the rows `rows` of data (and of their labels), for train()."""
    loss = flow_loss if cfg.objective == "flow" else lambda net, x0, g: diffusion_loss(net, x0, schedule, g)
    if not cfg.condition:
        return lambda rows: loss(model, data[rows], generator)
    return lambda rows: loss(with_labels(model, labels[rows], cfg.label_drop, generator), data[rows], generator)

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
    if cfg.frequency and (cfg.distill or (ckpt or {}).get("distilled")) and cfg.guidance != 1:
        raise UsageError(f"--guidance {cfg.guidance:g} on a distilled model: its one step returns a wave, not a "
                         "direction, so guidance cannot steer it (w = 0 and 2 break the waves); use --guidance 1")
    if cfg.eta and cfg.sampler not in ("ddim", "euler"):
        raise UsageError(f"--eta adds noise to ddim or euler steps; --sampler {cfg.sampler} takes none")
    if cfg.sampler in ("ddim", "dpm") and cfg.sample_steps > cfg.timesteps:
        raise UsageError(f"--sample-steps {cfg.sample_steps} is more than --timesteps {cfg.timesteps}")
    if cfg.frequency and not F_MIN <= cfg.frequency < F_MAX:
        raise UsageError(f"--frequency {cfg.frequency} is outside [1, 5), the frequencies the model learned")
    if cfg.frequency and not cfg.condition:
        raise UsageError("--frequency needs a model trained with the condition; this one was trained with "
                         "--no-condition: retrain without that flag")
    if cfg.condition and cfg.label_drop >= 1:
        raise UsageError("--label-drop 1 hides every label, so the condition is never learned: use --no-condition")
    if cfg.frequency and cfg.guidance != 1 and cfg.label_drop == 0:
        raise UsageError("guidance needs the unlabelled path, and --label-drop 0 never trained it: use --guidance 1")
    if cfg.guidance != Config.guidance and not cfg.frequency:
        raise UsageError("--guidance steers towards a --frequency: give one too (without it, each wave's "
                         "frequency is drawn at random)")
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

LOSS_FLOOR = (0.031, "a wave is fixed by 2 numbers: x_t tells the\nnoise in 62 of its 64 directions, not along the waves")  # make_img.sh

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

def waves(ax, ys, title="", ylim=3.5, color=None, xlabel="position x (radians)"):
    """Waves (k, 64) as lines over the positions x, in `color` or else in C0, C1, ..."""
    for j, y in enumerate(ys):
        ax.plot(X.numpy(), y, color=color or f"C{j}")
    ax.set(title=title, xlim=(0, 2 * math.pi), ylim=(-ylim, ylim), xlabel=xlabel)

def plot_guidance(cfg, model, schedule, generator):
    """Rows of waves asked for at F = 1.5 ... 4.5 with the run's guidance; beside them, the fitted frequency
    against the one asked for, at w = 0 (ignores F), 1 (plain conditional) and the run's w."""
    draw = lambda freq, w: sample(guided(model, freq.to(schedule["betas"].device), w), len(freq), schedule,
                                  cfg.sampler, cfg.sample_steps, generator, cfg.eta, clip=cfg.clip).cpu()
    rows = torch.tensor([1.5, 2.5, 3.5, 4.5])
    asked_waves = draw(rows.repeat_interleave(6), cfg.guidance)               # (24, 64): six waves a row
    fig = plt.figure(figsize=(16, 6))
    left, right = fig.subfigures(1, 2, width_ratios=[2.2, 1])
    axes = left.subplots(4, 6, sharex=True, sharey=True)
    for ax, y in zip(axes.flat, asked_waves):
        waves(ax, [y], ylim=1.6, xlabel="")
    for ax, asked in zip(axes[:, 0], rows):
        ax.set_ylabel(f"F = {asked:g}")
    left.suptitle(f"Waves asked for at frequency F (guidance w = {cfg.guidance:g})")
    ax = right.subplots()
    asked = torch.linspace(1.1, 4.9, 20).repeat_interleave(3)                  # (60,) three waves each
    for w in sorted({0.0, 1.0, cfg.guidance}):
        ax.scatter(asked, fit_sines(draw(asked, w))[1], s=10, alpha=0.7, label=f"w = {w:g}")
    ax.plot([F_MIN, F_MAX], [F_MIN, F_MAX], color="0.6", lw=1, label="f = F")
    ax.set(xlabel="frequency asked for, F", ylabel="fitted frequency f", title="What guidance does")
    ax.legend()
    save(fig, cfg.out, "guidance.png")

def plot_all(cfg, data, schedule, losses, samples, traj, stages, calls):
    out, T = cfg.out, len(schedule["betas"])
    a, b = schedule["sqrt_alpha_bars"], schedule["sqrt_one_minus_alpha_bars"]     # x = a x0 + b eps at step t
    if cfg.objective == "flow":                                                   # the straight path, s = (t + 1) / T
        a, b = 1 - torch.arange(1, T + 1) / T, torch.arange(1, T + 1) / T
    x0 = data[:1]                                                                # (1, 64) one wave
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    steps = [0, T // 10, T // 4, T // 2, T - 1]
    fig, axes = plt.subplots(1, len(steps), figsize=(15, 3.2), sharey=True)
    for ax, t in zip(axes, steps):
        waves(ax, torch.cat([a[t] * x0 + b[t] * noise, x0]), f"x = {a[t]:.3f} x0 + {b[t]:.3f} eps")  # as q_sample
    axes[0].set_ylabel("value")
    axes[0].legend(["noisy x", "clean x0"], loc="lower left", fontsize=8)
    fig.suptitle(f"Forward process ({cfg.objective}): one sine wave dissolves into N(0, I) noise")
    save(fig, out, "forward.png")

    plot_schedule(out, T)
    if len(losses):  # none after --load
        plot_loss(out, losses, cfg.objective, stages)

    r2, freq, amp, phase = fit_sines(samples[:16])
    residual = samples[:16].double() - amp[:, None] * torch.sin(freq[:, None] * X + phase[:, None])   # (16, 64)
    residual = residual - residual.mean(1, keepdim=True)                         # less the fit's constant c
    fig = plt.figure(figsize=(15, 6.5))
    for sub, shown, name in zip(fig.subfigures(1, 2), [data[:16], samples[:16]], ["real", "generated"]):
        axes = sub.subplots(4, 4, sharex=True, sharey=True)
        for i, ax in enumerate(axes.flat):
            if i >= len(shown):                                       # fewer than 16 samples
                ax.axis("off")
                continue
            waves(ax, shown[i:i + 1], ylim=1.6, color="C1" if name == "real" else "C0", xlabel="")
            if name == "generated":
                ax.plot(X, 10 * residual[i], color="0.5", lw=0.8)
                ax.set_title(f"R^2 = {r2[i]:.4f}, f = {freq[i]:.2f}", fontsize=8)
        sub.suptitle(f"{name} waves" + (" (title: fit of a sin + b cos + c; grey: 10x what the fit misses)"
                                        if name == "generated" else ""))
        sub.supxlabel("position x (radians)")
        sub.supylabel("value")
    save(fig, out, "samples.png")

    plot_reverse(cfg, schedule, calls, samples[:3])
    if cfg.gif:
        animate(out, [x[:3] for x in traj], waves, (6, 3.5))

def recorder(net, calls, n):
    """net, keeping the input, time and prediction of its first n rows at every call, for reverse.png."""
    def call(x, t):
        out = net(x, t)
        calls.append((x[:n].cpu(), t[:1].cpu(), out[:n].cpu()))
        return out
    return call

def plot_reverse(cfg, schedule, calls, samples):
    """reverse.png: three waves on the way from noise to data at five levels of noise, and below each the
    network's x0_hat there (what it believes the clean waves to be); last, the samples."""
    flow = cfg.objective == "flow"
    noise = [t.item() if flow else schedule["sqrt_one_minus_alpha_bars"][t].item() for _, t, _ in calls]  # b in x
    picks = sorted({min(range(len(calls)), key=lambda i: abs(noise[i] - b)) for b in (0.9, 0.6, 0.35, 0.15, 0.05)})
    fig, axes = plt.subplots(2, len(picks) + 1, figsize=(2.35 * (len(picks) + 1), 5), sharex=True, squeeze=False)
    for ax, i in zip(axes.T, picks):
        x, t, out = calls[i]
        x0_hat = x - t * out if flow else predict_x0(x, out, schedule["alpha_bars"][t])  # x0 = x - s v; Tweedie
        waves(ax[0], x, f"{'s' if flow else 't'} = {t.item():.3g}: noise std {noise[i]:.2f}", xlabel="")
        waves(ax[1], x0_hat, "the network's x0_hat", ylim=1.6)
    waves(axes[0, -1], samples, "the samples", ylim=1.6, xlabel="")
    axes[1, -1].axis("off")
    fig.suptitle(f"Reverse process ({cfg.sampler}): three waves from noise to data (top); below each, the network's "
                 "guess of the clean waves from that x (x0_hat)")
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

def plot_fewer_calls(cfg, models, schedule, device):
    """reflow.png: three waves of each model in 1 and 2 Euler steps from the same noise and labels (the flow model,
    reflowed, distilled), with the share of clean waves among all it drew."""
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 6), sharex=True, sharey=True, squeeze=False)
    for j, (name, net) in enumerate(models.items()):
        for k in (1, 2):
            if cfg.condition:                                                   # the same labels in every panel
                net_k = conditional_predictor(net, cfg.num_samples, 0, 1, torch.Generator().manual_seed(cfg.seed))[0]
            y = sample(net_k if cfg.condition else net, cfg.num_samples, schedule, "euler", k,
                       torch.Generator(device=device).manual_seed(cfg.seed))
            clean = (fit_sines(y)[0] >= 0.99).double().mean()
            waves(axes[k - 1, j], y[:3].cpu(), f"{name}, {k} Euler step{'s' * (k > 1)}\n{clean:.0%} of waves at "
                  "R^2 >= 0.99", ylim=1.6)
    fig.suptitle("Fewer calls: the same noise, the same network calls")
    save(fig, cfg.out, "reflow.png")

# %% Run the lesson (a script, or a notebook cell: main() reads the flags, ignoring a kernel's own)
if __name__ == "__main__":
    main()
