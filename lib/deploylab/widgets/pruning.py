"""A sparsity slider: magnitude-prune a copy of a model and see quality and size move.

Each position of the slider prunes a fresh copy of the model (the original is never
changed), evaluates it with the function you give, and writes the sparse file to measure its
size; results are memoized, so going back is instant. `sweep` computes the same figures for a
list of sparsities without widgets (it is what the notebook plots and what the tests check).

Example:
    >>> from deploylab.widgets.pruning import pruning_explorer
    >>> pruning_explorer(model, lambda m: cnn.accuracy(m, data), metric="accuracy")
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["pruning_explorer", "point", "sweep"]


def point(model, evaluate: Callable[[object], float], sparsity: float, *,
          scope: str = "layer") -> dict:
    """Quality and sizes of `model` magnitude-pruned to `sparsity` (on a copy).

    Returns:
        dict: sparsity, quality, dense_mb (the unpruned safetensors file), sparse_mb (the
        compressed file), size_ratio.
    """
    from .. import measure, prune

    pruned = prune.clone(model)
    prune.prune_(pruned, prune.MagnitudeConfig(sparsity, scope))
    with tempfile.TemporaryDirectory() as tmp:
        dense = measure.size_on_disk(prune.save_dense(model, Path(tmp) / "d.safetensors"))
        sparse = measure.size_on_disk(prune.save_sparse(pruned, Path(tmp) / "s.safetensors"))
    return {"sparsity": sparsity, "quality": float(evaluate(pruned)),
            "dense_mb": dense / prune.MB, "sparse_mb": sparse / prune.MB,
            "size_ratio": sparse / dense}


def sweep(model, evaluate: Callable[[object], float],
          sparsities: Sequence[float] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95), *,
          scope: str = "layer"):
    """`point` for each sparsity, as a pandas DataFrame (one row per sparsity)."""
    import pandas as pd

    return pd.DataFrame([point(model, evaluate, s, scope=scope) for s in sparsities])


def pruning_explorer(model, evaluate: Callable[[object], float], *, metric: str = "quality",
                     sparsities: Sequence[float] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
                     scope: str = "layer"):
    """A slider over `sparsities`; each position shows quality, file sizes and a plot of
    every point visited so far.

    Args:
        model (torch.nn.Module): the model to prune (copies are pruned, never it).
        evaluate (Callable[[nn.Module], float]): the quality figure, higher is better.
        metric (str, default "quality"): its name, for the labels.
        sparsities (Sequence[float]): slider positions, each in [0, 1).
        scope (str, default "layer"): "layer" or "global" magnitude ranking.

    Returns:
        ipywidgets.VBox: display it (it is the cell's last expression in a notebook).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from .. import prune

    for s in sparsities:
        prune.MagnitudeConfig(s, scope)  # validates every position before drawing anything
    seen: dict[float, dict] = {}
    slider = w.SelectionSlider(options=list(sparsities), value=sparsities[0],
                               description="sparsity", continuous_update=False)
    text, plot = w.HTML(), w.Output()

    def show(change=None) -> None:
        s = slider.value
        if s not in seen:
            seen[s] = point(model, evaluate, s, scope=scope)
        p = seen[s]
        text.value = (f"<b>{s:.0%} zeros</b>: {metric} {p['quality']:.4f}; file "
                      f"{p['sparse_mb']:.3f} MB sparse vs {p['dense_mb']:.3f} MB dense "
                      f"({p['size_ratio']:.2f}x). Latency in a dense runtime: unchanged.")
        plot.clear_output(wait=True)
        with plot:
            _draw(sorted(seen.values(), key=lambda r: r["sparsity"]), metric)
            plt.show()

    slider.observe(show, names="value")
    show()
    return w.VBox([slider, text, plot])


def _draw(rows: list[dict], metric: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    xs = [r["sparsity"] for r in rows]
    ax.plot(xs, [r["quality"] for r in rows], "o-", color="tab:blue", label=metric)
    ax.set(xlabel="sparsity", ylabel=metric, xlim=(-0.02, 1.0))
    ax2 = ax.twinx()
    ax2.plot(xs, [r["size_ratio"] for r in rows], "s--", color="tab:orange",
             label="file size / dense")
    ax2.set(ylabel="file size / dense", ylim=(0, 1.2))
    fig.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
