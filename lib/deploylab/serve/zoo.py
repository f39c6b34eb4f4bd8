"""Ready-made servables: all-MiniLM-L6-v2 as ONNX, fp32 (version "1") and dynamic int8
(version "2"), produced with `deploylab.export` and `deploylab.quantize` and cached under
`deploylab.cache_dir("serve")`, so the second call costs nothing.

Example:
    >>> from deploylab.serve import zoo
    >>> specs = zoo.minilm_specs()              # [ModelSpec minilm:1 (fp32), minilm:2 (int8)]
    >>> zoo.minilm_onnx("int8")                 # the file itself
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..settings import cache_dir
from .models import ModelSpec

__all__ = ["MINILM", "VERSIONS", "minilm_onnx", "minilm_specs", "queries", "token_counts"]

MINILM = "all-MiniLM-L6-v2"
VERSIONS = {"fp32": "1", "int8": "2"}  # the rollout story: v2 is the quantized candidate


def minilm_onnx(precision: str = "int8") -> Path:
    """The MiniLM encoder as an ONNX file (fused by ONNX Runtime's transformer optimizer;
    int8: dynamic quantization with the preset for this CPU).

    Args:
        precision (str, default "int8"): "fp32" or "int8".

    Returns:
        Path: the cached file (built on first use: about a minute on 2 cores).
    """
    if precision not in VERSIONS:
        raise ValueError(f"precision must be one of {list(VERSIONS)}, got {precision!r}")
    folder = cache_dir("serve")
    target = folder / f"minilm-{precision}.onnx"
    if target.is_file():
        return target
    from .. import export

    fp32 = folder / "minilm-fp32.onnx"
    if not fp32.is_file():
        raw = export.export_onnx(MINILM, export.ExportConfig(overwrite=False))
        opt = export.optimize_onnx(raw, out=folder / ".minilm-fp32.opt.onnx")
        shutil.move(opt, fp32)  # same folder: an atomic rename
    if precision == "fp32":
        return fp32
    from .. import quantize as q

    tmp = folder / ".minilm-int8.building.onnx"
    q.quantize(fp32, q.DynamicInt8Config(path=tmp))
    shutil.move(tmp, target)
    return target


def minilm_specs(precisions=("fp32", "int8"), *, name: str = "minilm", **options
                 ) -> list[ModelSpec]:
    """ModelSpecs of MiniLM versions: fp32 is version "1", int8 version "2".

    Args:
        precisions (Iterable[str], default ("fp32", "int8")): which versions.
        name (str, default "minilm"): the model name in URLs.
        **options: further `ModelSpec` fields (max_batch_size, batch_wait_timeout_s,
            max_length).

    Returns:
        list[ModelSpec]: text models (BYTES in, 384-dim unit embeddings out).
    """
    return [ModelSpec(name, VERSIONS[p], minilm_onnx(p), tokenizer=MINILM, **options)
            for p in precisions]


def queries(n: int, *, min_tokens: int = 8, max_tokens: int = 32, kind: str = "doc",
            skip: int = 0) -> list[str]:
    """Realistic search queries from this Python's standard library, offline.

    Args:
        n (int): how many.
        min_tokens, max_tokens (int, default 8 and 32): MiniLM tokens per query.
        kind (str, default "doc"): "doc" (first sentences of docstrings: what users ask)
            or "signature" (function signatures: code-like text, for drift experiments).
        skip (int, default 0): skip this many matching records first (a disjoint window).

    Returns:
        list[str]: at most n texts, always the same on one Python version.
    """
    from transformers import AutoTokenizer

    from .. import assets

    if kind not in ("doc", "signature"):
        raise ValueError(f"kind must be 'doc' or 'signature', got {kind!r}")
    tok = AutoTokenizer.from_pretrained(assets.resolve_model(MINILM)).backend_tokenizer
    tok.no_padding()  # the saved tokenizer pads to 128: count real tokens only
    tok.no_truncation()
    out: list[str] = []
    for rec in assets.stdlib_docstrings():
        text = (rec["doc"].split("\n\n")[0] if kind == "doc" else rec.get("signature") or "")
        text = " ".join(text.split())
        if text and min_tokens <= len(tok.encode(text).ids) <= max_tokens:
            if skip:
                skip -= 1
                continue
            out.append(text)
            if len(out) == n:
                break
    return out


def token_counts(texts) -> list[int]:
    """MiniLM tokens per text (with [CLS] and [SEP]): what the server's limit counts."""
    from transformers import AutoTokenizer

    from .. import assets

    tok = AutoTokenizer.from_pretrained(assets.resolve_model(MINILM)).backend_tokenizer
    tok.no_padding()
    tok.no_truncation()
    return [len(e.ids) for e in tok.encode_batch(list(texts))]
