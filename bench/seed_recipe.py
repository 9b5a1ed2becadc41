"""Time the seed project's spiral recipe on this machine, for the README's comparison (run by make_img.sh,
right beside the default spiral run, so both see the same machine state).

The recipe, from the seed's source: 10,000 spiral points (radius = angle = 4 pi sqrt(u), not normalised),
T = 100 linear betas 1e-4..0.1, an MLP 3 -> 128 -> 256 -> 320 -> 2 with ReLU whose third input is t / 1000,
Adam lr 5e-4, batch 128, 1000 epochs (79,000 steps), then 100 DDPM steps on 2,000 points. Training all of
it takes minutes, so this times EPOCHS epochs after one warm-up epoch and extrapolates; sampling is timed whole.
Usage: python bench/seed_recipe.py [EPOCHS]    prints one JSON line
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
torch.manual_seed(0)
u = torch.rand(10_000)
angle = 4 * math.pi * u.sqrt()
data = angle[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)             # (10000, 2), radius up to 4 pi
betas = torch.linspace(1e-4, 0.1, 100)
alphas = 1 - betas
abar = torch.cumprod(alphas, 0)
model = nn.Sequential(nn.Linear(3, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 320),
                      nn.ReLU(), nn.Linear(320, 2))
opt = torch.optim.Adam(model.parameters(), lr=5e-4)
net = lambda x, t: model(torch.cat([x, t[:, None].float() / 1000], dim=1))


def epoch():
    for idx in torch.randperm(len(data)).split(128):
        x0 = data[idx]
        t = torch.randint(0, 100, (len(idx),))
        noise = torch.randn_like(x0)
        xt = abar[t].sqrt()[:, None] * x0 + (1 - abar[t]).sqrt()[:, None] * noise
        loss = ((net(xt, t) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


epoch()                                                               # warm-up, not timed
start = time.perf_counter()
for _ in range(EPOCHS):
    epoch()
per_epoch = (time.perf_counter() - start) / EPOCHS
start = time.perf_counter()
with torch.no_grad():
    x = torch.randn(2000, 2)
    for t in range(99, -1, -1):
        eps = net(x, torch.full((2000,), t))
        x = (x - betas[t] / (1 - abar[t]).sqrt() * eps) / alphas[t].sqrt()
        if t > 0:
            x = x + betas[t].sqrt() * torch.randn_like(x)
sampling = time.perf_counter() - start
print(json.dumps(dict(epochs_timed=EPOCHS, seconds_per_epoch=per_epoch, sampling_seconds=sampling,
                      whole_recipe_seconds=1000 * per_epoch + sampling)))
