"""The lessons in layers: a core that runs on its own, and chapters that use only what is above them.

The core is each script's text from its first line to the line "# %% Beyond the core". Saved as a file of its
own with one call of ddpm_lesson() appended, it must run with only the standard library, torch, numpy and
matplotlib, and draw samples at the default run's quality. Those two runs are the slowest part of the suite,
so conftest.py starts them in the background when this file's test is collected, and the test waits for them.
"""
import ast
import json
import symtable
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, import_script

CORE_MARKER = "# %% Beyond the core"
RULER = "# %% Running the lesson"
ALLOWED_IMPORTS = {"argparse", "copy", "json", "math", "os", "sys", "time", "dataclasses",
                   "matplotlib", "numpy", "torch"}


def marker_line(text, marker):
    """1-based number of the line that starts with marker (exactly one must)."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(marker)]
    assert len(found) == 1, f"{marker!r} starts {len(found)} lines, not one"
    return found[0]


def core_text(name):
    """The script's core: every line above the core marker."""
    text = (ROOT / f"{name}.py").read_text()
    return "\n".join(text.splitlines()[:marker_line(text, CORE_MARKER) - 1]) + "\n"


def core_program(name, out):
    """The core with one call of ddpm_lesson() appended, saving what it returns to `out`."""
    return core_text(name) + f"\nnp.save({str(out)!r}, ddpm_lesson().numpy())\n"


def top_level_names(tree):
    """Each module-level name and the line of its first definition."""
    lines = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        else:
            names = []
        for name in names:
            lines.setdefault(name, node.lineno)
    return lines


def globals_used(table):
    """The global names a function or class (symtable) reads, in it or in anything nested in it."""
    used = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    for child in table.get_children():
        used |= globals_used(child)
    return used


def forward_references(text, filename="<lesson>"):
    """(definition, name, line) for every function or class of the lesson (above the ruler) that uses a
    module-level name first defined below its own definition."""
    tree = ast.parse(text)
    ruler = marker_line(text, RULER)
    defined = top_level_names(tree)
    tables = {t.get_name(): t for t in symtable.symtable(text, filename, "exec").get_children()}
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.lineno < ruler:
            for name in sorted(globals_used(tables[node.name])):
                if defined.get(name, 0) > node.lineno:
                    found.append((node.name, name, defined[name]))
    return found


@pytest.mark.parametrize("name", ["diffusion_spiral", "diffusion_sine"])
def test_chapters_use_only_what_is_above_them(name):
    text = (ROOT / f"{name}.py").read_text()
    assert marker_line(text, CORE_MARKER) < marker_line(text, RULER)
    assert forward_references(text, name) == []


def test_the_forward_reference_check_can_fail():
    lesson = ("def sample(model):\n    return euler(model)\n\n"
              "def euler(model):\n    steps = 1\n    return model(steps)\n\n"
              f"{RULER}\ndef main():\n    return sample(euler)\n")
    assert forward_references(lesson) == [("sample", "euler", 4)]      # main, below the ruler, may
    local = "def f():\n    g = 1\n    return g\n\ndef g():\n    pass\n" + RULER + "\n"
    assert forward_references(local) == []                              # a local that shadows a later name


@pytest.mark.parametrize("name", ["diffusion_spiral", "diffusion_sine"])
def test_the_core_imports_only_what_it_may(name):
    tree = ast.parse(core_text(name))
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= ALLOWED_IMPORTS, modules - ALLOWED_IMPORTS
    assert "ddpm_lesson" in top_level_names(tree)


def test_the_core_alone_draws_samples_at_the_default_runs_quality(core_runs):
    """Each core, run as a file of its own with the defaults: the spiral strays at most 1 %, and at least 99 %
    of the sine's waves are clean sines (R^2 >= 0.99)."""
    results = core_runs()
    for name, (code, seconds, stderr, out) in results.items():
        assert code == 0, f"{name} core failed:\n{stderr[-3000:]}"
        assert "Traceback" not in stderr
        samples = torch.from_numpy(np.load(out))
        mod = import_script(name)
        print(f"{name} core: {seconds:.0f} s, samples {tuple(samples.shape)}", file=sys.stderr)
        if name == "diffusion_spiral":
            assert samples.shape == (mod.Config.num_samples, 2)
            quality = mod.evaluate(samples, torch.Generator().manual_seed(3))
            assert quality["outliers"] <= 0.01, json.dumps(quality)
        else:
            assert samples.shape == (mod.Config.num_samples, 64)
            quality = mod.evaluate(samples, torch.Generator().manual_seed(3))
            assert quality["r2_099"] >= 0.99, json.dumps(quality)
            assert quality["amp_w1"] < 0.05, json.dumps(quality)     # not one perfect wave again and again
