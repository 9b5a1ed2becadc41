"""Denoising diffusion (DDPM) from scratch on a 2-D spiral point cloud.

What it teaches: how a diffusion model turns Gaussian noise into data. Noise is added to the spiral step
by step (the forward process), a small network learns to predict that noise (the training loss), and
running the steps backwards from pure noise draws new spiral points (the reverse process, DDPM or DDIM).

Run it:
    python diffusion_spiral.py                      # MLP, trains in seconds on a laptop CPU
    python diffusion_spiral.py --model unet         # a U-shaped MLP for points
    python diffusion_spiral.py --load outputs/diffusion_spiral/model.pt --sampler ddim --sample-steps 20
In a notebook: paste this file into a cell and run it (defaults), or call main(["--model", "unet"]).

References:
    DDPM: Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239
    DDIM: Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models", arXiv:2010.02502
    Cosine schedule: Nichol, Dhariwal 2021, "Improved DDPM", arXiv:2102.09672
    Fourier features: Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency Functions"
"""
import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# Config: every knob, and its defaults are the default run


@dataclass
class Config:
    model: str = "mlp"          # "mlp" or "unet"
    device: str = "auto"        # auto picks cuda, then mps, then cpu
    steps: int = 2000           # optimizer steps
    batch_size: int = 512       # points per step: the loss averages over many t, so its gradient is steadier
    lr: float = 2e-3            # peak learning rate of AdamW, reached after a short warm-up ...
    warmup: int = 100           # ... then cosine decay to zero: a cold finish, like an EMA of the weights
    timesteps: int = 100        # T, number of noising steps
    schedule: str = "cosine"    # "cosine" spends more of the T steps at low noise, where the spiral forms;
                                # "linear" (scaled for T) leaves several times more stray points
    sampler: str = "ddpm"       # "ddpm" (ancestral, T steps) or "ddim" (deterministic, any number of steps)
    sample_steps: int = 20      # DDIM steps
    eta: float = 0.0            # DDIM noise: 0 deterministic, 1 like DDPM
    clip: float = 2.5           # DDIM clips its predicted x0 to [-clip, clip]; the spiral lies within 2.1
    num_samples: int = 2000     # points to generate
    num_train: int = 100_000    # size of the training set (a fresh draw of the spiral)
    noise: float = 0.01         # std of the jitter on spiral points, in normalised units
    width: int = 128            # MLP width
    unet_width: int = 96        # the UNet's widths are 2x, 1x, 0.5x this: 192 -> 96 -> 48 -> 96 -> 192
    blocks: int = 3             # MLP residual blocks
    seed: int = 0
    log_every: int = 300        # print progress (and look at the loss, one sync) every so many steps
    out: str = os.path.join("outputs", "diffusion_spiral")
    load: str = ""              # checkpoint to sample from, skipping training
    plots: bool = True
    gif: bool = False


# -----------------------------------------------------------------------------
# Data: a spiral, angle = 4 pi sqrt(u), radius = angle (two turns, points evenly spaced along the arc)

SCALE = 2 * math.pi  # E[r^2] = E[angle^2] = 8 pi^2, so dividing by 2 pi gives each coordinate mean square 1


