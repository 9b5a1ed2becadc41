"""Each script end to end through main([...]) with tiny budgets: outputs, reproducibility, errors."""
import dataclasses
import hashlib
import json
import math
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY, assert_one_line_error, data_shape, import_script, other_name, run_main

OUTPUTS = ["model.pt", "samples.npy", "metrics.json", "loss.csv", "forward.png", "loss.png", "samples.png",
           "reverse.png"]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -----------------------------------------------------------------------------
# A normal run


def test_run_writes_every_output(script, trained):
    out = trained["out"]
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob("*.tmp")), "temporary checkpoint left behind"
    samples = trained["samples"]
    assert samples.shape == (64,) + data_shape(script) and samples.dtype == np.float32
    assert np.isfinite(samples).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parameters"] > 0 and metrics["device"] == "cpu"
    loss = np.loadtxt(out / "loss.csv", delimiter=",", skiprows=1)
    assert loss.shape == (30, 2) and np.isfinite(loss).all()
    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["script"] == script.PROG and {"model", "config", "schedule"} <= ckpt.keys()
    assert trained["run"].stderr.strip() == ""


def test_same_seed_same_samples(script, trained, tmp_path):
    run = run_main(script, *TINY, "--no-plots", "--out", tmp_path)
    assert run.code == 0, run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "samples.npy"), trained["samples"])


def test_other_seed_other_samples(script, trained, tmp_path):
    args = [a if a != "3" else "4" for a in TINY]  # --seed 4
    assert run_main(script, *args, "--no-plots", "--out", tmp_path).code == 0
    assert not np.array_equal(np.load(tmp_path / "samples.npy"), trained["samples"])


def test_load_reproduces_sampling(script, trained, tmp_path):
    """Sampling from the saved checkpoint with the same seed gives the training run's samples."""
    run = run_main(script, *TINY, "--no-plots", "--load", trained["out"] / "model.pt", "--out", tmp_path)
    assert run.code == 0, run.stderr
    assert not (tmp_path / "model.pt").exists(), "--load must not train or save a model"
    loaded = np.load(tmp_path / "samples.npy")
    assert loaded.shape == trained["samples"].shape
    np.testing.assert_array_equal(loaded, trained["samples"])


@pytest.mark.parametrize("extra", [["--num-samples", "1"], ["--timesteps", "2", "--schedule", "linear", "--gif"]],
                         ids=["one sample", "two steps"])
def test_small_settings_still_run_and_draw(script, tmp_path, extra):
    """The smallest values the flags accept give a run with every figure, not a traceback."""
    run = run_main(script, "--steps", 5, "--batch-size", 16, "--seed", 3, *extra, "--out", tmp_path)
    assert run.code == 0, run.stderr
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    assert np.isfinite(np.load(tmp_path / "samples.npy")).all()


def test_load_reports_how_the_model_was_trained(script, trained, tmp_path):
    """The config line of a --load run shows the saved model's training budget, not the defaults."""
    run = run_main(script, "--num-samples", 8, "--no-plots", "--load", trained["out"] / "model.pt", "--out", tmp_path)
    assert run.code == 0, run.stderr
    config = next(line for line in run.stdout.splitlines() if line.startswith("config:"))
    assert "'steps': 30," in config and "'batch_size': 128," in config, config


def test_load_with_plots_draws_samples(script, trained, tmp_path):
    """After --load there is no training loss to plot; the other figures are still drawn."""
    run = run_main(script, *TINY, "--load", trained["out"] / "model.pt", "--out", tmp_path)
    assert run.code == 0, run.stderr
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "reverse.png").is_file()


def test_load_samples_are_deterministic(script, trained, tmp_path):
    """Two --load runs with the same seed agree (the checkpoint round-trips the model)."""
    ckpt = trained["out"] / "model.pt"
    for sub in ["a", "b"]:
        run = run_main(script, *TINY, "--no-plots", "--sampler", "ddim", "--load", ckpt, "--out", tmp_path / sub)
        assert run.code == 0, run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "samples.npy"), np.load(tmp_path / "b" / "samples.npy"))


# -----------------------------------------------------------------------------
# A user's mistakes: one line on stderr, exit status 2, no traceback

