import json
from pathlib import Path

import pandas as pd
import pytest

from deploylab import report
from deploylab.report import ReportError, SweepSpec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_report.ipynb"
SPEC = {"grid": {"size": [1, 3], "speed": [1.0, 2.0]}, "parameters": {"label": "s"},
        "objectives": {"latency_ms_p50": "min", "quality": "max"}, "size": "size_mb"}


def test_pareto_front_marks_non_dominated_rows():
    t = pd.DataFrame({"lat": [10, 5, 30, 15, 5, None], "q": [0.5, 0.5, 0.75, 0.75, 0.4, 0.9]})
    front = report.pareto_front(t, {"lat": "min", "q": "max"})
    assert front.tolist() == [False, True, False, True, False, False]
    with pytest.raises(ReportError, match="not in the results"):
        report.pareto_front(t, {"nope": "min"})


@pytest.mark.parametrize(("spec", "match"), [
    ({"grid": {}}, "non-empty `grid`"), ({"grid": {"a": 1}}, "non-empty list"),
    ({"grid": {"a": [1]}, "parameters": {"a": 2}}, "both fixed"),
    ({"grid": {"a": [1]}, "objectives": {"a": "up"}}, "'min' or 'max'"),
    ({"grid": {"a": [1]}, "colour": 1}, "unknown sweep keys"),
])
def test_spec_validation(spec, match):
    with pytest.raises(ReportError, match=match):
        SweepSpec.load(spec)


def test_spec_loads_yaml(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("grid:\n  size: [1, 2]\nparameters:\n  label: a\n")
    assert SweepSpec.load(f).combinations() == [{"label": "a", "size": 1},
                                                {"label": "a", "size": 2}]


def _check_table(res):
    assert res.failures == []
    t = res.table.sort_values(["size", "speed"]).reset_index(drop=True)
    assert t[["size", "speed"]].values.tolist() == [[1, 1.0], [1, 2.0], [3, 1.0], [3, 2.0]]
    assert t.latency_ms_p50.tolist() == pytest.approx([10.0, 5.0, 30.0, 15.0])
    assert t.pareto.tolist() == [False, True, False, True]
    page = res.html.read_text()
    assert "data:image/png;base64" in page and "Failed runs (0)" in page
    assert pd.read_csv(res.csv).shape[0] == 4


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, report.run_sweep(FIXTURE, SPEC, out, workers=2)


def test_local_sweep_aggregates_and_marks_the_pareto_front(local_sweep):
    _check_table(local_sweep[1])


def test_rerun_skips_finished_runs_unless_forced(local_sweep):
    out, _ = local_sweep
    executed = sorted((out / "runs").glob("*/tiny_report.ipynb"))
    before = [p.stat().st_mtime_ns for p in executed]
    _check_table(report.run_sweep(FIXTURE, SPEC, out))
    assert [p.stat().st_mtime_ns for p in executed] == before
    spec = {**SPEC, "grid": {"size": [1], "speed": [1.0]}}
    report.run_sweep(FIXTURE, spec, out, force=True)
    assert [p.stat().st_mtime_ns != b for p, b in zip(executed, before, strict=True)].count(
        True) == 1


def test_a_misspelt_parameter_refuses_the_whole_sweep_before_running(tmp_path):
    with pytest.raises(ReportError, match=r"unknown parameter\(s\) sise"):
        report.run_sweep(FIXTURE, {"grid": {"sise": [1, 2]}}, tmp_path)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_bad_value_fails_its_run_and_the_others_are_kept(tmp_path):
    res = report.run_sweep(FIXTURE, {"grid": {"size": [1, "two"]}}, tmp_path)
    assert res.table["size"].tolist() == [1]
    assert len(res.failures) == 1 and "expects int" in res.failures[0]["error"]
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the bad one never ran


def test_a_failing_run_is_listed_and_the_others_kept(tmp_path):
    res = report.run_sweep(FIXTURE, {"grid": {"fail": [False, True]}}, tmp_path, workers=2)
    assert len(res.table) == 1 and not res.table.iloc[0]["fail"]
    assert len(res.failures) == 1 and "asked to fail" in res.failures[0]["error"]
    assert "asked to fail" in res.html.read_text()
    assert json.loads((tmp_path / "failures.json").read_text())[0]["params"] == {"fail": True}


# Ray's dashboard probes cloud metadata servers at start-up even with usage stats off; the
# guard blocks those probes (they never leave the machine) and only they are excused here.
@pytest.mark.allow_blocked_network("169.254.169.254", "metadata.google.internal")
@pytest.mark.slow
def test_the_same_sweep_runs_on_a_local_ray_instance(tmp_path):
    import ray

    try:
        _check_table(report.run_sweep(FIXTURE, SPEC, tmp_path, ray_address="local"))
    finally:
        ray.shutdown()


def test_a_kernel_that_fails_to_start_gets_one_more_try(monkeypatch, tmp_path):
    from deploylab.report import sweep

    calls = []

    def flaky(nb, params, out, **kw):
        calls.append(params)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return real(nb, params, out, **kw)

    real = sweep.execute
    monkeypatch.setattr(sweep, "execute", flaky)
    ok = sweep._task(FIXTURE.read_text(), FIXTURE.name, str(tmp_path), {"size": 3}, False)
    assert ok["error"] is None and "results.json" in ok["files"] and len(calls) == 2
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: 1 / 0)
    bad = sweep._task(FIXTURE.read_text(), FIXTURE.name, str(tmp_path), {"size": 3}, False)
    assert bad["error"].startswith("ZeroDivisionError") and bad["files"] == {}


def test_parallel_runs_share_the_cores(monkeypatch, tmp_path):
    from deploylab.report import sweep

    seen = []
    monkeypatch.setattr(sweep, "_run_local", lambda jobs, n: seen.extend(jobs) or [
        {"params": j[3], "error": "stop here", "files": {}} for j in jobs])
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    report.run_sweep(FIXTURE, {"grid": {"size": [1, 2, 3, 4]}}, tmp_path, workers=4)
    assert {job[-1] for job in seen} == {2}  # 8 cores / 4 workers
