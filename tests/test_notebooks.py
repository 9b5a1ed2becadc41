"""The notebooks in notebooks/ are generated from the lesson scripts by notebooks/build.py: they must be up to
date, reproduce the script cell by cell, and be valid nbformat 4.5 JSON. Fast: nothing is trained."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RUN = 'main(["--device", "auto"])'
GUARD = 'if __name__ == "__main__":'

_spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def path_of(script):
    return NOTEBOOKS / (Path(script).stem + ".ipynb")


def source(cell):
    return "".join(cell["source"])


def code_cells(nb):
    return [source(c) for c in nb["cells"] if c["cell_type"] == "code"]


def words(text):
    return " ".join(text.split())


@pytest.fixture(params=build.SCRIPTS)
def lesson(request):
    """(script text, the committed notebook's file text, that notebook loaded) for each lesson script."""
    path = path_of(request.param)
    assert path.exists(), f"{path.name} is missing: run `python notebooks/build.py`"
    text = path.read_text(encoding="utf-8")
    return (ROOT / request.param).read_text(encoding="utf-8"), text, json.loads(text)


@pytest.mark.parametrize("script", build.SCRIPTS)
def test_notebook_is_up_to_date(script):
    expected = build.render(build.notebook(ROOT / script))
    assert path_of(script).read_text(encoding="utf-8") == expected, (
        f"notebooks/{path_of(script).name} is out of date with {script}: run `python notebooks/build.py`")
    assert build.render(build.notebook(ROOT / script)) == expected  # deterministic


def test_only_the_lessons_have_notebooks():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(path_of(s).name for s in build.SCRIPTS)


@pytest.mark.parametrize("script", build.SCRIPTS)
def test_an_edited_script_gives_another_notebook(script):
    text = (ROOT / script).read_text(encoding="utf-8")
    edited = text.replace("\n# %% Forward process\n", "\n# %% Forward process\nEDITED = 1\n", 1)
    assert edited != text
    nb = build.notebook(ROOT / script, edited)
    assert build.render(nb) != path_of(script).read_text(encoding="utf-8")
    assert "# %% Forward process\nEDITED = 1\n" in "\n".join(code_cells(nb))


def test_code_cells_reproduce_the_script(lesson):
    """Joined, the code cells are the script verbatim, but for blank lines between cells and the last cell."""
    script, _, nb = lesson
    *cells, last = code_cells(nb)
    rest = script
    for cell in cells:
        assert cell.split("\n")[-1].strip(), "a code cell ends with a blank line"
        before, found, rest = rest.partition(cell)
        assert found and not before.strip(), f"a code cell is not the script's next text:\n{cell[:300]}"
    # The last cell: the script's last cell up to its __main__ guard, then the call that runs the lesson.
    kept, run = last.rsplit("\n", 1)
    assert run == RUN
    before, found, rest = rest.partition(kept + "\n")
    assert found and not before.strip()
    guard, *body = rest.rstrip().split("\n")
    assert guard == GUARD and body and all(line.startswith((" ", "\t")) for line in body)


def test_titles_follow_the_script_markers(lesson):
    script, _, nb = lesson
    lines = script.split("\n")
    titles = []
    for i, line in enumerate(lines):
        if line.startswith("# %%"):
            text = [re.sub(r"={3,}$", "", line[4:])]  # a ruler is not a title
            for more in lines[i + 1:]:
                if not more.startswith("# ") or more.startswith("# %%"):
                    break
                text.append(more[2:])
            titles.append(words(" ".join(text)))
    cells = nb["cells"]
    assert [c["cell_type"] for c in cells[:2]] == ["markdown", "code"]  # intro, then the imports
    assert cells[0]["source"][0].startswith("# ") and "build.py" in source(cells[0])
    pairs = cells[2:]
    assert [c["cell_type"] for c in pairs] == ["markdown", "code"] * len(titles)
    for title, md, code in zip(titles, pairs[::2], pairs[1::2]):
        heading, _, body = source(md).partition("\n\n")
        assert heading.startswith("## ") and "\n" not in heading
        heading = heading[3:]  # the title up to its ': ' (dropped), or the whole `# %%` line
        assert title in (words(f"{heading}: {body}"), words(f"{heading} {body}")), f"{title!r} shown as {md}"
        assert code["source"][0].startswith("# %%") and words(code["source"][0][4:]).startswith(words(heading))


def test_last_cell_runs_the_lesson(lesson):
    _, _, nb = lesson
    last = code_cells(nb)[-1]
    assert last.startswith("# %%") and last.split("\n")[-1] == RUN and "__main__" not in last


def test_notebook_is_valid_nbformat_4(lesson):
    _, text, nb = lesson
    assert text.endswith("}\n") and json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n" == text
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] == 5
    assert nb["metadata"]["kernelspec"]["name"] == "python3" and nb["metadata"]["language_info"]["name"] == "python"
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids)
    for cell in nb["cells"]:
        keys = {"cell_type", "id", "metadata", "source"}
        keys |= {"execution_count", "outputs"} if cell["cell_type"] == "code" else set()
        assert cell["cell_type"] in ("markdown", "code") and set(cell) == keys
        assert cell["metadata"] == {} and cell["source"] and all(isinstance(s, str) for s in cell["source"])
        assert all(s.endswith("\n") for s in cell["source"][:-1]) and not cell["source"][-1].endswith("\n")
        assert all("\n" not in s[:-1] for s in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["execution_count"] is None and cell["outputs"] == []


def test_cells_before_the_last_define_the_lesson(lesson):
    """Run in order like a kernel would (but not the last cell: that trains), the cells define main."""
    _, _, nb = lesson
    namespace = {"__name__": "__main__"}
    for cell in code_cells(nb)[:-1]:
        exec(compile(cell, "<notebook cell>", "exec"), namespace)
    assert callable(namespace["main"]) and callable(namespace["parse_args"])


def test_split_rules_on_a_small_script():
    text = ('"""Title line.\n\nMore."""\nimport os\n\n\n'
            "# %% Data: a ruler-less title that goes on\n# over two lines\n\nX = 1\n# code comment\n\n\n"
            "# %% Running ======\n# Notes.\nY = 2\n"
            '# %% Run it (a: b)\ndef f():\n    pass\nif __name__ == "__main__":\n    main()\n\n    f()\nZ = 3\n')
    nb = build.notebook("toy.py", text)
    got = [(c["cell_type"], source(c)) for c in nb["cells"]]
    assert got[0][1].startswith("# Title line\n\nGenerated from `toy.py`")
    assert got[1:] == [
        ("code", '"""Title line.\n\nMore."""\nimport os'),
        ("markdown", "## Data\n\na ruler-less title that goes on\nover two lines"),
        ("code", "# %% Data: a ruler-less title that goes on\n# over two lines\n\nX = 1\n# code comment"),
        ("markdown", "## Running\n\nNotes."),
        ("code", "# %% Running ======\n# Notes.\nY = 2"),
        ("markdown", "## Run it (a: b)"),
        ("code", '# %% Run it (a: b)\ndef f():\n    pass\nmain(["--device", "auto"])\nZ = 3'),
    ]
    assert [c["id"] for c in nb["cells"]] == [f"cell-{i:02d}" for i in range(8)]
    # Without a __main__ guard the last cell stays as it is; without a head there is no head cell.
    plain = build.notebook("toy.py", "# %% Only\nx = 1\n")
    assert [source(c) for c in plain["cells"][1:]] == ["## Only", "# %% Only\nx = 1"]
