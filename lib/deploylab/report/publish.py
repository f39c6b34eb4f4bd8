"""The hand-off from a notebook to the report runner: one call, one JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._files import to_jsonable, write_atomic

__all__ = ["publish", "read_results", "to_jsonable", "RESULTS_FILE", "REPORT_DIR_ENV"]

RESULTS_FILE = "results.json"
REPORT_DIR_ENV = "DEPLOYLAB_REPORT_DIR"  # set by the runner for the notebook's kernel


def _rows(table) -> list[dict]:
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        frame = table if isinstance(table.index, pd.RangeIndex) else table.reset_index()
        return [to_jsonable(r) for r in frame.to_dict(orient="records")]
    if isinstance(table, dict):
        return [to_jsonable(table)]
    if isinstance(table, (list, tuple)) and all(isinstance(r, dict) for r in table):
        return [to_jsonable(r) for r in table]
    raise TypeError("publish() takes a pandas DataFrame, a dict (one row) or a list of dicts, "
                    f"not {type(table).__name__}")


def publish(table, *, name: str = "results", figures: dict | None = None) -> Path | None:
    """Hand a results table (and key figures) to `deploylab report`.

    When the notebook runs under `deploylab report` (which sets DEPLOYLAB_REPORT_DIR), the
    table is merged into that folder's results.json, written atomically; interactively this
    does nothing but check the table, so the same notebook works both ways.

    Args:
        table (DataFrame | dict | list[dict]): the rows; a DataFrame's index becomes a column.
        name (str, default "results"): the table's name; several tables may be published.
        figures (dict | None, default None): key scalar figures ({"speedup": 2.1, ...}).

    Returns:
        Path | None: the results file, or None when not running under a report.
    """
    rows = _rows(table)
    if not isinstance(name, str) or not name:
        raise ValueError(f"table name must be a non-empty string, got {name!r}")
    folder = os.environ.get(REPORT_DIR_ENV)
    if not folder:
        return None
    out = Path(folder) / RESULTS_FILE
    data = read_results(out) or {"tables": {}, "figures": {}}
    data["tables"][name] = rows
    data["figures"].update(to_jsonable(figures or {}))
    return write_atomic(out, json.dumps(data, indent=2) + "\n")


def read_results(path: str | os.PathLike) -> dict | None:
    """The published results in a file, or None if nothing was published."""
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None
