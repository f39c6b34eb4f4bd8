"""Notebook run times are measured, stored with their machine, and the README is generated."""

import json
from pathlib import Path

import nbformat
import pytest

from deploylab import runtimes

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """A full run, in place, of a notebook that holds ~300 MB and prints its mode."""
    tmp = tmp_path_factory.mktemp("nb")
    nb = _notebook(tmp / "probe.ipynb",
                   "import os, numpy as np\nblock = np.ones(300 * 2**20 // 8)",
                   "print('smoke', os.environ.get('DEPLOYLAB_SMOKE'))")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEPLOYLAB_SMOKE", "1")  # as in CI: a full run must not inherit it
        return nb, runtimes.measure(nb, smoke=False, inplace=True, root=tmp)


def test_measure_times_a_run_and_sees_the_kernels_memory(timed):
    _, full = timed
    assert (full.notebook, full.mode) == ("probe.ipynb", "full")
    assert full.wall_s > 0 and "cores" in full.machine
    assert full.peak_rss_mb > 300  # the kernel held 300 MB: the child's memory is counted


def test_a_full_run_in_place_keeps_its_outputs_without_smoke(timed):
    nb, _ = timed
    printed = nbformat.read(nb, as_version=4).cells[1].outputs[0]["text"]
    assert printed.strip() == "smoke None"


def test_smoke_runs_set_smoke_and_leave_the_notebook_alone(timed, monkeypatch):
    nb, _ = timed
    before, seen = nb.read_bytes(), {}

    def fake_run(cmd, env, cwd):
        seen.update(env)
        return 0, 1.5, 100.0, ""

    monkeypatch.setattr(runtimes, "_run", fake_run)
    t = runtimes.measure(nb, smoke=True, root=nb.parent)
    assert (t.mode, t.wall_s, seen["DEPLOYLAB_SMOKE"], seen["HF_HUB_OFFLINE"]) == (
        "smoke", 1.5, "1", "1")
    assert nb.read_bytes() == before


def test_a_failing_notebook_is_reported_and_not_written(tmp_path):
    nb = _notebook(tmp_path / "bad.ipynb", "raise ValueError('cell four broke')")
    before = nb.read_bytes()
    with pytest.raises(runtimes.RuntimeMeasurementError, match="cell four broke"):
        runtimes.measure(nb, smoke=True, inplace=True, root=tmp_path)
    assert nb.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp*"))


def test_not_a_notebook_is_refused(tmp_path):
    with pytest.raises(runtimes.RuntimeMeasurementError, match="not a notebook"):
        runtimes.measure(tmp_path / "missing.ipynb", smoke=True)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(runtimes.RuntimeMeasurementError, match="not a notebook"):
        runtimes.measure(tmp_path / "x.txt", smoke=True)


def _timing(nb="notebooks/00_welcome.ipynb", mode="full", wall=90.0, note=""):
    return runtimes.Timing(nb, mode, wall, 900.0, "2026-12-02", "CPU, 2 cores, avx2", note)


def test_record_replaces_the_same_notebook_and_mode_only(tmp_path):
    path = tmp_path / "runtimes.json"
    runtimes.record(_timing(wall=90.0), path)
    runtimes.record(_timing(mode="smoke", wall=20.0), path)
    runtimes.record(_timing(wall=80.0), path)
    table = runtimes.load(path)
    assert table["notebooks/00_welcome.ipynb"]["full"].wall_s == 80.0
    assert table["notebooks/00_welcome.ipynb"]["smoke"].wall_s == 20.0


def test_a_corrupt_file_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "runtimes.json"
    path.write_text("{not json")
    with pytest.raises(runtimes.RuntimeMeasurementError, match="restore it from git"):
        runtimes.load(path)


def test_render_lists_every_notebook_and_sums_the_plans(tmp_path):
    day = runtimes.PLANS["one-day workshop"][0]
    table = {nb: {"full": _timing(nb, wall=60.0)} for nb in day[:-1]}
    text = runtimes.render(table)
    for nb in runtimes.notebooks():
        assert f"`{nb}`" in text
    assert "not measured" in text  # the rest of the notebooks
    assert f"full runs: {len(day) - 1} min of compute, 1 not measured" in text
    assert "| 60 s |" in text and "0.9 GB" in text


