"""File helpers every module shares: nothing is ever left half-written, JSON is always valid."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_atomic", "to_jsonable"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside `path` (same suffix, so writers that read it keep
    working); it is renamed into place only if the block succeeds, so a reader (or a crash)
    never sees a half-written file. Side files a writer adds next to it are removed too."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in out.parent.glob(f".{out.stem}.tmp{os.getpid()}*"):
            extra.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to `path` through `atomic_path`: complete or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


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
