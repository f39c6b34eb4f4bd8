"""A search box that asks several search pipelines the same question and shows their
answers side by side, with each one's latency.

`side_by_side` builds the same table without widgets (what the notebook prints for the
committed outputs and what the tests check).

Example:
    >>> from deploylab.widgets.search import search_box
    >>> search_box({"baseline": engine_fp32, "optimized": engine_int8})
"""

from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = ["search_box", "side_by_side"]


def side_by_side(engines: Mapping, query: str, k: int = 5):
    """Each engine's top `k` for `query`: rank rows, "<engine>" (id) and "<engine> score"
    columns; `.attrs["latency_ms"]` holds each engine's time for this query.

    Returns:
        pandas.DataFrame
    """
    import pandas as pd

    columns, latency = {}, {}
    for name, engine in engines.items():
        start = time.perf_counter()
        hits = engine.search(query, k)
        latency[name] = (time.perf_counter() - start) * 1e3
        columns[name] = [h.id for h in hits]
        columns[f"{name} score"] = [round(h.score, 3) for h in hits]
    table = pd.DataFrame(columns, index=pd.RangeIndex(1, k + 1, name="rank"))
    table.attrs["latency_ms"] = latency
    return table


def search_box(engines: Mapping, *, k: int = 5, value: str = "read a csv file"):
    """A text box; on Enter every engine answers and the results appear side by side.

    Args:
        engines (Mapping[str, SearchEngine]): name -> engine.
        k (int, default 5): results per engine.
        value (str, default "read a csv file"): the first query.

    Returns:
        ipywidgets.VBox
    """
    import ipywidgets as w
    from IPython.display import display

    box = w.Text(value=value, description="query", layout=w.Layout(width="60%"),
                 continuous_update=False)
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            try:
                table = side_by_side(engines, box.value, k)
            except Exception as e:  # a bad query is shown, never raised into the widget
                print(f"error: {e}")
                return
            print("   ".join(f"{n}: {ms:.1f} ms" for n, ms in table.attrs["latency_ms"].items()))
            display(table)

    box.observe(show, names="value")
    show()
    return w.VBox([box, out])
