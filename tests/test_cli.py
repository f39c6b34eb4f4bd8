import json
import subprocess
import sys

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