BAD_FLAGS = {
    "model-foo": (["--model", "foo"], "--model"),
    "steps-0": (["--steps", "0"], "--steps"),
    "steps-text": (["--steps", "many"], "--steps"),
    "lr-negative": (["--lr", "-1"], "--lr"),
    "lr-infinite": (["--lr", "inf"], "--lr"),                                # would train to NaN, then stop
    "clip-nan": (["--clip", "nan"], "--clip"),
    "schedule-foo": (["--schedule", "quadratic"], "--schedule"),
    "unknown-flag": (["--epochs", "3"], "--epochs"),
    "ddim-steps-over-T": (["--sampler", "ddim", "--timesteps", "10", "--sample-steps", "20"], "--sample-steps"),
    "dpm-steps-over-T": (["--sampler", "dpm", "--timesteps", "10", "--sample-steps", "11"], "--sample-steps"),
    "dpm-steps-0": (["--sampler", "dpm", "--sample-steps", "0"], "--sample-steps"),
    "sampler-misspelt": (["--sampler", "ddmp"], "--sampler"),
    "objective-foo": (["--objective", "score"], "--objective"),
    "euler-for-eps": (["--sampler", "euler"], "--sampler euler does not fit --objective eps"),
    "ddim-for-flow": (["--objective", "flow", "--sampler", "ddim"], "--sampler ddim does not fit --objective flow"),
    "flow-steps-0": (["--objective", "flow", "--sample-steps", "0"], "--sample-steps"),
    "eta-negative": (["--eta", "-0.5"], "--eta"),
    "eta-above-1": (["--sampler", "ddim", "--eta", "1.5"], "--eta"),            # sqrt(1 - abar - sigma^2) < 0
    "eta-with-ddpm": (["--eta", "1"], "--sampler ddpm takes none"),             # was silently ignored
    "eta-with-dpm": (["--sampler", "dpm", "--eta", "0.5"], "--sampler dpm takes none"),
    "eta-with-midpoint": (["--objective", "flow", "--sampler", "midpoint", "--eta", "1"], "--sampler midpoint"),
    "reflow-for-eps": (["--reflow"], "add --objective flow"),
    "distill-for-eps": (["--distill"], "add --objective flow"),
    "distill-without-reflow": (["--objective", "flow", "--distill"], "add --reflow"),
    "distill-steps-alone": (["--objective", "flow", "--distill-steps", "5"], "add --distill"),
    "reflow-steps-alone": (["--objective", "flow", "--reflow-steps", "5"], "add --reflow"),
    "reflow-pairs-alone": (["--objective", "flow", "--reflow-pairs", "5"], "add one of them"),
    "reflow-pairs-beyond-memory": (["--objective", "flow", "--reflow", "--reflow-pairs", "100000000000"], "GiB"),
    "timesteps-1": (["--timesteps", "1"], "--timesteps"),
    "seed-beyond-torch": (["--seed", "99999999999999999999"], "--seed"),      # torch takes seeds < 2**64
    "seed-negative": (["--seed", "-1"], "--seed"),
    "num-samples-beyond-memory": (["--num-samples", "300000000"], "GiB"),     # would hang or crash, not refuse
    "batch-size-beyond-memory": (["--batch-size", "2000000000"], "GiB"),
    "num-train-beyond-memory": (["--num-train", "100000000000"], "GiB"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_flag_value(script, case, tmp_path):
    args, hint = BAD_FLAGS[case]
    run = run_main(script, *TINY, *args, "--no-plots", "--out", tmp_path / "out")
    assert_one_line_error(run, 2, hint)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_memory_refusal_names_the_flag(script, tmp_path):
    """The refusal says which size is too large and how much memory it would need."""
    run = run_main(script, *TINY, "--num-samples", "300000000", "--out", tmp_path)
    line = assert_one_line_error(run, 2, "--num-samples 300000000 would need about")
    assert float(line.split("about ")[1].split(" GiB")[0].replace(",", "")) > 24


def test_sample_refuses_an_unknown_sampler(script):
    """sample() itself, not only the command line: a misspelt name is an error, not a silent DDIM."""
    with pytest.raises(ValueError, match="anything"):
        script.sample(lambda x, t: x, 4, script.make_schedule(10), sampler="anything")


def test_flags_are_the_config_and_the_model_recipe_fills_the_rest(script):
    """No flags: exactly Config()'s defaults. --model unet: the fields that name a UNet default take it
    (the sine's recipe), and a flag given explicitly wins over both."""
    assert script.parse_args([]) == script.Config()
    unet = script.parse_args(["--model", "unet"])
    for f in dataclasses.fields(script.Config):
        assert getattr(unet, f.name) == f.metadata.get("unet", f.default if f.name != "model" else "unet")
    assert script.parse_args(["--model", "unet", "--steps", "7"]).steps == 7
    assert script.parse_args(["--no-plots", "--gif"]).plots is False


def test_torch_without_numpy_is_one_line(script, tmp_path, monkeypatch):
    """torch < 2.3 beside numpy 2 cannot convert tensors ("Numpy is not available"): the run says what to
    install before it trains, instead of a traceback from the save at the end."""
    def no_numpy(self):
        raise RuntimeError("Numpy is not available")
    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    run = run_main(script, *TINY, "--out", tmp_path)
    assert_one_line_error(run, 2, "numpy<2")
    assert not (tmp_path / "model.pt").exists()


def test_missing_checkpoint(script, tmp_path):
    run = run_main(script, *TINY, "--load", tmp_path / "nope.pt", "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "--load")


def test_garbage_checkpoint(script, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"this is not a checkpoint\n" * 10)
    run = run_main(script, *TINY, "--load", bad, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "--load")


def test_bare_state_dict_is_foreign(script, tmp_path):
    """A valid torch file that this script did not write (a bare state_dict)."""
    path = tmp_path / "weights.pt"
    torch.save(script.build_model("mlp", script.Config(), script.make_schedule()).state_dict(), path)
    run = run_main(script, *TINY, "--load", path, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "--load")


def test_other_scripts_checkpoint_is_foreign(script, tmp_path):
    other = import_script(other_name(script))
    assert run_main(other, *TINY, "--steps", "2", "--no-plots", "--out", tmp_path / "other").code == 0
    run = run_main(script, *TINY, "--load", tmp_path / "other" / "model.pt", "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "--load")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so --device cuda is valid")
def test_cuda_requested_without_cuda(script, tmp_path):
    run = run_main(script, *TINY, "--device", "cuda", "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "cuda")


def test_unwritable_out(script, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = run_main(script, *TINY, "--no-plots", "--out", blocker / "out")
    assert_one_line_error(run, 2, "--out")


# -----------------------------------------------------------------------------
# Nothing already saved is lost


def test_interrupted_save_keeps_previous_checkpoint(script, trained, tmp_path, monkeypatch):
    """Ctrl-C in the middle of writing model.pt: the previous model.pt is untouched and still loads."""
    shutil.copy(trained["out"] / "model.pt", tmp_path / "model.pt")
    before = digest(tmp_path / "model.pt")

    def interrupted_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:           # half a file, then the interrupt
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    run = run_main(script, *TINY, "--seed", "9", "--no-plots", "--out", tmp_path)
    monkeypatch.undo()
    assert run.code != 0 and "Traceback" not in run.stderr
    assert digest(tmp_path / "model.pt") == before
    torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    again = run_main(script, *TINY, "--no-plots", "--load", tmp_path / "model.pt", "--out", tmp_path / "again")
    assert again.code == 0, again.stderr


def test_diverging_run_stops(script, trained, tmp_path):
    """A huge learning rate: non-finite loss, one-line message, exit 1, no samples, old model.pt kept."""
    shutil.copy(trained["out"] / "model.pt", tmp_path / "model.pt")
    before = digest(tmp_path / "model.pt")
    run = run_main(script, *TINY, "--lr", "1e6", "--no-plots", "--out", tmp_path)
    assert_one_line_error(run, 1)
    assert not (tmp_path / "samples.npy").exists()
    assert digest(tmp_path / "model.pt") == before


def test_nan_loss_stops(script, tmp_path, monkeypatch):
    """Divergence forced directly (the loss turns NaN), independent of how the optimiser behaves."""
    loss = script.diffusion_loss
    monkeypatch.setattr(script, "diffusion_loss", lambda *a, **k: loss(*a, **k) * math.nan)
    run = run_main(script, *TINY, "--no-plots", "--out", tmp_path)
    assert_one_line_error(run, 1)
    assert not (tmp_path / "samples.npy").exists() and not (tmp_path / "model.pt").exists()


# -----------------------------------------------------------------------------
# Pasted whole into a Jupyter cell: no __file__, __name__ == "__main__", sys.argv holds the kernel's flags


def test_pasted_into_a_notebook_cell(script, monkeypatch, tmp_path, capsys):
    source = Path(script.__file__).read_text()
    body, tail = source.split('if __name__ == "__main__":')
    cell = {"__name__": "__main__"}                       # what a notebook cell runs in: no __file__
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"])
    exec(body, cell)
    real_run, configs = cell["run"], []
    cell["run"] = configs.append                          # the cell's own main() runs the defaults: record them
    exec('if __name__ == "__main__":' + tail, cell)
    assert configs == [cell["Config"]()], "main() in a notebook must ignore the kernel's arguments"

    cell["run"] = real_run                                # with flags, a tiny real run, then a user error
    cell["main"]([*TINY, "--no-plots", "--out", str(tmp_path)])
    assert (tmp_path / "samples.npy").is_file()
    with pytest.raises(SystemExit) as stop:
        cell["main"](["--steps", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(script.PROG + ": error:") and "\n" not in err and "Traceback" not in err


def cells(script):
    """The script's `# %%` cells (what VS Code, PyCharm, Spyder and Jupytext open as notebook cells), in order."""
    source = Path(script.__file__).read_text()
    return re.split(r"^(?=# %%)", source, flags=re.M)


def test_cells_run_in_order_only_define_things(script, monkeypatch, tmp_path, capsys):
    """Run cell by cell as a notebook would (__name__ == "__main__", a kernel's argv): every cell but the last
    only defines things (no output, no files); the last runs main(), which ignores the kernel's arguments."""
    parts = cells(script)
    titles = [part.splitlines()[0] for part in parts[1:]]
    for wanted in ["Config", "Data", "Noise schedule", "Forward process", "Models", "Training", "Sampling",
                   "Evaluation", "Running the lesson"]:
        assert any(title.startswith(f"# %% {wanted}") for title in titles), f"no cell {wanted!r}: {titles}"
    assert parts[-1].splitlines()[1:] == ['if __name__ == "__main__":', "    main()"], parts[-1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"])
    namespace = {"__name__": "__main__"}
    for part in parts[:-1]:
        exec(part, namespace)
    assert capsys.readouterr() == ("", "") and not list(tmp_path.iterdir())
    configs = []
    namespace["run"] = configs.append                     # the last cell's main(): record what it would run
    exec(parts[-1], namespace)
    assert configs == [namespace["Config"]()]


def test_figures_show_inline_in_jupyter(script, trained, monkeypatch, tmp_path):
    """In a Jupyter kernel every saved figure is also displayed; elsewhere (the `trained` run, with its figures,
    in this process) IPython is not imported."""
    assert (trained["out"] / "samples.png").is_file() and "IPython" not in sys.modules
    shown = []
    display = types.ModuleType("IPython.display")
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    run = run_main(script, *TINY, "--out", tmp_path / "kernel")
    assert run.code == 0, run.stderr
    pngs = sorted(p.name for p in (tmp_path / "kernel").glob("*.png"))
    assert len(shown) == len(pngs) >= 4 and all(hasattr(fig, "savefig") for fig in shown), (len(shown), pngs)


@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_every_allowed_seed_runs(script, tmp_path, seed):
    """The help allows 0 .. 2^64 - 1, and every seed derived from it (seed + 1, ...) stays in torch's range."""
    args = [a if a != "3" else str(seed) for a in TINY]
    run = run_main(script, *args, "--no-plots", "--out", tmp_path)
    assert run.code == 0, run.stderr
    assert_one_line_error(run_main(script, "--seed", 2**64, "--out", tmp_path), 2, "--seed")
