import json
import math

import numpy as np
import pandas as pd
import pytest

from deploylab import report


def test_publish_outside_a_report_checks_and_does_nothing(monkeypatch):
    monkeypatch.delenv(report.REPORT_DIR_ENV, raising=False)
    assert report.publish({"a": 1}) is None
    with pytest.raises(TypeError, match="DataFrame, a dict"):
        report.publish("not a table")


def test_publish_merges_tables_and_figures(monkeypatch, tmp_path):
    monkeypatch.setenv(report.REPORT_DIR_ENV, str(tmp_path))
    table = pd.DataFrame({"p50": [1.5, math.nan]}, index=pd.Index(["fp32", "int8"], name="v"))
    report.publish(table, figures={"speedup": np.float64(2.0)})
    out = report.publish([{"n": np.int64(3)}], name="extra", figures={"threads": 2})
    data = json.loads(out.read_text())
    assert data["tables"]["results"] == [{"v": "fp32", "p50": 1.5}, {"v": "int8", "p50": None}]
    assert data["tables"]["extra"] == [{"n": 3}]
    assert data["figures"] == {"speedup": 2.0, "threads": 2}
    assert [p.name for p in tmp_path.iterdir()] == [report.RESULTS_FILE]


def test_publish_rejects_an_empty_name(monkeypatch, tmp_path):
    monkeypatch.setenv(report.REPORT_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="table name"):
        report.publish({"a": 1}, name="")
