import json
import subprocess
import sys
from pathlib import Path

from deploylab import cli


def test_bench_unknown_suite_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert cli.main(["bench", "nonsense", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark suite 'nonsense'" in err and "roofline" in err
    assert not out.exists()


def test_bench_without_json_path_says_so(capsys):
    assert cli.main(["bench", "roofline"]) == 2
    assert "--json PATH" in capsys.readouterr().err


def test_bench_list(capsys):
    assert cli.main(["bench", "--list"]) == 0
    assert "roofline" in capsys.readouterr().out


def test_bench_roofline_writes_json(tmp_path, capsys):
    out = tmp_path / "roofline.json"
    assert cli.main(["bench", "roofline", "--json", str(out), "--smoke"]) == 0
    data = json.loads(out.read_text())
    assert data["suite"] == "roofline" and len(data["variants"]) == 3
    assert "int8-matmul" in capsys.readouterr().out


def test_env_json_lists_hardware_and_assets(capsys):
    assert cli.main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hardware"]["cores"] >= 1
    assert {a["name"] for a in info["assets"]} >= {"all-MiniLM-L6-v2", "silero-vad"}


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "deploylab", "env"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "all-MiniLM-L6-v2" in out.stdout and "flags" in out.stdout


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_report.ipynb"


def test_report_unknown_parameter_lists_the_real_ones_and_runs_nothing(tmp_path, capsys):
    assert cli.main(["report", str(FIXTURE), "-p", "sise", "3", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) sise" in err and "size (int)" in err
    assert not (tmp_path / "o").exists()


def test_report_wrong_type_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(FIXTURE), "-p", "size", "big", "-o", str(tmp_path)]) == 2
    assert "parameter size of tiny_report.ipynb expects int, got str 'big'" in (
        capsys.readouterr().err)


def test_report_takes_yaml_values_and_a_params_file(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("size: 4\nlabel: from-file\n")
    out = tmp_path / "out"
    assert cli.main(["report", str(FIXTURE), "-f", str(params), "-p", "speed", "2",
                     "--no-input", "-o", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["tables"]["results"][0] == {"variant": "from-file", "latency_ms_p50": 20.0,
                                            "quality": 0.8, "size_mb": 4.0}
    assert (out / "tiny_report.html").is_file()
    assert "wrote" in capsys.readouterr().out


def test_report_failing_cell_is_an_error_naming_the_cell(tmp_path, capsys):
    assert cli.main(["report", str(FIXTURE), "-p", "fail", "true", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: asked to fail" in err and "partial notebook" in err


def test_report_sweep_from_the_command_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("grid:\n  size: [1, 2]\nobjectives:\n  latency_ms_p50: min\n"
                    "  quality: max\n")
    assert cli.main(["report", str(FIXTURE), "--sweep", str(spec), "-o", str(tmp_path / "o"),
                     "--workers", "2"]) == 0
    assert "2 result rows, 2 Pareto-optimal, 0 failed" in capsys.readouterr().out
    assert (tmp_path / "o" / "sweep.html").is_file()


def test_bench_prints_each_target_verdict_under_aligned_rows(tmp_path, capsys, monkeypatch):
    from deploylab import bench
    from deploylab.bench import BenchResult, Variant

    result = BenchResult("fake", False, {"cpu": "test", "cores": 2, "threads": 1}, "a", [
        Variant("a", throughput_per_s=10.0), Variant("a-much-longer-variant-name", skipped="x")],
        extra={"targets": {"one": {"met": True}, "two": {"met": False}}})
    monkeypatch.setattr(bench, "run", lambda name, smoke=False: result)
    assert cli.main(["bench", "fake", "--json", str(tmp_path / "f.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "suite fake (full) on test, 2 cores, torch threads 1; baseline a"
    assert lines[1].index(" p50 ") == lines[2].index(" skipped:")  # one column for both
    assert lines[3:6] == ["targets:", "  yes  one: met", "  NO   two: met"]
