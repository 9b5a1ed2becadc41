#!/usr/bin/env bash
# Regenerates every figure in img/ and prints the README's results tables from the same runs.
# Usage: bash make_img.sh (how long it took last, on which machine: README, "Results").
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

# each default run, then the same model with --objective flow, --reflow and --reflow --distill right beside it
# (the whole runs' times compared)
run spiral_mlp       diffusion_spiral.py
run spiral_mlp_flow  diffusion_spiral.py --objective flow
run spiral_mlp_reflow diffusion_spiral.py --objective flow --reflow
run spiral_mlp_distill diffusion_spiral.py --objective flow --reflow --distill --sample-steps 1
run spiral_mlp_distill_seed1 diffusion_spiral.py --objective flow --reflow --distill --sample-steps 1 --seed 1 --no-plots
# what the teacher's training buys a 1-call model: the flow MLP trained 4x longer, then the same reflow and distillation
run spiral_mlp_distill_8000 diffusion_spiral.py --objective flow --steps 8000 --reflow --distill --sample-steps 1 --no-plots
python bench/seed_recipe.py > "$out/seed_recipe.json"   # the seed's spiral recipe, timed right beside them
run spiral_mlp_ddim  diffusion_spiral.py --load "$out/spiral_mlp/model.pt" --sampler ddim --sample-steps 20
run spiral_unet      diffusion_spiral.py --model unet
run spiral_unet_flow diffusion_spiral.py --model unet --objective flow
run spiral_unet_reflow diffusion_spiral.py --model unet --objective flow --reflow
run spiral_unet_distill diffusion_spiral.py --model unet --objective flow --reflow --distill --sample-steps 1
run spiral_unet_ddim diffusion_spiral.py --load "$out/spiral_unet/model.pt" --sampler ddim --sample-steps 20 --no-plots
run sine_mlp         diffusion_sine.py
run sine_mlp_flow    diffusion_sine.py --objective flow
run sine_mlp_reflow  diffusion_sine.py --objective flow --reflow
run sine_mlp_distill diffusion_sine.py --objective flow --reflow --distill --sample-steps 1
run sine_mlp_ddim    diffusion_sine.py --load "$out/sine_mlp/model.pt" --sampler ddim --sample-steps 20 --no-plots
run sine_unet        diffusion_sine.py --model unet --device cpu
run sine_unet_flow   diffusion_sine.py --model unet --device cpu --objective flow
run sine_unet_reflow diffusion_sine.py --model unet --device cpu --objective flow --reflow
run sine_unet_distill diffusion_sine.py --model unet --device cpu --objective flow --reflow --distill --sample-steps 1
run sine_unet_ddim   diffusion_sine.py --load "$out/sine_unet/model.pt" --sampler ddim --sample-steps 20 --no-plots
# the animations, from the saved models (kept out of the timed runs above)
run spiral_gif       diffusion_spiral.py --load "$out/spiral_mlp/model.pt" --gif
run sine_gif         diffusion_sine.py --load "$out/sine_unet/model.pt" --gif

for f in forward loss samples reverse schedule field; do cp "$out/spiral_mlp/$f.png" "img/spiral_$f.png"; done
cp "$out/spiral_mlp_flow/field.png" img/spiral_field_flow.png
cp "$out/spiral_mlp_ddim/reverse.png" img/spiral_reverse_ddim.png
cp "$out/spiral_unet/samples.png" img/spiral_samples_unet.png
cp "$out/spiral_gif/reverse.gif" img/spiral_reverse.gif
for f in forward reverse; do cp "$out/sine_unet/$f.png" "img/sine_$f.png"; done
for m in mlp unet; do for f in samples loss; do cp "$out/sine_$m/$f.png" "img/sine_${f}_$m.png"; done; done
cp "$out/sine_gif/reverse.gif" img/sine_reverse.gif
cp "$out/spiral_mlp_flow/forward.png" img/spiral_forward_flow.png
cp "$out/spiral_mlp_distill/reflow.png" img/spiral_reflow.png
cp "$out/sine_unet_distill/reflow.png" img/sine_reflow.png