def make_data(n, generator=None, noise=Config.noise):
    """n spiral points, float32 (n, 2), normalised: the forward process mixes data with N(0, I) noise,
    so data at the noise's scale keeps every step of the schedule equally useful."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    angle = 4 * math.pi * u.sqrt()                                             # (n,)
    points = angle[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)   # (n, 2)
    points = points / SCALE + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.float()


# -----------------------------------------------------------------------------
# Noise schedule: beta_t for t = 0..T-1 (code index t is the paper's step t+1)


def make_schedule(timesteps=100, kind="cosine", device="cpu"):
    """Everything the forward and reverse processes need, precomputed once (float64, stored float32)."""
    if kind == "linear":
        # Ho et al. use 1e-4..0.02 over T=1000. Scaling by 1000/T keeps the same total noise for any T:
        # 1e-3..0.2 at T=100 ends at alpha_bar = 2e-5. Unscaled, 1e-4..0.02 at T=100 would leave
        # alpha_bar_T = 0.36, so x_T would still be 60 % spiral, yet sampling starts from pure noise.
        scale = 1000 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
        betas = betas.clamp(max=0.999)         # for T <= 20 the top betas would reach 1 (abar_t = 0) or more
    elif kind == "cosine":
        # alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2)   (Improved DDPM eq. 17)
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)                  # beta_t = 1 - abar_t / abar_{t-1}
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)                          # abar_t = prod_{s<=t} alpha_s
    alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])  # abar_{t-1}, 1 at t=0
    s = dict(
        betas=betas,
        alphas=alphas,
        alpha_bars=alpha_bars,
        alpha_bars_prev=alpha_bars_prev,
        sqrt_alpha_bars=alpha_bars.sqrt(),
        sqrt_one_minus_alpha_bars=(1 - alpha_bars).sqrt(),
        # posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta~_t)     (DDPM eqs. 6, 7)
        posterior_mean_coef1=betas * alpha_bars_prev.sqrt() / (1 - alpha_bars),
        posterior_mean_coef2=(1 - alpha_bars_prev) * alphas.sqrt() / (1 - alpha_bars),
        posterior_variance=betas * (1 - alpha_bars_prev) / (1 - alpha_bars),   # 0 at t=0: no noise last
    )
    return {k: v.float().to(device) for k, v in s.items()}


# -----------------------------------------------------------------------------
# Forward process


def q_sample(x0, t, noise, schedule):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps   (DDPM eq. 4); t is (B,) of step indices."""
    shape = (-1,) + (1,) * (x0.dim() - 1)                           # broadcast (B,) over (B, ...)
    return (schedule["sqrt_alpha_bars"][t].view(shape) * x0
            + schedule["sqrt_one_minus_alpha_bars"][t].view(shape) * noise)


# -----------------------------------------------------------------------------
# Models: (x_t, t) -> predicted noise eps, same shape as x_t


