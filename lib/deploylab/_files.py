"""File helpers every module shares: nothing is ever left half-written, JSON is always valid."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["write_atomic", "to_jsonable"]


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to a hidden temporary file beside `path`, then rename it into place, so a
    reader (or a crash) never sees a half-written file."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def to_jsonable(obj):
    """Plain JSON values from numpy/pandas scalars and containers; NaN and inf become None
    (JSON has neither)."""
    if hasattr(obj, "item") and not isinstance(obj, (list, dict, str)) and getattr(
            obj, "ndim", 0) == 0:
        obj = obj.item()  # numpy scalar
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy array
        return to_jsonable(obj.tolist())
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)