# ---- what "straight" means: 100 sampling paths of the eps model's DDIM, the flow model's Euler and the reflowed
# model's Euler (20 steps)
python - "$out" <<'PY'
import sys, torch, diffusion_spiral as ds
out, panels = sys.argv[1], []
for run, sampler, name in [("spiral_mlp", "ddim", "eps model, DDIM"), ("spiral_mlp_flow", "euler", "flow model, Euler"),
                           ("spiral_mlp_reflow", "euler", "reflowed, Euler")]:
    ckpt = torch.load(f"{out}/{run}/model.pt", weights_only=True)
    cfg = ds.Config(**ckpt["config"])
    model = ds.network(cfg, ckpt["schedule"])
    model.load_state_dict(ckpt["model"])
    traj = []
    ds.sample(model.eval(), 2000, ckpt["schedule"], sampler, 20, torch.Generator().manual_seed(2), clip=cfg.clip,
              trajectory=traj)
    ratio = ds.straightness(traj)
    print(f"paths, {name} 20 steps: mean length / mean distance from start to end = {ratio:.3f}")
    panels.append((torch.stack(traj)[:, :100], f"{name}, 20 steps\npaths {ratio:.2f}x the straight lines"))
ds.grid("img", "spiral_paths.png", "100 sampling paths from noise to data", [panels])
PY

# ---- few-step samplers from the saved models: quality against network calls (README and RESULTS.md); a run
# named {script}_{model}{objective}_{sampler}{K}[_eta1]
python - "$out" <<'PY'
import contextlib, importlib, io, json, os, sys
out = sys.argv[1]
calls = [1, 2, 4, 10, 20]
runs = {"": [(s, k, 0) for s in ["ddim", "dpm"] for k in calls + [50]],
        "_flow": [("euler", k, eta) for k in calls + [50] for eta in [0, 1]] + [("midpoint", 5, 0), ("midpoint", 10, 0)],
        "_reflow": [("euler", k, 0) for k in calls], "_distill": [("euler", k, 0) for k in calls]}
for script in ["spiral", "sine"]:
    mod = importlib.import_module(f"diffusion_{script}")
    for model in ["mlp", "unet"]:
        for objective, samplers in runs.items():
            for sampler, k, eta in samplers:
                d = os.path.join(out, f"{script}_{model}{objective}_{sampler}{k}" + ("_eta1" if eta else ""))
                with contextlib.redirect_stdout(io.StringIO()):
                    mod.main(["--load", os.path.join(out, f"{script}_{model}{objective}", "model.pt"), "--sampler",
                              sampler, "--sample-steps", str(k), "--eta", str(eta), "--no-plots", "--out", d])
PY

# ---- asking for a frequency: each sine model at F = 1.5, 2.5, 3.5, 4.5, guidance w = 0, 1, 2, 3, 5 (512 waves each)
python - "$out" <<'PY'
import contextlib, importlib, io, os, sys
out, sine = sys.argv[1], importlib.import_module("diffusion_sine")
for model in ["mlp", "unet"]:
    for w in [0, 1, 2, 3, 5]:
        for f in [1.5, 2.5, 3.5, 4.5]:
            with contextlib.redirect_stdout(io.StringIO()):
                sine.main(["--load", os.path.join(out, f"sine_{model}", "model.pt"), "--frequency", str(f),
                           "--guidance", str(w), "--no-plots", "--out", os.path.join(out, f"sine_{model}_f{f}_w{w}")])
PY
# the flow models at the default w (their default sampler, Euler 20 steps: 40 network calls)
python - "$out" <<'PY'
import contextlib, importlib, io, os, sys
out, sine = sys.argv[1], importlib.import_module("diffusion_sine")
for model in ["mlp", "unet"]:
    for f in [1.5, 2.5, 3.5, 4.5]:
        with contextlib.redirect_stdout(io.StringIO()):
            sine.main(["--load", os.path.join(out, f"sine_{model}_flow", "model.pt"), "--frequency", str(f),
                       "--no-plots", "--out", os.path.join(out, f"sine_{model}_flow_f{f}_w2")])
PY
python diffusion_sine.py --load "$out/sine_unet/model.pt" --frequency 2.5 --out "$out/sine_guidance"  # the figure
cp "$out/sine_guidance/guidance.png" img/sine_guidance.png