def timestep_embedding(t, dim, timesteps):
    """Sinusoidal embedding of the step (Transformer-style). t is rescaled to 0..1000 as in improved-diffusion:
    fed raw 0..T-1 (or t/T) most frequencies would barely move and the embedding would be nearly constant."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)  # (half,)
    args = (t.float() * (1000 / timesteps))[:, None] * freqs[None]                    # (B, half)
    return torch.cat([args.sin(), args.cos()], dim=1)                                 # (B, dim)


def fourier_features(x, n_freqs=6):
    """[x, sin(2^k pi x), cos(2^k pi x)]: a plain MLP draws smooth blobs; these let it draw thin curves."""
    freqs = 2.0 ** torch.arange(n_freqs, device=x.device) * math.pi                   # (F,)
    args = (x[:, :, None] * freqs).flatten(1)                                         # (B, 2F)
    return torch.cat([x, args.sin(), args.cos()], dim=1)                              # (B, 2 + 4F)


class Block(nn.Module):
    """Residual block: x + W2 silu(W1 silu(x) + time), with a linear skip when the width changes."""

    def __init__(self, d_in, d_out, d_time):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d_in, d_out), nn.Linear(d_out, d_out)
        self.time = nn.Linear(d_time, d_out)                       # time enters every block
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)

    def forward(self, x, temb):
        return self.skip(x) + self.lin2(F.silu(self.lin1(F.silu(x)) + self.time(temb)))


class MLP(nn.Module):
    def __init__(self, width=128, blocks=3, timesteps=100, d_time=32):
        super().__init__()
        self.timesteps, self.d_time = timesteps, d_time
        self.time = nn.Sequential(nn.Linear(d_time, width), nn.SiLU())
        self.inp = nn.Linear(2 + 4 * 6, width)
        self.blocks = nn.ModuleList([Block(width, width, width) for _ in range(blocks)])
        self.out = nn.Linear(width, 2)

    def forward(self, x, t):
        temb = self.time(timestep_embedding(t, self.d_time, self.timesteps))  # (B, width)
        h = self.inp(fourier_features(x))                                       # (B, width)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(F.silu(h))


class UNet(nn.Module):
    """A U-Net for points. What carries over from the image U-Net: an encoder that narrows (192 -> 96 -> 48),
    a decoder that widens back, skip connections joining matching widths, time in every block. What does not:
    there is no space to downsample (a point is one 2-vector), so "narrowing" is fewer features, not fewer
    pixels, and there are no convolutions: every layer sees the whole point."""

    def __init__(self, width=128, timesteps=100, d_time=32):
        super().__init__()
        self.timesteps, self.d_time = timesteps, d_time
        widths = [2 * width, width, width // 2]
        self.time = nn.Sequential(nn.Linear(d_time, widths[0]), nn.SiLU())
        self.inp = nn.Linear(2 + 4 * 6, widths[0])
        self.down = nn.ModuleList([Block(a, b, widths[0]) for a, b in zip(widths[:-1], widths[1:])])
        self.mid = Block(widths[-1], widths[-1], widths[0])
        self.up = nn.ModuleList([Block(b, a, widths[0]) for a, b in zip(widths[:-1], widths[1:])][::-1])
        self.out = nn.Linear(widths[0], 2)

    def forward(self, x, t):
        temb = self.time(timestep_embedding(t, self.d_time, self.timesteps))  # (B, 2w)
        h = self.inp(fourier_features(x))                                       # (B, 2w)
        skips = [h]
        for block in self.down:                                                 # 2w -> w -> w/2
            h = block(h, temb)
            skips.append(h)
        h = self.mid(h, temb)
        for block in self.up:                                                   # w/2 -> w -> 2w
            h = block(h + skips.pop(), temb)                                    # skip joins the same width
        return self.out(F.silu(h + skips.pop()))


def build_model(kind, cfg=None):
    cfg = cfg or Config()
    if kind == "mlp":
        return MLP(cfg.width, cfg.blocks, cfg.timesteps)
    if kind == "unet":
        return UNet(cfg.unet_width, cfg.timesteps)
    raise ValueError(f"unknown model {kind!r}")


# -----------------------------------------------------------------------------
# Training: DDPM Algorithm 1


class DivergedError(RuntimeError):
    pass


def diffusion_loss(model, x0, schedule, generator=None):
    """Algorithm 1: t ~ Uniform, eps ~ N(0, I), minimise || eps - eps_theta(x_t, t) ||^2."""
    t = torch.randint(0, len(schedule["betas"]), (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    return F.mse_loss(model(q_sample(x0, t, noise, schedule), t), noise)


def train(model, data, schedule, cfg, generator=None, log=print):
    """Returns the per-step losses (a tensor on the model's device). Stops with DivergedError on NaN/inf."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    lr_at = lambda i: min(1.0, (i + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * i / cfg.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    losses = torch.zeros(cfg.steps, device=data.device)       # kept on the device: no sync per step
    start = time.perf_counter()
    for i in range(cfg.steps):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=generator, device=data.device)
        loss = diffusion_loss(model, data[idx], schedule, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses[i] = loss.detach()
        if (i + 1) % cfg.log_every == 0 or i + 1 == cfg.steps:
            recent = losses[max(0, i + 1 - cfg.log_every): i + 1].mean().item()  # the only sync
            if not math.isfinite(recent):
                raise DivergedError(f"training diverged at step {i + 1} (loss {recent}); try a smaller --lr")
            elapsed = time.perf_counter() - start
            left = elapsed / (i + 1) * (cfg.steps - i - 1)
            log(f"step {i + 1:>6}/{cfg.steps}  loss {recent:.4f}  elapsed {elapsed:5.1f}s  left {left:5.1f}s")
    return losses


# -----------------------------------------------------------------------------
# Sampling: DDPM Algorithm 2 and DDIM


@torch.no_grad()
def sample(model, n, schedule, sampler="ddpm", steps=None, generator=None, eta=0.0, shape=(2,),
           clip=None, trajectory=None):
    """Draw n samples. model is any callable (x_t, t) -> predicted eps. DDIM clips its predicted x0 to
    [-clip, clip] if clip is given. trajectory, if a list, collects x after every step (on the CPU)."""
    device = schedule["betas"].device
    T = len(schedule["betas"])
    x = torch.randn((n,) + shape, generator=generator, device=device)       # x_T ~ N(0, I)
    if trajectory is not None:
        trajectory.append(x.cpu())
    if sampler == "ddpm":
        ts = list(range(T - 1, -1, -1))                                      # T-1, ..., 0
        eps_coef = schedule["betas"] / schedule["sqrt_one_minus_alpha_bars"]
        inv_sqrt_alphas = schedule["alphas"].rsqrt()
        sigmas = schedule["posterior_variance"].sqrt()                     # sigma_t^2 = beta~_t, 0 at t=0
    else:
        ts = torch.linspace(T - 1, 0, steps or T).round().long().tolist()  # "trailing": T-1 ... 0
        abar = schedule["alpha_bars"][ts]
        abar_prev = torch.cat([abar[1:], abar.new_ones(1)])               # the last step lands on abar = 1
        sigmas = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()  # DDIM eq. 16
    # t is a Python int: indexing a schedule tensor with it is a view, never a GPU -> CPU sync (.item())
    for i, t in enumerate(ts):
        eps = model(x, torch.full((n,), t, device=device))                # (n, ...) predicted noise
        z = torch.randn(x.shape, generator=generator, device=device)
        if sampler == "ddpm":
            # x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) + sigma_t z   (Alg. 2 line 4)
            x = inv_sqrt_alphas[t] * (x - eps_coef[t] * eps) + sigmas[t] * z
        else:
            # predict x0, then step to abar_prev along the predicted noise direction   (DDIM eq. 12)
            x0_hat = (x - (1 - abar[i]).sqrt() * eps) / abar[i].sqrt()
            if clip is not None:  # near t=T, 1/sqrt(abar) (2000 for cosine) magnifies any error in eps
                x0_hat = x0_hat.clamp(-clip, clip)
            direction = (1 - abar_prev[i] - sigmas[i] ** 2).sqrt() * eps
            x = abar_prev[i].sqrt() * x0_hat + direction + sigmas[i] * z
        if trajectory is not None:
            trajectory.append(x.cpu())
    return x


# -----------------------------------------------------------------------------
# Evaluation: how close are generated points to the spiral, and do they cover all of it?


def nearest_distance(a, b, chunk=2048):
    """For each row of a, the distance to the nearest row of b."""
    return torch.cat([torch.cdist(a[i:i + chunk], b).min(dim=1).values for i in range(0, len(a), chunk)])


def evaluate(points, generator=None):
    """Precision: distance from each point to the nearest of 20,000 fresh real points, relative to the data's
    RMS radius (median, 90th percentile, share beyond 10 %). Recall: median distance from fresh real points to
    the nearest point, over the same median between two fresh real sets: 1.0 = covered evenly."""
    points = points.double().cpu()
    ref = make_data(20_000, generator).double()
    rms = (ref - ref.mean(0)).pow(2).sum(1).mean().sqrt()
    d = nearest_distance(points, ref) / rms
    real_a, real_b = make_data(len(points), generator).double(), make_data(len(points), generator).double()
    recall = nearest_distance(real_a, points).median() / nearest_distance(real_a, real_b).median()
    return dict(median=d.median().item(), p90=d.quantile(0.9).item(),
                outliers=(d > 0.1).double().mean().item(), recall=recall.item())


# -----------------------------------------------------------------------------
# Plots


def save(fig, path):
    fig.set_layout_engine("constrained")  # room for titles, labels and a suptitle
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def scatter(ax, x, title, color="C0"):
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5, color=color)
    ax.set(title=title, xlim=(-2.6, 2.6), ylim=(-2.6, 2.6), aspect="equal", xlabel="x", ylabel="y")


