"""EXERCISES.md stays true to what `bash exercises/run.sh` last measured and to the scripts: it is exactly
exercises/template.md rendered with exercises/answers.json, every placeholder has a value, every command it
shows parses with the script's own flags, and every one-line edit that run.sh makes (and the page shows) still
matches one line of the script. Fast: nothing is trained."""
import importlib.util
import json
import re
import shlex

import pytest

from helpers import ROOT, import_script

EXERCISES = ROOT / "EXERCISES.md"
TEMPLATE = ROOT / "exercises" / "template.md"
ANSWERS = ROOT / "exercises" / "answers.json"
RUN_SH = ROOT / "exercises" / "run.sh"
REGENERATE = "run `bash exercises/run.sh` (measures again) or `python exercises/render.py` (renders again)"


def load_render():
    spec = importlib.util.spec_from_file_location("exercises_render", ROOT / "exercises" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def values():
    return json.loads(ANSWERS.read_text())["values"]


def code_lines(markdown):
    """Every line inside the ``` code blocks of a markdown text."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.S | re.M)
    return [line for block in blocks for line in block.splitlines()]


def script_commands():
    """Every command of EXERCISES.md's code blocks that runs a lesson script: (script name, its arguments)."""
    found = []
    for line in code_lines(EXERCISES.read_text()):
        words = shlex.split(line)
        if len(words) >= 2 and words[0] == "python" and words[1].startswith("diffusion_"):
            found.append((words[1].removesuffix(".py"), words[2:]))
    return found


def sed_edits():
    """run.sh's one-line edits, `edit SCRIPT 'OLD' 'NEW'`, with its variables ($s) replaced: (script, old, new)."""
    text = RUN_SH.read_text()
    variables = dict(re.findall(r"^(\w+)=(\S+)$", text, flags=re.M))
    edits = re.findall(r"^edit (\S+) '([^']*)' '([^']*)'$", text, flags=re.M)
    return [(re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], script), old, new) for script, old, new in edits]


def test_every_placeholder_has_a_value():
    placeholders = set(load_render().PLACEHOLDER.findall(TEMPLATE.read_text()))
    missing = sorted(placeholders - set(values()))
    assert len(placeholders) > 50, f"only {len(placeholders)} placeholders in {TEMPLATE.name}"
    assert not missing, f"no value in exercises/answers.json for {missing}: {REGENERATE}"


def test_exercises_md_is_the_template_rendered_with_the_answers():
    """A hand edit of EXERCISES.md, a template edited without rendering, or answers.json changed without
    rendering: each fails here."""
    render = load_render()
    rendered = render.render(TEMPLATE.read_text(), values())
    left = re.findall(r"\{\w+\}", rendered)                   # independent of render.py's own pattern
    assert not left, f"placeholders left unrendered (render.py's pattern misses them?): {left}"
    assert EXERCISES.read_text() == rendered, f"EXERCISES.md is not template.md rendered with answers.json: {REGENERATE}"


def test_answers_name_the_machine_and_date():
    answers = json.loads(ANSWERS.read_text())
    for key in ("date", "machine", "cores", "torch", "threads", "total_seconds"):
        assert answers.get(key) not in (None, ""), f"answers.json has no {key!r}: {REGENERATE}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", answers["date"]), answers["date"]


def test_eight_to_twelve_exercises_each_with_a_command_and_a_measurement():
    text = EXERCISES.read_text()
    sections = re.split(r"^## \d+\. ", text, flags=re.M)[1:]
    assert 8 <= len(sections) <= 12, f"{len(sections)} exercises in EXERCISES.md, not 8 to 12"
    for section in sections:
        title = section.splitlines()[0]
        assert "**What we measured" in section, f"exercise {title!r} has no 'What we measured'"
        assert "```" in section or "Nothing new to run" in section, f"exercise {title!r} has no command"


def test_every_command_parses_with_the_scripts_own_flags():
    commands = script_commands()
    assert len(commands) > 20, f"only {len(commands)} script commands found in EXERCISES.md's code blocks"
    for name, args in commands:
        mod = import_script(name)
        try:
            mod.parse_args(args)
        except (mod.UsageError, SystemExit) as e:
            pytest.fail(f"EXERCISES.md: python {name}.py {shlex.join(args)}: {e}")


def test_every_one_line_edit_matches_one_line_of_its_script_and_is_shown():
    edits = sed_edits()
    text = EXERCISES.read_text()
    assert len(edits) >= 2, f"run.sh makes {len(edits)} one-line edits; the exercises need 2 or more"
    for script, old, new in edits:
        lines = (ROOT / script).read_text().splitlines()
        matches = [line for line in lines if re.search(old, line)]
        assert len(matches) == 1, (f"run.sh's edit '{old}' matches {len(matches)} lines of {script}, not 1: update "
                                   "exercises/run.sh and exercises/template.md")
        assert re.sub(old, new, matches[0]) != matches[0], f"'{old}' -> '{new}' changes nothing in {script}"
        shown_old, shown_new = old.lstrip("^").strip(), new.strip()
        assert f"`{shown_old}`" in text and f"`{shown_new}`" in text, \
            f"EXERCISES.md does not show the edit `{shown_old}` -> `{shown_new}` that run.sh makes"


def test_every_figure_and_file_linked_exists():
    text = EXERCISES.read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures, "EXERCISES.md shows no figure"
    links = [link for link in re.findall(r"\]\(([^)]+)\)", text) if not re.match(r"[a-z]+:", link)]
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"files linked from EXERCISES.md that do not exist: {missing}: run bash exercises/run.sh"
