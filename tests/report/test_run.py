import json
from pathlib import Path

import pytest

from deploylab import report
from deploylab.report import ReportError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_report.ipynb"


def test_notebook_parameters_have_types():
    params = report.notebook_parameters(FIXTURE)
    assert {n: p["type"] for n, p in params.items()} == {
        "size": "int", "speed": "float", "fail": "bool", "label": "str"}


def test_unknown_parameter_is_refused_with_the_real_ones():
    with pytest.raises(ReportError, match=r"unknown parameter\(s\) sise.*size \(int\)"):
        report.check_parameters(FIXTURE, {"sise": 3})


@pytest.mark.parametrize("params", [{"size": "big"}, {"size": True}, {"fail": 1},
                                    {"speed": "fast"}, {"label": 3}])
def test_wrong_types_are_refused(params):
    name = next(iter(params))
    with pytest.raises(ReportError, match=f"parameter {name} .* expects"):
        report.check_parameters(FIXTURE, params)


def test_an_int_is_a_valid_float():
    assert report.check_parameters(FIXTURE, {"speed": 2}) == {"speed": 2}


@pytest.mark.parametrize(("path", "match"), [("missing.ipynb", "does not exist"),
                                             (__file__, "not a notebook")])
def test_bad_notebook_paths(path, match):
    with pytest.raises(ReportError, match=match):
        report.run_notebook(path, {}, "unused")


def test_run_writes_notebook_html_and_results(tmp_path):
    res = report.run_notebook(FIXTURE, {"size": 3, "speed": 2.0}, tmp_path / "out")
    assert res.ok and res.notebook.is_file()
    page = res.html.read_text()
    assert "data:image/png;base64" in page and "asked to fail" in page  # code shown
    row = res.results["tables"]["results"][0]
    assert row["latency_ms_p50"] == pytest.approx(15.0)
    assert res.results["figures"] == {"speed": 2.0}
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == res.results
    assert (tmp_path / "out" / "kernel.log").is_file()  # the kernel's messages, not ours


def test_no_input_hides_the_code(tmp_path):
    res = report.run_notebook(FIXTURE, {}, tmp_path, no_input=True)
    assert "asked to fail" not in res.html.read_text()


def test_failing_cell_keeps_the_partial_notebook_and_names_the_cell(tmp_path):
    with pytest.raises(ReportError, match=r"cell \d+ .*RuntimeError: asked to fail"):
        report.run_notebook(FIXTURE, {"fail": True}, tmp_path)
    executed = tmp_path / FIXTURE.name
    assert executed.is_file() and executed.with_suffix(".html").is_file()
    assert not (tmp_path / "results.json").exists()
