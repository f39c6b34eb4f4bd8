"""The case study as a report: `deploylab report` on the search notebook in smoke mode, with
parameters, gives the HTML page and the published trade-off table and recommendation."""

import pytest

from deploylab import project_root
from deploylab.report import run_notebook

pytestmark = pytest.mark.slow
NOTEBOOK = project_root() / "casestudies" / "nlp_search" / "search.ipynb"


def test_the_search_report_runs_in_smoke_mode(tmp_path):
    # a cell bound, as nbval's: once, papermill waited 20 min on a cell (the search box) the
    # kernel had finished, and the run would have hung CI to its limit
    res = run_notebook(NOTEBOOK, {"smoke": True, "index": "int8", "latency_budget_ms": 1000.0},
                       tmp_path / "report", cell_timeout=900)
    assert res.html.is_file() and res.html.stat().st_size > 50_000  # plots embedded
    tables, figures = res.results["tables"], res.results["figures"]
    pipelines = {row["pipeline"] for row in tables["results"]}
    assert {"baseline-fp32", "int8", "student-int8", "student-int8-int8-index"} <= pipelines
    assert [r["pipeline"] for r in tables["baseline_vs_optimized"]] == [
        "baseline-fp32", "student-int8-int8-index"]
    assert figures["recommended"] in pipelines  # a 1 s budget: every pipeline fits
    assert figures["latency_budget_ms"] == 1000.0