# ---- guidance on a distilled sine model, at one call: w = 0, 1 and 2 (the script refuses w beyond 1; measured here
# with its own functions), 512 waves asked for at F = 2.5
python - "$out" <<'PY'
import sys, torch, diffusion_sine as sine
out = sys.argv[1]
for model_kind in ["mlp", "unet"]:
    ckpt = torch.load(f"{out}/sine_{model_kind}_distill/model.pt", weights_only=True)
    cfg = sine.Config(**ckpt["config"])
    model = sine.network(cfg, ckpt["schedule"])
    model.load_state_dict(ckpt["model"])
    for w in [0, 1, 2]:
        net, _ = sine.conditional_predictor(model.eval(), 512, 2.5, w)
        x = sine.sample(net, 512, ckpt["schedule"], "euler", 1, torch.Generator().manual_seed(2))
        q = sine.evaluate(x, torch.Generator().manual_seed(3), 2.5)
        print(f"distilled sine {model_kind}, 1 call, F = 2.5, w = {w}: R^2>=0.99 {q['r2_099']:.3f}, median R^2 "
              f"{q['r2_median']:.4f}, median |f - F| {q['freq_err_median']:.4f}, amplitude W1 {q['amp_w1']:.3f}")
PY

# ---- the spiral's likelihood (RESULTS.md): the ODE's grid against K, an independent check of the printed KL (another
# 2,000 points, 4x the steps), and DDPM's bound against T at the same training budget
run spiral_mlp_T200 diffusion_spiral.py --timesteps 200 --no-plots
run spiral_mlp_T500 diffusion_spiral.py --timesteps 500 --no-plots
python - "$out" <<'PY'
import json, sys, time, torch, diffusion_spiral as ds
out = sys.argv[1]
points = ds.make_data(2000, torch.Generator().manual_seed(1234))
def load(run):
    ckpt = torch.load(f"{out}/{run}/model.pt", weights_only=True)
    cfg = ds.Config(**ckpt["config"])
    model = ds.network(cfg, ckpt["schedule"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt["schedule"]
log_p_data = ds.data_log_density(points)
print(f"\ndata entropy on 2,000 fresh points: {-log_p_data.mean():.4f} nats")
for run in ["spiral_mlp_flow", "spiral_unet_flow", "spiral_mlp_reflow"]:
    model, _ = load(run)
    for k in [25, 50, 100, 200, 400]:
        start = time.perf_counter()
        gap = log_p_data - ds.log_likelihood(model, points, steps=k)
        print(f"{run}: ODE with K = {k:3d} midpoint steps: KL {gap.mean():.4f} +- {gap.std() / 2000 ** 0.5:.4f} "
              f"({time.perf_counter() - start:.1f} s)")
    printed = json.load(open(f"{out}/{run}/metrics.json"))["likelihood"]
    print(f"{run}: the run printed KL {printed['kl']:.4f} +- {printed['kl_stderr']:.4f} ({printed['points']} points, K = 100)")
for run in ["spiral_mlp", "spiral_mlp_T200", "spiral_mlp_T500"]:
    model, schedule = load(run)
    start = time.perf_counter()
    terms = ds.nll_bound(model, points, schedule, draws=4, generator=torch.Generator().manual_seed(0), terms=True)
    gap = terms.sum(0) - (-log_p_data)
    printed = json.load(open(f"{out}/{run}/metrics.json"))["likelihood"]
    print(f"{run} (T = {len(schedule['betas'])}): bound on KL {gap.mean():.3f} +- {gap.std() / 2000 ** 0.5:.3f}, "
          f"decoder L_0 {terms[0].mean():.2f}, L_1..L_T-1 {terms[1:-1].sum(0).mean():.2f}, prior {terms[-1].mean():.1e} "
          f"({time.perf_counter() - start:.1f} s, 4 draws); the run printed {printed['kl']:.3f} +- {printed['kl_stderr']:.3f}")
PY

# ---- the README's results table, from the runs above ----------------------------------------------------
python - "$out" <<'PY'
import json, os, platform, sys, torch
out = sys.argv[1]
seed = json.load(open(os.path.join(out, "seed_recipe.json")))
ours = float(open(os.path.join(out, "spiral_mlp", "wall_seconds")).read())
print(f"\nseed spiral recipe: {seed['seconds_per_epoch']:.3f} s/epoch ({seed['epochs_timed']} timed), whole recipe "
      f"about {seed['whole_recipe_seconds']:.0f} s; default spiral run {ours:.1f} s: {seed['whole_recipe_seconds'] / ours:.0f}x")
print(f"\nmeasured on: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
cols = {"spiral": [("median", "median dist"), ("p90", "p90 dist"), ("outliers", "outliers"), ("nn_ratio", "NN ratio")],
        "sine": [("r2_median", "median R^2"), ("r2_099", "R^2>=0.99"), ("r2_095", "R^2>=0.95"),
                 ("freq_w1", "freq W1"), ("amp_w1", "amp W1")]}
for script, keys in cols.items():
    kl = script == "spiral"                                                 # the spiral's likelihood column
    print(f"\n| {script} run | parameters | train steps/s | whole run (s) | " + " | ".join(k[1] for k in keys)
          + " | KL (nats) |" * kl)
    print("|---" * (4 + len(keys) + kl) + "|")
    for model in ["mlp", "unet"]:
        for suffix, label in [("", "ddpm, trained"), ("_ddim", "ddim 20, --load"), ("_flow", "flow, euler 20, trained"),
                              ("_reflow", "flow + reflow, euler 20, trained"),
                              ("_distill", "flow + reflow + distill, euler 1, trained")]:
            d = os.path.join(out, f"{script}_{model}{suffix}")
            m = json.load(open(os.path.join(d, "metrics.json")))
            wall = open(os.path.join(d, "wall_seconds")).read().strip()
            sps = f"{m['steps_per_second']:.0f}" if m["steps_per_second"] else "-"
            row = [f"{model}, {label}", f"{m['parameters']:,}", sps, wall] + [f"{m['quality'][k]:.4f}" for k, _ in keys]
            if kl:
                lik = m["likelihood"]
                row.append("none: no ODE" if lik is None else
                           f"{lik['kl']:.3f} +- {lik['kl_stderr']:.3f} ({'exact' if lik['method'] == 'ode' else 'bound'})")
            print("| " + " | ".join(row) + " |")
        if script == "sine":  # the same model with its label hidden: --frequency F --guidance 0 ignores F
            q = json.load(open(os.path.join(out, f"sine_{model}_f2.5_w0", "metrics.json")))["quality"]
            print(f"| {model}, no-label path, --load | | - | | " + " | ".join(f"{q[k]:.4f}" for k, _ in keys) + " |")
    m = json.load(open(os.path.join(out, f"{script}_mlp", "metrics.json")))
    print("| real data | | | | " + " | ".join(f"{m['real'][k]:.4f}" for k, _ in keys) + " | 0 |" * kl + " |" * (not kl))
few = {"spiral": [("p90", "p90 dist"), ("outliers", "outliers"), ("nn_ratio", "NN ratio")],
       "sine": [("r2_099", "R^2>=0.99"), ("freq_w1", "freq W1"), ("amp_w1", "amp W1")]}
samplers = [("eps", "ddpm", None), ("eps", "ddim", 10), ("eps", "ddim", 20), ("eps", "ddim", 50), ("eps", "dpm", 10),
            ("eps", "dpm", 20), ("flow", "euler", 10), ("flow", "euler", 20), ("flow", "euler", 50),
            ("flow", "euler", "20_eta1"), ("flow", "euler", "50_eta1"), ("flow", "midpoint", 5), ("flow", "midpoint", 10)]
for script, keys in few.items():
    print(f"\n| {script}: objective, sampler, steps (network calls) | "
          + " | ".join(f"{m} {k[1]}" for m in ["mlp", "unet"] for k in keys) + " |")
    print("|---" * 7 + "|")
    for objective, sampler, k in samplers:
        row, suffix = [], "_flow" if objective == "flow" else ""
        for model in ["mlp", "unet"]:
            d = os.path.join(out, f"{script}_{model}{suffix}" + (f"_{sampler}{k}" if k else ""))
            q = json.load(open(os.path.join(d, "metrics.json")))["quality"]
            row += [f"{q[key]:.4f}" for key, _ in keys]
        steps = int(str(k).split("_")[0]) if k else {"spiral": 100, "sine": 200}[script]
        calls = 2 * steps if sampler == "midpoint" else steps
        eta = ", eta 1" if "eta1" in str(k) else ""
        print(f"| {objective}, {sampler}{eta}, {steps} ({calls}) | " + " | ".join(row) + " |")
    for model in ["mlp", "unet"]:
        ms = [json.load(open(os.path.join(out, f"{script}_{model}{x}", "metrics.json"))) for x in ["", "_flow", "_reflow", "_distill"]]
        w = [float(open(os.path.join(out, f"{script}_{model}{x}", "wall_seconds")).read()) for x in ["", "_flow", "_reflow", "_distill"]]
        print(f"{script} {model}: distillation {ms[3]['distill_seconds']:.1f} s more; whole --reflow --distill run "
              f"{w[3]:.1f} s, {w[3] / w[2]:.2f}x the --reflow run")
        print(f"{script} {model}: training eps {ms[0]['train_seconds']:.1f} s, flow {ms[1]['train_seconds']:.1f} s, "
              f"reflow {ms[2]['reflow_seconds']:.1f} s more; whole default run eps {w[0]:.1f} s, flow {w[1]:.1f} s "
              f"({w[1] / w[0]:.2f}x), flow --reflow {w[2]:.1f} s ({w[2] / w[1]:.2f}x the flow run); straightness of "
              f"Euler 20: flow {ms[1]['straightness']:.3f}, reflowed {ms[2]['straightness']:.3f}")
# the README's table: quality against network calls 1, 2, 4, 10, 20 (eps: the better of DDIM and DPM-Solver++ at each)
cell = {"spiral": lambda q: (f"{100 * q['p90']:.2f} / {100 * q['outliers']:.1f}", -q["outliers"]),
        "sine": lambda q: (f"{100 * q['r2_099']:.1f} / {100 * q['amp_w1']:.1f}", q["r2_099"] - q["amp_w1"])}
for script in ["spiral", "sine"]:
    what = "p90 dist / outliers, %" if script == "spiral" else "R^2>=0.99 / amp W1, %"
    print(f"\n| {script}: model, sampler ({what}) | 1 call | 2 | 4 | 10 | 20 |")
    print("|---" * 6 + "|")
    for model in ["mlp", "unet"]:
        for label, pick in [("eps, best of ddim and dpm", [("", "ddim", ""), ("", "dpm", "")]),
                            ("flow, euler", [("_flow", "euler", "")]), ("flow, euler, eta 1", [("_flow", "euler", "_eta1")]),
                            ("flow + reflow, euler", [("_reflow", "euler", "")]),
                            ("flow + reflow + distill, euler", [("_distill", "euler", "")])]:
            row = []
            for k in [1, 2, 4, 10, 20]:
                scored = []
                for suffix, sampler, eta in pick:
                    q = json.load(open(os.path.join(out, f"{script}_{model}{suffix}_{sampler}{k}{eta}", "metrics.json")))["quality"]
                    text, score = cell[script](q)
                    scored.append((score, text + (f" ({sampler})" if len(pick) > 1 else "")))
                row.append(max(scored)[1])
            print(f"| {model}, {label} | " + " | ".join(row) + " |")
print("\n| sine model, guidance w | median abs(f - F) | p90 abs(f - F) | R^2>=0.99 | R^2>=0.95 | mean amplitude | phase bunching (max) |")
print("|---" * 7 + "|")
for model in ["mlp", "unet"]:
    for w in [0, 1, 2, 3, 5]:
        qs = [json.load(open(os.path.join(out, f"sine_{model}_f{f}_w{w}", "metrics.json")))["quality"]
              for f in [1.5, 2.5, 3.5, 4.5]]
        mean = lambda key: sum(q[key] for q in qs) / len(qs)
        print(f"| {model}, w = {w} | {mean('freq_err_median'):.4f} | {mean('freq_err_p90'):.4f} | {mean('r2_099'):.4f} | "
              f"{mean('r2_095'):.4f} | {mean('amp_ratio'):.4f} | {max(q['phase_bunching'] for q in qs):.3f} |")
for model in ["mlp", "unet"]:
    for objective in ["", "_flow"]:
        print(f"\n{model}{objective} at the default w, per F (median, p90, R^2>=0.99, amplitude, bunching):")
        for f in [1.5, 2.5, 3.5, 4.5]:
            q = json.load(open(os.path.join(out, f"sine_{model}{objective}_f{f}_w2", "metrics.json")))["quality"]
            print(f"  F={f}: {q['freq_err_median']:.4f} {q['freq_err_p90']:.4f} {q['r2_099']:.4f} {q['amp_ratio']:.4f} {q['phase_bunching']:.3f}")
print("\nspiral MLP --reflow --distill, 1 call: seed 0, seed 1, and a teacher of 8,000 steps (p90, outliers, NN ratio):")
for run in ["spiral_mlp_distill", "spiral_mlp_distill_seed1", "spiral_mlp_distill_8000"]:
    q = json.load(open(os.path.join(out, run, "metrics.json")))["quality"]
    print(f"  {run}: {100 * q['p90']:.2f} %, {100 * q['outliers']:.2f} %, {q['nn_ratio']:.3f}")
PY

# ---- the loss of the exact predictor E[eps | x_t] at the defaults (the floor drawn in loss.png: LOSS_FLOOR)
python bench/loss_floor.py
