import pytest

from deploylab import cache_dir, prefetch
from deploylab.prefetch import PrefetchError, Step


@pytest.fixture
def fake_steps(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    def build_once():  # what every real step does: build if absent, else load
        calls.append("data")
        f = cache_dir("datasets") / "thing.bin"
        if not f.is_file():
            f.write_bytes(b"x" * 10)

    def broken():
        raise OSError("disk full")

    monkeypatch.setattr(prefetch, "STEPS", [Step("data", "a dataset", build_once),
                                            Step("broken", "fails", broken)])
    return calls


def test_a_second_run_builds_nothing_and_says_so(fake_steps, capsys):
    first = prefetch.run(["data"])
    second = prefetch.run(["data"])
    assert [r["status"] for r in first + second] == ["built", "cached"]
    assert first[0]["files_written"] == 1 and second[0]["files_written"] == 0
    assert "cached" in capsys.readouterr().out.splitlines()[-1]
    assert fake_steps == ["data", "data"]


def test_unknown_names_are_refused_before_anything_runs(fake_steps):
    with pytest.raises(PrefetchError, match=r"unknown prefetch step\(s\) \['nope'\]; known: "
                                            "data, broken"):
        prefetch.run(["data", "nope"])
    assert fake_steps == []


def test_a_failing_step_is_named(fake_steps):
    with pytest.raises(PrefetchError, match="'broken' failed: OSError: disk full"):
        prefetch.run()
    assert fake_steps == ["data"]  # the steps before it finished


def test_the_real_corpus_step_builds_into_an_empty_cache_once(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path))
    assert [r["status"] for r in prefetch.run(["stdlib-docstrings"], progress=False)] == ["built"]
    assert prefetch.run(["stdlib-docstrings"], progress=False)[0]["status"] == "cached"
    assert [s.name for s in prefetch.STEPS][:2] == ["stdlib-docstrings", "digits-cnn"]


def test_the_command_lists_runs_and_refuses_unknown_steps(fake_steps, capsys):
    from deploylab.cli import main

    assert main(["prefetch", "--list"]) == 0
    assert "data" in capsys.readouterr().out
    assert main(["prefetch", "data"]) == 0 and "built data" in capsys.readouterr().out
    assert main(["prefetch", "data"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["prefetch", "nope"]) == 2 and "unknown prefetch step" in capsys.readouterr().err
