"""Looking at failures: one row per true line, image grids of the worst ones, and an
ipywidgets viewer that pages through them.

Example:
    >>> lines = line_table(evaluation)            # truth, read, cer, conditions per line
    >>> failure_grid(evaluation, lines[lines.cer > 0].head(8))
    >>> failure_viewer(evaluation, lines[lines.cer > 0])
"""

from __future__ import annotations

import numpy as np

from .engine import crop_quad, pad_quad
from .metrics import edit_distance, joined_lines

__all__ = ["failure_grid", "failure_viewer", "line_table", "show_image"]


def line_table(evaluation):
    """One row per true line: image, line, truth, read (end to end), cer, words_ok, and
    the image's conditions (size, font, background, rotation_deg, blur_px, ...)."""
    import pandas as pd

    rows = []
    for i, (s, r) in enumerate(zip(evaluation.samples, evaluation.results, strict=True)):
        read = joined_lines(list(r.boxes), r.texts, [line.quad for line in s.lines])
        for j, (line, got) in enumerate(zip(s.lines, read, strict=True)):
            truth = line.text
            rows.append({"image": i, "line": j, "truth": truth, "read": got,
                         "cer": edit_distance(got, truth) / max(1, len(truth)),
                         "detected": bool(got), **{k: v for k, v in s.meta.items()
                                                   if k not in ("seed", "strength")}})
    return pd.DataFrame(rows)


def _shown(text: str) -> str:
    """Text as the grid prints it: characters beyond Latin and Greek (the recognizer's CJK
    guesses) become a visible marker instead of a missing-glyph warning."""
    return "".join(c if ord(c) < 0x400 else "\u00bf" for c in text)


def failure_grid(evaluation, rows, *, ncols: int = 2, title: str | None = None):
    """Crops of the given lines (rows of `line_table`) with the true and the read text
    (a read character outside the Latin and Greek alphabets shows as an inverted question
    mark).

    Returns:
        matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    rows = rows.reset_index(drop=True)
    n = max(1, len(rows))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 1.25 * nrows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, row in rows.iterrows():
        s = evaluation.samples[int(row["image"])]
        crop = crop_quad(s.image, pad_quad(s.lines[int(row["line"])].quad, 0.4))
        ax = axes.flat[k]
        ax.imshow(crop)
        ax.set_title(f"true: {row['truth']}\nread: {_shown(row['read']) or '(not detected)'}",
                     fontsize=7.5, loc="left", family="monospace")
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def show_image(sample, result=None, ax=None):
    """One benchmark image with its true boxes (green) and the predicted ones (red)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    ax = ax or plt.subplots(figsize=(6.4, 4.8))[1]
    ax.imshow(sample.image)
    for line in sample.lines:
        ax.add_patch(Polygon(line.quad, fill=False, ec="lime", lw=1.2))
    if result is not None:
        for box in result.boxes:
            ax.add_patch(Polygon(box, fill=False, ec="red", lw=1, ls="--"))
    ax.axis("off")
    m = sample.meta
    ax.set_title(f"{m['font']} {m['size']} px, {m['background']}, rotated "
                 f"{m['rotation_deg']:.1f} deg, blur {m['blur_px']:.1f}", fontsize=8)
    return ax


def failure_viewer(evaluation, rows):
    """An ipywidgets pager over failing lines: the whole image with boxes, the true and the
    read text, the conditions. (Needs a live kernel; a static notebook shows page one.)"""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    rows = rows.reset_index(drop=True)
    out = w.Output()
    slider = w.IntSlider(0, 0, max(0, len(rows) - 1), description="failure")

    def draw(change=None):
        out.clear_output(wait=True)
        if rows.empty:
            return
        row = rows.iloc[slider.value]
        i = int(row["image"])
        with out:
            _, ax = plt.subplots(figsize=(6.4, 4.8))
            show_image(evaluation.samples[i], evaluation.results[i], ax)
            plt.show()
            print(f"true: {row['truth']}\nread: {row['read'] or '(not detected)'}\n"
                  f"cer {row['cer']:.2f} | size {row['size']} px | {row['font']} | "
                  f"{row['background']} | rotation {row['rotation_deg']:.1f} deg")

    slider.observe(draw, names="value")
    draw()
    return w.VBox([slider, out])