def plot_all(out, data, schedule, losses, samples, traj, gif):
    x0 = data[:2000]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.4))
    g = torch.Generator().manual_seed(0)
    T = len(schedule["betas"])
    for ax, t in zip(axes, [0, T // 10, 3 * T // 10, T - 1]):
        t_ = torch.full((len(x0),), t)
        xt = q_sample(x0, t_, torch.randn(x0.shape, generator=g), schedule)
        scatter(ax, xt, f"x_t at t = {t + 1}: signal kept sqrt(abar) = {schedule['sqrt_alpha_bars'][t]:.3f}")
    fig.suptitle("Forward process: the spiral dissolves into N(0, I) noise")
    save(fig, os.path.join(out, "forward.png"))

    if len(losses):  # none after --load
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(losses, lw=0.5, alpha=0.4, label="per step")
        k = max(1, len(losses) // 50)
        ax.plot(np.arange(k - 1, len(losses)), np.convolve(losses, np.ones(k) / k, "valid"), label=f"mean of {k}")
        ax.set(yscale="log", xlabel="optimizer step", ylabel="MSE between true and predicted noise",
               title="Training loss (DDPM Algorithm 1)")
        ax.legend()
        save(fig, os.path.join(out, "loss.png"))

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    scatter(axes[0], data[: len(samples)], f"original spiral ({len(samples)} points)", "C1")
    scatter(axes[1], samples, f"generated from noise ({len(samples)} points)")
    save(fig, os.path.join(out, "samples.png"))

    snaps = [round(f * (len(traj) - 1)) for f in (0, 0.5, 0.75, 0.9, 0.95, 1)]  # the spiral forms late
    fig, axes = plt.subplots(1, len(snaps), figsize=(3.2 * len(snaps), 3.6))
    for ax, i in zip(axes, snaps):
        scatter(ax, traj[i], f"after {i} of {len(traj) - 1} steps")
    fig.suptitle("Reverse process: from noise x_T to samples x_0")
    save(fig, os.path.join(out, "reverse.png"))

    if gif:
        from matplotlib.animation import FuncAnimation, PillowWriter
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        dots = ax.scatter(traj[0][:, 0], traj[0][:, 1], s=1)
        ax.set(xlim=(-2.6, 2.6), ylim=(-2.6, 2.6), aspect="equal", xlabel="x", ylabel="y")
        frames = list(range(len(traj))) + [len(traj) - 1] * 15           # hold the last frame
        def update(i):
            dots.set_offsets(traj[i].numpy())
            ax.set_title(f"reverse process: step {i} of {len(traj) - 1}")
        FuncAnimation(fig, update, frames=frames).save(os.path.join(out, "reverse.gif"), writer=PillowWriter(fps=15))
        plt.close(fig)


# -----------------------------------------------------------------------------
# Command line


PROG = "diffusion_spiral.py"  # the name in messages (not from __file__: a notebook cell has none)


class UsageError(Exception):
    pass


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit status 2, instead of usage text
        raise UsageError(f"{message} (see --help)")


def parse_args(argv):
    c = Config()
    p = Parser(prog=PROG, description="DDPM on a 2-D spiral.")
    p.add_argument("--model", choices=["mlp", "unet"], default=c.model, help="noise-prediction network")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=c.device, help="where to run")
    p.add_argument("--steps", type=positive(int), default=c.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=positive(int), default=c.batch_size, help="points per step")
    p.add_argument("--lr", type=positive(float), default=c.lr, help="peak learning rate")
    p.add_argument("--timesteps", type=positive(int), default=c.timesteps, help="diffusion steps T")
    p.add_argument("--schedule", choices=["linear", "cosine"], default=c.schedule, help="beta schedule")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default=c.sampler, help="reverse process")
    p.add_argument("--sample-steps", type=positive(int), default=c.sample_steps, help="DDIM steps (<= T)")
    p.add_argument("--num-samples", type=positive(int), default=c.num_samples, help="points to generate")
    p.add_argument("--seed", type=int, default=c.seed, help="random seed (same seed, same samples on CPU)")
    p.add_argument("--out", default=c.out, help="output folder")
    p.add_argument("--load", default=c.load, help="checkpoint to sample from, skipping training")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the figures")
    p.add_argument("--gif", action="store_true", help="also animate the reverse process (reverse.gif)")
    cfg = Config(**vars(p.parse_args(argv)))
    if cfg.timesteps < 2:
        raise UsageError("--timesteps must be at least 2")
    return cfg


def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was asked for, but MPS is not available here; use --device cpu")
    return torch.device(name)


def load_checkpoint(path, cfg):
    if not os.path.isfile(path):
        raise UsageError(f"--load {path}: no such file; train first (without --load) to create one")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert ckpt["script"] == "diffusion_spiral"
    except Exception:
        raise UsageError(f"--load {path}: not a checkpoint of diffusion_spiral.py; pass a model.pt it wrote")
    saved = Config(**ckpt["config"])
    for key in ("model", "timesteps", "schedule", "width", "unet_width", "blocks", "noise",  # model and data
                "steps", "batch_size", "lr", "warmup"):                  # how it was trained (for the record)
        setattr(cfg, key, getattr(saved, key))
    return ckpt["model"]


def save_checkpoint(path, model, cfg, schedule):
    tmp = path + ".tmp"
    torch.save(dict(script="diffusion_spiral", config=asdict(cfg), model=model.state_dict(),
                    schedule={k: v.cpu() for k, v in schedule.items()}), tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken model.pt


def run(cfg):
    # ---- seeding: one generator per use, so --load samples exactly what the training run sampled ---------
    torch.manual_seed(cfg.seed)                                         # initial weights
    device = pick_device(cfg.device)
    data_gen = torch.Generator().manual_seed(cfg.seed)                 # the training set
    train_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # batches, t and noise in training
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)  # x_T and z in sampling
    eval_gen = torch.Generator().manual_seed(cfg.seed + 3)             # fresh real data for the metrics

    state = load_checkpoint(cfg.load, cfg) if cfg.load else None
    if cfg.sampler == "ddim" and cfg.sample_steps > cfg.timesteps:
        raise UsageError(f"--sample-steps {cfg.sample_steps} is more than --timesteps {cfg.timesteps}")
    try:
        os.makedirs(cfg.out, exist_ok=True)
        with open(os.path.join(cfg.out, ".write-test"), "w"):
            pass
        os.remove(os.path.join(cfg.out, ".write-test"))
    except OSError as e:
        raise UsageError(f"--out {cfg.out}: cannot write there ({e.strerror}); pick another folder")

    print(f"config: {asdict(cfg)}\ndevice: {device}")
    schedule = make_schedule(cfg.timesteps, cfg.schedule, device)
    data = make_data(cfg.num_train, data_gen, cfg.noise).to(device)
    model = build_model(cfg.model, cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {cfg.model}, {n_params:,} parameters; alpha_bar at t=T: {schedule['alpha_bars'][-1]:.2e}")

    losses, train_time = torch.zeros(0), 0.0
    if state is None:
        start = time.perf_counter()
        losses = train(model, data, schedule, cfg, train_gen).cpu()
        train_time = time.perf_counter() - start
        save_checkpoint(os.path.join(cfg.out, "model.pt"), model, cfg, schedule)
        print(f"trained {cfg.steps} steps in {train_time:.1f}s ({cfg.steps / train_time:.0f} steps/s)")
    else:
        model.load_state_dict(state)
        print(f"loaded {cfg.load}: a {cfg.model} for T={cfg.timesteps}, {cfg.schedule} schedule (the checkpoint's)")

    model.eval()
    start = time.perf_counter()
    traj = [] if cfg.plots else None
    samples = sample(model, cfg.num_samples, schedule, cfg.sampler, cfg.sample_steps, sample_gen,
                     eta=cfg.eta, clip=cfg.clip, trajectory=traj).cpu()
    sample_time = time.perf_counter() - start
    if not torch.isfinite(samples).all():
        raise DivergedError("sampling produced NaN/inf; the model is broken, retrain with a smaller --lr")

    quality, real = evaluate(samples, eval_gen), evaluate(make_data(cfg.num_samples, eval_gen, cfg.noise), eval_gen)
    print(f"sampled {cfg.num_samples} points with {cfg.sampler} in {sample_time:.2f}s")
    print("quality            generated   real data")
    for key, label in [("median", "median distance"), ("p90", "90th pct dist."), ("outliers", "outliers >10%"),
                       ("recall", "recall (1=even)")]:
        print(f"  {label:16} {quality[key]:9.4f}   {real[key]:9.4f}")

    np.save(os.path.join(cfg.out, "samples.npy"), samples.numpy())
    metrics = dict(quality=quality, real=real, train_seconds=train_time, sample_seconds=sample_time,
                   steps_per_second=cfg.steps / train_time if train_time else None, parameters=n_params,
                   device=str(device), sampler=cfg.sampler, model=cfg.model)
    with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if len(losses):
        np.savetxt(os.path.join(cfg.out, "loss.csv"), np.c_[np.arange(1, len(losses) + 1), losses.numpy()],
                   delimiter=",", header="step,loss", comments="", fmt=["%d", "%.6f"])
    if cfg.plots:
        plot_all(cfg.out, data[:2000].cpu(), {k: v.cpu() for k, v in schedule.items()}, losses.numpy(),
                 samples, traj, cfg.gif)
    print(f"outputs in {cfg.out}/")
    return metrics


def main(argv=None):
    if argv is None:  # in a notebook sys.argv holds the kernel's arguments, not ours
        argv = [] if "ipykernel" in sys.modules else sys.argv[1:]
    try:
        return run(parse_args(argv))
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except DivergedError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; files already saved are intact", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    main()
