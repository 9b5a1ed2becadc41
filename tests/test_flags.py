"""Every accepted value runs or is refused in one line: each flag of both scripts at tiny and odd values (sizes 1,
2, 3, 7, 13; floats near 0), alone and with --model unet and --objective flow. A case passes if main() returns, or
exits with status 2 and one line on stderr; a traceback, a hang or a NaN sample fails it. Each case is a tiny run
(a few steps, a few samples), all of a script's cases in one test to keep the suite quick."""
import numpy as np
import pytest

from helpers import run_main

SMALL = ["--steps", "3", "--num-train", "64", "--batch-size", "8", "--num-samples", "8", "--log-every", "2",
         "--no-plots"]
FLOW = ["--objective", "flow"]
REFLOW = [*FLOW, "--reflow", "--reflow-pairs", "8", "--reflow-steps", "2"]

BOTH = [
    ["--steps", "1"], ["--batch-size", "1"], ["--batch-size", "13"], ["--num-train", "1"], ["--num-samples", "1"],
    ["--lr", "1e-9"], ["--warmup", "13"], ["--log-every", "1"], ["--seed", "18446744073709551615"],
    ["--timesteps", "2"], ["--timesteps", "3", "--schedule", "linear"], ["--timesteps", "7", "--sampler", "ddim",
    "--sample-steps", "7"], ["--timesteps", "2", "--sampler", "dpm", "--sample-steps", "2"],
    ["--sampler", "ddim", "--sample-steps", "1"], ["--sampler", "dpm", "--sample-steps", "3"],
    ["--sampler", "ddim", "--eta", "1e-6"], ["--sampler", "ddim", "--clip", "0.01"], ["--width", "1"],
    ["--blocks", "13"], [*FLOW, "--sample-steps", "1", "--eta", "1"], [*FLOW, "--sampler", "midpoint",
    "--sample-steps", "1"], [*REFLOW, "--reflow-pairs", "1", "--reflow-steps", "1", "--distill", "--distill-steps",
    "1", "--sample-steps", "1"], ["--model", "unet", "--timesteps", "2"], ["--model", "unet", *REFLOW, "--distill",
    "--distill-steps", "1"],
    ["--num-samples", "1", "--plots", "--gif", "--sampler", "ddim", "--sample-steps", "2"],   # the figures, at tiny sizes
    [*FLOW, "--num-samples", "2", "--plots", "--sample-steps", "1"],
    ["--width", "10000000000000"], ["--steps", "10000000000000"], ["--timesteps", "99999999999999999999"],
    ["--sampler", "ddim", "--clip", "1e-300"], [*REFLOW, "--reflow-steps", "10000000000000"],     # beyond memory
    [*FLOW, "--sample-steps", "10000000000000"], ["--timesteps", "99999"],
    ["--sampler", "ddim", "--eta", "1", "--sample-steps", "3"],      # 1 - abar - sigma^2 rounds below 0 in float32
    ["--schedule", "linear", "--timesteps", "13", "--sampler", "ddim", "--eta", "1", "--sample-steps", "3"],
]
CASES = {
    "diffusion_spiral": BOTH + [
        ["--noise", "0"], ["--noise", "1e-6"], ["--noise", "1e-3"], [*FLOW, "--noise", "1e-6"], ["--noise", "1e20"],
        ["--model", "unet", "--unet-width", "2"], ["--model", "unet", "--unet-width", "7", *FLOW],
    ],
    "diffusion_sine": BOTH + [
        *(["--model", "unet", "--channels", c] for c in ["1", "3", "7", "12"]),
        ["--model", "unet", "--channels", "3", *FLOW], ["--label-drop", "0"], ["--label-drop", "1"],
        ["--label-drop", "1", "--frequency", "2.5"], ["--frequency", "1", "--guidance", "0"],
        ["--label-drop", "0", "--frequency", "2.5"], ["--label-drop", "0", "--frequency", "2.5", "--guidance", "1"],
        ["--frequency", "4.999", "--guidance", "13"], ["--no-condition", *FLOW], ["--no-condition", *REFLOW],
        [*REFLOW, "--distill", "--distill-steps", "1", "--frequency", "2.5", "--guidance", "1"],
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_flag_at_tiny_and_odd_values_runs_or_is_refused_in_one_line(name, tmp_path):
    from helpers import import_script
    script = import_script(name)
    failed = []
    for i, case in enumerate(CASES[name]):
        args = [a for a in SMALL if not (a == "--no-plots" and "--plots" in case)] + [a for a in case if a != "--plots"]
        run = run_main(script, *args, "--out", tmp_path / str(i))
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        if run.code == 0:
            samples = np.load(tmp_path / str(i) / "samples.npy")
            if not np.isfinite(samples).all():
                failed.append(f"{case}: NaN samples")
        elif run.code != 2 or len(lines) != 1 or "Traceback" in run.stderr:
            failed.append(f"{case}: exit {run.code}, stderr {run.stderr[-300:]!r}")
    assert not failed, "\n".join(failed)
