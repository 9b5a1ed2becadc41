"""The README stays true to the code: its table of where each formula lives names functions that exist and
contain the formula's words, its flag table lists every flag the scripts accept, and its results tables give
the parameter counts a run prints."""
import ast
import re

import pytest

from helpers import ROOT, run_main

README = (ROOT / "README.md").read_text()

# every row the README's formula table must have; a row of one script says "-" for the other
FORMULA_ROWS = ["schedules", "forward process", "training loss", "DDPM step", "x0 prediction, Tweedie's formula",
                "DDIM step", "DPM-Solver++(2M) step", "flow matching loss", "Euler step", "Euler step with eta",
                "midpoint step", "reflow pairs", "distillation loss", "classifier-free guidance", "label dropping", "preconditioning", "data density",
                "log-likelihood", "DDPM's bound"]
SINE_ONLY = {"classifier-free guidance", "label dropping", "preconditioning"}
SPIRAL_ONLY = {"data density", "log-likelihood", "DDPM's bound"}


def definitions(script):
    """Source text of every module-level function and class of the script, by name."""
    source = (ROOT / f"{script.__name__}.py").read_text()
    return {node.name: ast.get_source_segment(source, node) for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("row", FORMULA_ROWS)
def test_formula_table_names_functions_that_hold_the_formula(script, row):
    """Each cell is `name`: "words": the script defines `name`, and the words occur in its source."""
    line = next((l for l in README.splitlines() if l.startswith(f"| {row} |")), None)
    assert line, f"no row {row!r} in the README's formula table"
    cell = line.split("|")[3 if script.__name__ == "diffusion_spiral" else 4].strip()
    if (row in SINE_ONLY and script.__name__ == "diffusion_spiral"
            or row in SPIRAL_ONLY and script.__name__ == "diffusion_sine"):
        assert cell == "-", cell
        return
    match = re.fullmatch(r"`(\w+)`(?:: \"([^\"]+)\")?", cell)
    assert match, f"{row!r}: {cell!r} is not `name`: \"words\""
    name, words = match.groups()
    found = definitions(script)
    assert name in found, f"{script.__name__} defines no {name!r} (README row {row!r})"
    assert words is None or words in found[name], f"{words!r} not in {name}() of {script.__name__}"


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
