"""A code box that asks several completion models for the rest of the line and shows their
suggestions side by side, with each one's time to first token and total latency.

`side_by_side` builds the same table without widgets (what the notebook prints for the
committed outputs and what the tests check).

Example:
    >>> from deploylab.widgets.compose import completion_box
    >>> completion_box({"baseline": partial(naive, target), "optimized": fast}, tokenizer)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["completion_box", "side_by_side"]


def side_by_side(generators: Mapping[str, Callable], tok, code: str, max_new_tokens: int = 32):
    """Each generator's completion of the line after `code`.

    Args:
        generators (Mapping[str, Callable]): name -> `generate(prompt_ids, max_new_tokens,
            stop=...)` (a loop of `deploylab.cases.compose` with its models bound).
        tok: the models' tokenizer.
        code (str): the code before the cursor (its last line break is where the suggestion
            starts; long code keeps its last tokens).
        max_new_tokens (int, default 32): at most this many tokens per suggestion.

    Returns:
        pandas.DataFrame: one row per generator: suggestion, new_tokens, ttft_ms, total_ms.
    """
    import pandas as pd

    from ..cases.compose import newline_id
    from ..cases.compose.data import ComposeError

    if not code:
        raise ComposeError("type some code first: the suggestion continues it")
    ids, nl, rows = tok.encode(code).ids, newline_id(tok), []
    for name, gen in generators.items():
        g = gen(ids, max_new_tokens, stop=nl, truncate=True)
        new = g.ids[0]
        rows.append({"model": name, "suggestion": tok.decode(new[:-1] if new and new[-1] == nl
                                                             else new),
                     "new_tokens": len(new), "ttft_ms": round(g.ttft_ms, 1),
                     "total_ms": round(g.total_ms, 1)})
    return pd.DataFrame(rows).set_index("model")


def completion_box(generators: Mapping[str, Callable], tok, *, max_new_tokens: int = 32,
                   value: str = "import os\n\n\ndef list_python_files(folder):\n"):
    """A code area; on change (or the button) every generator suggests the next line.

    Returns:
        ipywidgets.VBox
    """
    import ipywidgets as w
    from IPython.display import display

    box = w.Textarea(value=value, description="code", continuous_update=False,
                     layout=w.Layout(width="80%", height="140px"))
    button = w.Button(description="complete")
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            try:
                display(side_by_side(generators, tok, box.value, max_new_tokens))
            except Exception as e:  # a bad prompt is shown, never raised into the widget
                print(f"error: {e}")

    box.observe(show, names="value")
    button.on_click(show)
    show()
    return w.VBox([box, button, out])
