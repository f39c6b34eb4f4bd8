"""Warm the cache before a workshop: build every dataset and train every model once.

Each step calls the same cached function the notebooks call, so what it builds is exactly
what they will load. A step that finds its files already in the cache builds nothing and
says so; whether it built anything is read from the cache folder itself (files added or
changed), not assumed.

Example:
    >>> from deploylab import prefetch
    >>> prefetch.run()          # about 30 minutes on 2 cores the first time, seconds after
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import DeploylabError
from .settings import cache_dir

__all__ = ["STEPS", "PrefetchError", "Step", "run"]


class PrefetchError(DeploylabError):
    """An unknown step was asked for, or a step failed."""


@dataclass(frozen=True)
class Step:
    """One thing to build: `build()` is the cached function the notebooks use."""

    name: str
    what: str
    build: Callable[[], object]


def _stdlib():
    from . import assets

    return assets.path("stdlib-docstrings")


def _cnn():
    from . import cnn

    return cnn.pretrained_cnn()


def _serving_models():
    from .serve import zoo

    return [zoo.minilm_onnx(p) for p in ("fp32", "int8")]


def _student():
    from . import distill

    return distill.minilm_student()


def _pruned():
    from . import prune

    return [prune.minilm_pruned("structured", 0.4), prune.minilm_pruned("unstructured", 0.9)]


def _search():
    # Like the CLI, prefetch is an entry point: it may call into a case study.
    from .cases import search

    return search.prefetch()


def _ocr():
    from .cases import ocr

    return ocr.prefetch()


def _compose():
    from .cases import compose

    return compose.prefetch()


def _speech():
    from .cases import speech

    return speech.prefetch()


def _reveal():
    from . import workshop

    return workshop.fetch_reveal()


STEPS = [
    Step("stdlib-docstrings", "the docstring corpus and its labelled tasks", _stdlib),
    Step("digits-cnn", "the digits CNN (quantization, pruning, distillation chapters)", _cnn),
    Step("minilm-onnx", "all-MiniLM-L6-v2 as fused ONNX, fp32 and int8 (export, serving)",
         _serving_models),
    Step("minilm-student", "the 3-layer distilled MiniLM student (distillation chapter)",
         _student),
    Step("minilm-pruned", "MiniLM pruned 40% structured and 90% unstructured (pruning)",
         _pruned),
    Step("search-encoders", "the NLP search case study's encoders and corpus embeddings",
         _search),
    Step("ocr", "the OCR case study's benchmark images, fused graphs and int8 models", _ocr),
    Step("compose", "the code-completion case study's tokenizer, target and draft models, "
         "ONNX decoders", _compose),
    Step("speech", "the speech case study's synthesized data set, teacher, student and int8 "
         "student", _speech),
    Step("reveal-js", "reveal.js for the slides, so they work without network (downloads)",
         _reveal),
]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


def run(names: list[str] | None = None, *, progress: bool = True) -> list[dict]:
    """Run the steps (all, or those named) in order.

    Args:
        names (list[str] | None, default None): step names; None runs every step.
        progress (bool, default True): print one line per step as it finishes.

    Returns:
        list[dict]: per step: name, status ("built" or "cached"), seconds, files written.

    Raises:
        PrefetchError: for an unknown name (before anything runs) or a failing step (after
            the steps before it have finished; rerunning continues from the cache).
    """
    known = {s.name: s for s in STEPS}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise PrefetchError(f"unknown prefetch step(s) {unknown}; known: {', '.join(known)}")
    rows = []
    for step in [known[n] for n in names] if names else STEPS:
        before = _snapshot(cache_dir())
        t0 = time.perf_counter()
        try:
            step.build()
        except Exception as e:
            raise PrefetchError(f"prefetch step {step.name!r} failed: {type(e).__name__}: {e}"
                                ) from e
        seconds = time.perf_counter() - t0
        after = _snapshot(cache_dir())
        written = sum(1 for f, sig in after.items() if before.get(f) != sig)
        rows.append({"step": step.name, "status": "built" if written else "cached",
                     "seconds": round(seconds, 1), "files_written": written,
                     "what": step.what})
        if progress:
            print(f"{step.name:18} {rows[-1]['status']:6} {seconds:7.1f} s  "
                  f"{written} file(s) written", flush=True)
    return rows
