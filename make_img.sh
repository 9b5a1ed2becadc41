#!/usr/bin/env bash
# Regenerates every figure in img/ and prints the README's results table from the same runs.
# About 6 minutes on a 2-core CPU. Usage: bash make_img.sh
set -euo pipefail
cd "$(dirname "$0")"
export MPLBACKEND=Agg
out=outputs/readme
mkdir -p img "$out"

run() {  # run NAME ARGS...: one whole process, timed by wall clock, as a user would type it
    local name=$1; shift
    local start=$(date +%s.%N)
    python "$@" --out "$out/$name"
    python -c "print(round($(date +%s.%N) - $start, 1))" > "$out/$name/wall_seconds"
}

run spiral_mlp       diffusion_spiral.py
run spiral_mlp_ddim  diffusion_spiral.py --load "$out/spiral_mlp/model.pt" --sampler ddim --sample-steps 20 --no-plots
run spiral_unet      diffusion_spiral.py --model unet
run spiral_unet_ddim diffusion_spiral.py --load "$out/spiral_unet/model.pt" --sampler ddim --sample-steps 20 --no-plots
run sine_mlp         diffusion_sine.py
run sine_mlp_ddim    diffusion_sine.py --load "$out/sine_mlp/model.pt" --sampler ddim --sample-steps 20 --no-plots
run sine_unet        diffusion_sine.py --model unet --device cpu
run sine_unet_ddim   diffusion_sine.py --load "$out/sine_unet/model.pt" --sampler ddim --sample-steps 20 --no-plots
# the animations, from the saved models (kept out of the timed runs above)
run spiral_gif       diffusion_spiral.py --load "$out/spiral_mlp/model.pt" --gif
run sine_gif         diffusion_sine.py --load "$out/sine_unet/model.pt" --gif

for f in forward loss samples reverse; do cp "$out/spiral_mlp/$f.png" "img/spiral_$f.png"; done
cp "$out/spiral_unet/samples.png" img/spiral_samples_unet.png
cp "$out/spiral_gif/reverse.gif" img/spiral_reverse.gif
for f in forward reverse; do cp "$out/sine_unet/$f.png" "img/sine_$f.png"; done
for m in mlp unet; do for f in samples loss; do cp "$out/sine_$m/$f.png" "img/sine_${f}_$m.png"; done; done
cp "$out/sine_gif/reverse.gif" img/sine_reverse.gif

# ---- the README's results table, from the runs above ----------------------------------------------------
python - "$out" <<'PY'
import json, os, platform, sys, torch
out = sys.argv[1]
print(f"\nmeasured on: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
cols = {"spiral": [("median", "median dist"), ("p90", "p90 dist"), ("outliers", "outliers"), ("recall", "recall")],
        "sine": [("r2_median", "median R^2"), ("r2_099", "R^2>=0.99"), ("r2_095", "R^2>=0.95"),
                 ("freq_w1", "freq W1"), ("amp_w1", "amp W1")]}
for script, keys in cols.items():
    print(f"\n| {script} run | parameters | train steps/s | whole run (s) | " + " | ".join(k[1] for k in keys) + " |")
    print("|---" * (4 + len(keys)) + "|")
    for model in ["mlp", "unet"]:
        for suffix, label in [("", "ddpm, trained"), ("_ddim", "ddim 20, --load")]:
            d = os.path.join(out, f"{script}_{model}{suffix}")
            m = json.load(open(os.path.join(d, "metrics.json")))
            wall = open(os.path.join(d, "wall_seconds")).read().strip()
            sps = f"{m['steps_per_second']:.0f}" if m["steps_per_second"] else "-"
            row = [f"{model}, {label}", f"{m['parameters']:,}", sps, wall]
            print("| " + " | ".join(row + [f"{m['quality'][k]:.4f}" for k, _ in keys]) + " |")
    m = json.load(open(os.path.join(out, f"{script}_mlp", "metrics.json")))
    print("| real data | | | | " + " | ".join(f"{m['real'][k]:.4f}" for k, _ in keys) + " |")
PY
