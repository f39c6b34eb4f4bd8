"""An explorer for chapter 03: bit width, granularity and symmetry vs quantization error.

Example:
    >>> from deploylab.widgets.quantization import quantization_explorer
    >>> quantization_explorer(weight)        # any 2-D array: a layer's weight matrix
"""

from __future__ import annotations

import numpy as np

__all__ = ["demo_weight", "error_table", "quantization_explorer"]


def demo_weight(seed: int = 0, rows: int = 64, cols: int = 256) -> np.ndarray:
    """A weight-like matrix: Gaussian rows of different scales and one outlier channel,
    the shape of trouble real transformer weights have."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w *= rng.uniform(0.2, 1.5, (rows, 1)).astype(np.float32)
    w[rows // 3] *= 12.0
    return w


def error_table(x, bits=(2, 3, 4, 6, 8), granularities=("tensor", "channel", "block"), *,
                symmetric: bool = True, block_size: int = 32):
    """Relative RMS error and SQNR of quantizing `x` at each bit width and granularity.

    Returns:
        pandas.DataFrame: one row per (bits, granularity).
    """
    import pandas as pd

    from ..quantize import quant_error

    rows = [{"granularity": g, **quant_error(x, b, symmetric=symmetric, granularity=g,
                                             block_size=block_size)}
            for b in bits for g in granularities]
    return pd.DataFrame(rows)


def _draw(x, bits: int, granularity: str, symmetric: bool, ax_hist, ax_err):
    from ..quantize import quant_error, quantize_tensor

    r = quantize_tensor(x, bits, symmetric=symmetric, granularity=granularity)
    flat = np.asarray(x).reshape(-1)
    ax_hist.hist(flat, bins=120, color="tab:blue", alpha=0.6, label="float")
    ax_hist.hist(r["dequantized"].reshape(-1), bins=120, color="tab:orange", alpha=0.6,
                 label=f"int{bits} (dequantized)")
    ax_hist.set(yscale="log", xlabel="value", ylabel="count",
                title=f"{bits}-bit, per {granularity}, {'symmetric' if symmetric else 'affine'}")
    ax_hist.legend(fontsize=8)
    err = np.abs(r["error"]).reshape(np.asarray(x).shape[0], -1).mean(axis=1)
    ax_err.bar(np.arange(len(err)), err, color="tab:red")
    ax_err.set(xlabel="output channel (row)", ylabel="mean |error|",
               title="error per channel")
    return quant_error(x, bits, symmetric=symmetric, granularity=granularity)


def quantization_explorer(x=None):
    """Sliders for bit width, granularity and symmetry over a weight matrix: the histogram of
    float vs quantized values, the error per channel, and the SQNR.

    Args:
        x (np.ndarray | torch.Tensor | None, default None): a 2-D weight (rows = output
            channels); `demo_weight()` if None.

    Returns:
        ipywidgets.VBox: display it (a notebook shows it when it is the cell's value).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    arr = demo_weight() if x is None else (
        x.detach().float().numpy() if hasattr(x, "detach") else np.asarray(x, np.float32))
    if arr.ndim != 2:
        raise ValueError(f"the explorer takes a 2-D weight matrix, got shape {arr.shape}")
    bits = w.IntSlider(value=8, min=2, max=8, description="bits")
    gran = w.ToggleButtons(options=["tensor", "channel", "block"], value="tensor",
                           description="per")
    sym = w.Checkbox(value=True, description="symmetric")
    out = w.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
            e = _draw(arr, bits.value, gran.value, sym.value, a, b)
            fig.suptitle(f"relative RMS error {e['rel_rms_error']:.4f}, SQNR "
                         f"{e['sqnr_db']:.1f} dB, {e['scales']} scale(s)", fontsize=10)
            fig.tight_layout()
            plt.show()

    for control in (bits, gran, sym):
        control.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([bits, sym]), gran, out])
