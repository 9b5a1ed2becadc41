#!/usr/bin/env bash
# Runs every experiment of EXERCISES.md, then writes exercises/answers.json and renders EXERCISES.md from
# exercises/template.md with the numbers just measured. Usage, from anywhere: bash exercises/run.sh
# (about 10 to 15 minutes on a 2-core CPU; PYTHON=path/to/python to pick the interpreter).
# Each run's files go to outputs/exercises/NAME (git ignores outputs/): metrics.json, the script's own output
# in log.txt, the command as a student types it in cmd.txt, and its wall-clock time in wall_seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg
PY=${PYTHON:-python}
out=outputs/exercises
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out"
mkdir -p "$out" exercises/img
started=$(date +%s.%N)
# every run uses one snapshot of the two scripts, taken now: editing them meanwhile changes no number here
snap=$tmp/scripts
mkdir -p "$snap"
cp diffusion_spiral.py diffusion_sine.py "$snap/"
"$PY" -m py_compile "$snap/diffusion_spiral.py" "$snap/diffusion_sine.py"

run() {  # run NAME SCRIPT ARGS...: one whole process, as a student types it, timed by the wall clock
    local name=$1 script=$2; shift 2
    launch "$name" "$script" "$snap/$script" "$@"
}

edit() {  # edit SCRIPT OLD NEW: a copy of SCRIPT in a temporary folder, its one line matching OLD (a sed regex)
    local script=$1 old=$2 new=$3 found dir  # changed as s|OLD|NEW|; a renamed or moved line stops the run
    found=$(grep -c -- "$old" "$snap/$script" || true)
    if [ "$found" != 1 ]; then
        echo "exercises/run.sh: '$old' matches $found lines of $script, not 1: the script changed; update the" \
             "edit in exercises/run.sh and in exercises/template.md" >&2
        exit 1
    fi
    dir=$(mktemp -d "$tmp/edit.XXXXXX")
    sed "s|$old|$new|" "$snap/$script" > "$dir/$script"
    if [ "$(diff "$snap/$script" "$dir/$script" | grep -c '^>')" != 1 ]; then
        echo "exercises/run.sh: the edit '$old' -> '$new' did not change exactly one line of $script" >&2
        exit 1
    fi
    edited=$dir/$script
}

run_edited() {  # run_edited NAME SCRIPT ARGS...: the last edit()'s copy of SCRIPT; cmd.txt names SCRIPT itself
    local name=$1 script=$2; shift 2
    launch "$name" "$script" "$edited" "$@"
}

launch() {  # launch NAME SHOWN PATH ARGS...
    local name=$1 shown=$2 path=$3; shift 3
    local dir=$out/$name start
    mkdir -p "$dir"
    echo "python $shown${*:+ $*} --out $dir" > "$dir/cmd.txt"
    printf '%-16s %s ... ' "$name" "$(cat "$dir/cmd.txt")"
    start=$(date +%s.%N)
    if ! "$PY" "$path" "$@" --out "$dir" > "$dir/log.txt" 2>&1 || [ ! -f "$dir/metrics.json" ]; then
        echo "FAILED (no metrics.json; see $dir/log.txt)"; tail -n 20 "$dir/log.txt" >&2
        exit 1
    fi
    "$PY" -c "print(round($(date +%s.%N) - $start, 2))" > "$dir/wall_seconds"
    echo "$(cat "$dir/wall_seconds") s"
}

s=diffusion_spiral.py
base=$out/spiral/model.pt

# 1. the schedule: cosine (the default), linear scaled for T, linear unscaled (a one-line edit) at T = 100 and 10,
# and the sine unscaled
run spiral               $s --no-plots
run linear               $s --schedule linear --no-plots
edit $s 'scale = 1000 / timesteps' 'scale = 1'
run_edited unscaled      $s --schedule linear --no-plots
run_edited unscaled_T10  $s --schedule linear --timesteps 10
cp "$out/unscaled_T10/samples.png" exercises/img/unscaled_T10.png
edit diffusion_sine.py 'scale = 1000 / timesteps' 'scale = 1'
run_edited sine_unscaled diffusion_sine.py --schedule linear --no-plots

# 2. T, the number of noising steps (DDPM samples with T network calls)
run T10                  $s --timesteps 10 --no-plots
run T1000                $s --timesteps 1000 --no-plots

# 3. training steps: how few still draw a spiral (the figure from the saved model: the same samples)
for n in 100 300 500 700 1000; do
    run steps$n          $s --steps $n --no-plots
done
run steps1000_figure     $s --load $out/steps1000/model.pt
cp "$out/steps1000_figure/samples.png" exercises/img/steps1000.png

# 4. the Fourier features off (a one-line edit)
edit $s '^FREQS = 6 ' 'FREQS = 0 '
run_edited fourier0      $s
cp "$out/fourier0/samples.png" exercises/img/fourier0.png

# 5. the network's width
for w in 8 32 256; do
    run width$w          $s --width $w --no-plots
done

# 6. DDPM against DDIM at 10 and 100 steps (the default model, loaded)
run ddim10               $s --load $base --sampler ddim --sample-steps 10 --no-plots
run ddim100              $s --load $base --sampler ddim --sample-steps 100 --no-plots

# 7. eta: DDIM's fresh noise
run ddim20               $s --load $base --sampler ddim --sample-steps 20 --no-plots
run ddim20_eta05         $s --load $base --sampler ddim --sample-steps 20 --eta 0.5 --no-plots
run ddim20_eta1          $s --load $base --sampler ddim --sample-steps 20 --eta 1 --no-plots
run ddim100_eta1         $s --load $base --sampler ddim --sample-steps 100 --eta 1 --no-plots
run ddim100_eta1_noclip $s --load $base --sampler ddim --sample-steps 100 --eta 1 --clip 1e6 --no-plots

# 8. flow matching against eps at equal network calls
run flow                 $s --objective flow --no-plots
run flow10               $s --load $out/flow/model.pt --sample-steps 10 --no-plots
run dpm10                $s --load $base --sampler dpm --sample-steps 10 --no-plots

# 9. one network call: eps, flow, reflowed flow
run ddim1                $s --load $base --sampler ddim --sample-steps 1 --no-plots
run flow1                $s --load $out/flow/model.pt --sample-steps 1 --no-plots
run reflow1              $s --load $out/flow/model.pt --reflow --sample-steps 1
cp "$out/reflow1/reflow.png" exercises/img/reflow.png

# 10. classifier-free guidance on the sine (the default conditional MLP, loaded)
run sine                 diffusion_sine.py --no-plots
for w in 0 1 2 5; do
    run sine_w$w         diffusion_sine.py --load $out/sine/model.pt --frequency 2.5 --guidance $w --no-plots
done

# 11. the likelihood: every spiral run above reports KL(data || model); nothing more to run

"$PY" -c "print(round($(date +%s.%N) - $started, 1))" > "$out/total_seconds"
"$PY" exercises/render.py --collect
