"""Build one notebook per lesson script: `python notebooks/build.py` (from any folder; standard library only).

The notebooks are generated: edit diffusion_spiral.py or diffusion_sine.py, never the .ipynb, then rerun this
(tests/test_notebooks.py fails while a notebook is out of date). A script is cut into cells at its `# %%` lines
(VS Code and Jupytext's percent format), each under a markdown title made from its `# %%` comment; the last
cell runs the lesson with main(["--device", "auto"]). Open a notebook in Jupyter (`jupyter lab notebooks/`),
VS Code (open the .ipynb file) or Colab (File > Upload notebook, or File > Open notebook > GitHub).
"""
import ast
import itertools
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent  # notebooks/, in the repository root
SCRIPTS = ["diffusion_spiral.py", "diffusion_sine.py"]
MARKER = "# %%"
GUARD = 'if __name__ == "__main__":'
RUN = 'main(["--device", "auto"])'
METADATA = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}}


def split(text):
    """The script cut before each `# %%` line: [head, cell, cell, ...], the head "" if the script has none."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(MARKER)]
    bounds = zip([0] + starts, starts + [len(lines)])
    return [re.sub(r"(\n[ \t]*)*\Z", "", "\n".join(lines[a:b])) for a, b in bounds]  # no trailing blank lines


def title(cell):
    """Markdown for a cell: its `# %%` line up to a top-level ': ' as the heading; the rest of that line and the
    `# ` comment lines right under it, as plain text, below."""
    lines = cell.split("\n")
    first, depth = re.sub(r"\s*={3,}$", "", lines[0][len(MARKER):].strip()), 0  # without a ruler of ='s
    rest = [line[2:] for line in itertools.takewhile(lambda line: line.startswith("# "), lines[1:])]
    for i, char in enumerate(first):
        depth += (char == "(") - (char == ")")
        if depth == 0 and first.startswith(": ", i):
            first, rest = first[:i], [first[i + 2:]] + rest
            break
    return "\n".join([f"## {first}"] + [""] * bool(rest) + rest)


def run_cell(cell):
    """The last cell, its `if __name__ == "__main__":` block replaced by a call that runs the lesson."""
    lines = cell.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == GUARD]
    if not starts:
        return cell
    start, end = starts[0], starts[0] + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t"):  # the guarded block
        end += 1
    indent = lines[start][:len(lines[start]) - len(lines[start].lstrip())]
    return "\n".join(lines[:start] + [indent + RUN] + lines[end:])


def make_cell(i, kind, text):
    lines = text.split("\n")
    cell = {"cell_type": kind, "id": f"cell-{i:02d}", "metadata": {},
            "source": [line + "\n" for line in lines[:-1]] + [lines[-1]]}
    return {**cell, "execution_count": None, "outputs": []} if kind == "code" else cell


def notebook(script_path, text=None):
    """The notebook (a dict) of the script at script_path; text, if given, replaces the file's content."""
    script_path = Path(script_path)
    text = script_path.read_text(encoding="utf-8") if text is None else text
    head, *cells = split(text)
    doc = (ast.get_docstring(ast.parse(text)) or script_path.stem).split("\n")[0].rstrip(".")
    intro = (f"# {doc}\n\nGenerated from `{script_path.name}` by `python notebooks/build.py`: edit the script, "
             "not this notebook, then rerun the build. The last cell runs the lesson.")
    parts = [("markdown", intro)] + [("code", head)] * bool(head)
    for j, cell in enumerate(cells):
        parts += [("markdown", title(cell)), ("code", run_cell(cell) if j == len(cells) - 1 else cell)]
    return {"cells": [make_cell(i, kind, src) for i, (kind, src) in enumerate(parts)],
            "metadata": METADATA, "nbformat": 4, "nbformat_minor": 5}


def render(nb):
    """The notebook file's text: stable, so regenerating gives byte-identical files."""
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main():
    for name in SCRIPTS:
        out = HERE / (Path(name).stem + ".ipynb")
        with open(out, "w", encoding="utf-8", newline="\n") as f:
            f.write(render(notebook(HERE.parent / name)))
        print(f"wrote notebooks/{out.name}")


if __name__ == "__main__":
    main()
