"""The README stays true to the code: its table of where each formula lives points at those lines, its
flag table lists every flag the scripts accept, and its results tables give the parameter counts a run prints."""
import re

import pytest

from helpers import ROOT, run_main

README = (ROOT / "README.md").read_text()

# row of the README's formula table -> text that the line it names must contain (one per line number)
FORMULA_LINES = {
    "schedules": ["def make_schedule"],
    "forward process": ["def q_sample"],
    "training loss": ["def diffusion_loss"],
    "DDPM step": ["x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) + sigma_t z"],
    "DDIM step": ["(DDIM eq. 12)", "sigmas = eta * "],
    "DPM-Solver++(2M) step": ["D = (1 + w[i]) * x0_hat - w[i] * x0_hat_prev", "x = ratio[i] * x + coef[i] * D"],
    "classifier-free guidance": ["uncond + w * (model(x, t, freq) - uncond)"],    # the sine script only
    "label dropping": ["freq.masked_fill(hidden, math.nan)"],                     # the sine script only
}
SINE_ONLY = {"classifier-free guidance", "label dropping"}


@pytest.mark.parametrize("row", FORMULA_LINES)
def test_formula_table_points_at_the_formulas(script, row):
    line = next(l for l in README.splitlines() if l.startswith(f"| {row}"))
    column = line.split("|")[3 if script.__name__ == "diffusion_spiral" else 4]
    numbers = [int(n) for n in re.findall(r"\d+", column)]
    if row in SINE_ONLY and script.__name__ == "diffusion_spiral":
        assert not numbers, column
        return
    source = (ROOT / f"{script.__name__}.py").read_text().splitlines()
    assert len(numbers) == len(FORMULA_LINES[row]), column
    for number, text in zip(numbers, FORMULA_LINES[row]):
        assert text in source[number - 1], f"README says line {number} for {row!r}: {source[number - 1]!r}"


def test_flag_table_lists_every_flag(script):
    run = run_main(script, "--help")
    assert run.code == 0
    flags = set(re.findall(r"(--[a-z][a-z-]*)", run.stdout))
    table = README[README.index("## Flags"):README.index("## What a run leaves")]
    missing = [f for f in sorted(flags) if f"`{f}" not in table]
    assert len(flags) > 10 and not missing, f"flags not in the README: {missing}"


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_results_table_parameter_count_is_what_a_run_prints(script, kind, tmp_path):
    """The count a default-sized run prints (from the model it builds) is the one in the README's results."""
    run = run_main(script, "--model", kind, "--steps", "1", "--batch-size", "8", "--num-samples", "8",
                   "--no-plots", "--out", tmp_path)
    assert run.code == 0, run.stderr
    printed = re.search(r"([\d,]+) parameters", run.stdout).group(1)
    name = script.__name__.removeprefix("diffusion_")
    table = README[README.index(f"| {name} run |"):]
    row = next(line for line in table.splitlines() if line.startswith(f"| {kind}, ddpm, trained |"))
    assert row.split("|")[2].strip() == printed, f"README: {row.split('|')[2].strip()}, printed: {printed}"