def test_render_writes_a_note_both_runs_share_once_and_labels_different_ones():
    nb = "notebooks/00_welcome.ipynb"
    same = {nb: {"full": _timing(nb, note="rerun"), "smoke": _timing(nb, "smoke", note="rerun")}}
    assert "| rerun |" in runtimes.render(same)
    both = {nb: {"full": _timing(nb, note="full"), "smoke": _timing(nb, "smoke", note="fast")}}
    assert "| full run: full; smoke run: fast |" in runtimes.render(both)
    one = {nb: {"full": _timing(nb, note="quiet"), "smoke": _timing(nb, "smoke")}}
    assert "| quiet |" in runtimes.render(one)


def test_update_readme_needs_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    with pytest.raises(runtimes.RuntimeMeasurementError, match="no run-time block"):
        runtimes.update_readme(readme, tmp_path / "runtimes.json")
    readme.write_text(f"before\n{runtimes.BEGIN}\nstale\n{runtimes.END}\nafter\n")
    runtimes.record(_timing(wall=150.0), tmp_path / "runtimes.json")
    runtimes.update_readme(readme, tmp_path / "runtimes.json")
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "stale" not in text
    assert "| `notebooks/00_welcome.ipynb` | 2.5 min |" in text


def test_the_committed_readme_table_is_generated_from_the_measurements():
    block = runtimes.render(runtimes.load())
    assert block in (ROOT / "README.md").read_text(), (
        "README's run-time table differs from data/runtimes.json: run "
        "`deploylab runtimes --readme-only` (never edit the table by hand)")
    stored = json.loads(runtimes.RUNTIMES_JSON.read_text())
    assert set(stored) <= set(runtimes.notebooks()), "an entry for a notebook that is gone"


def test_workshop_plans_name_real_notebooks_once_per_plan():
    every = set(runtimes.notebooks())
    for plan, days in runtimes.PLANS.items():
        flat = [nb for day in days for nb in day]
        assert set(flat) <= every, plan
        assert len(flat) == len(set(flat)), f"{plan} repeats a notebook"


def test_the_command_lists_notebooks_and_refuses_a_bad_path(capsys, tmp_path):
    from deploylab.cli import main

    assert main(["runtimes", "--list"]) == 0
    assert "notebooks/00_welcome.ipynb" in capsys.readouterr().out.splitlines()
    assert main(["runtimes", str(tmp_path / "nope.ipynb"), "--mode", "smoke"]) == 2
    assert "not a notebook" in capsys.readouterr().err


def test_a_run_on_a_shared_cpu_is_flagged_in_the_table():
    busy = _timing()
    busy.load, busy.shared_cpu = 6.5, True
    text = runtimes.render({busy.notebook: {"full": busy}})
    assert "Full run timed on a shared CPU (load 6.5): inflated." in text
    assert "shared CPU" not in runtimes.render({busy.notebook: {"full": _timing()}})


def test_a_smoke_run_timed_by_the_test_suite_keeps_the_full_run(tmp_path):
    path = tmp_path / "runtimes.json"
    runtimes.record(_timing(wall=90.0), path)
    quiet = runtimes.record_test_run("notebooks/00_welcome.ipynb", 12.345, [0.5, 1.5], path)
    assert (quiet.mode, quiet.wall_s, quiet.load, quiet.shared_cpu) == ("smoke", 12.3, 1.0,
                                                                        False)
    busy = runtimes.record_test_run("notebooks/03_quantization.ipynb", 30, [50.0], path)
    assert busy.shared_cpu  # a load far above any core count: flagged as inflated
    table = runtimes.load(path)
    assert table["notebooks/00_welcome.ipynb"]["full"].wall_s == 90.0
    assert table["notebooks/00_welcome.ipynb"]["smoke"].peak_rss_mb is None
    assert "| 12 s |" in runtimes.render(table)
