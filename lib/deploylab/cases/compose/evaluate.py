"""The variants side by side: each a generator (prompt ids -> `Generation`) with the model it
runs, measured the same way: time to first token, tokens per second for a fixed number of
new tokens at batch 1 (timed interleaved), peak memory, size, held-out perplexity and
next-line exact match / character accuracy on held-out completion tasks.

Example:
    >>> variants = build_variants(pair, names=("naive-fp32", "kv-cache-fp32"))
    >>> table, details = compare(variants, pair.tokenizer, tasks, windows, timing_prompts)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ... import measure
from .data import CompletionTask
from .generate import kv_cache, line_quality, naive, perplexity, speculative
from .runtime import OnnxDecoder, export_decoder, int8_dynamic, model_size_mb, weight_only

__all__ = ["ALL_VARIANTS", "ISSUE_VARIANTS", "Variant", "build_variants", "compare"]

ISSUE_VARIANTS = ("naive-fp32", "kv-cache-fp32", "kv-cache-int8", "speculative-int8")
ALL_VARIANTS = (*ISSUE_VARIANTS, "speculative-int8-torch", "speculative-fp32",
                "weight-only-int8", "weight-only-int4", "onnx-fp32", "onnx-int8",
                "onnx-weight-only-int4")


@dataclass
class Variant:
    """One way of generating: `generate(prompt_ids, max_new_tokens, stop=None)`, the model
    whose perplexity it has (None: not measurable that way), its size, what it is, or why it
    cannot run here (`skipped`)."""

    name: str
    generate: Callable | None
    ppl_model: object | None
    size_mb: float | None
    what: str
    skipped: str | None = None


def _onnx_ppl(decoder: OnnxDecoder):
    """A stand-in with `model(input_ids=...).logits` over the ONNX graph (empty past)."""
    import torch

    class _Out:
        def __init__(self, logits):
            self.logits = logits

    def call(input_ids, use_cache=False):
        rows = [decoder.new_cache().logits(row) for row in input_ids.numpy()]
        return _Out(torch.from_numpy(np.stack(rows)))  # the graph's batch is 1
    return call


def build_variants(pair, names: Sequence[str] = ISSUE_VARIANTS, *, k: int = 4,
                   threads: int = 2) -> dict[str, Variant]:
    """The named variants of the pair's target (and draft).

    Args:
        pair (ModelPair): trained target and draft.
        names (Sequence[str], default ISSUE_VARIANTS): from `ALL_VARIANTS`.
        k (int, default 4): draft tokens per round for the speculative variants.
        threads (int, default 2): ONNX Runtime threads.

    Returns:
        dict[str, Variant]: in the order asked; a variant that cannot run here has `skipped`.
    """
    from ...quantize import BackendUnsupportedError

    t, d = pair.target, pair.draft
    fp32_mb, draft_mb = model_size_mb(t), model_size_mb(d)
    int8 = int8_dynamic(t) if any(n in ("kv-cache-int8", "speculative-int8-torch")
                                  for n in names) else None
    ctx = t.config.max_position_embeddings

    @functools.cache  # one session per file: speculative-int8 and onnx-int8 share the target
    def decoder(path) -> OnnxDecoder:
        return OnnxDecoder(path, threads=threads, context=ctx)

    out: dict[str, Variant] = {}
    for name in names:
        if name == "naive-fp32":
            out[name] = Variant(name, functools.partial(naive, t), t, fp32_mb,
                                "fp32, no cache: the whole sequence recomputed per token")
        elif name == "kv-cache-fp32":
            out[name] = Variant(name, functools.partial(kv_cache, t), t, fp32_mb,
                                "fp32 with a key/value cache")
        elif name == "kv-cache-int8":
            out[name] = Variant(name, functools.partial(kv_cache, int8), int8,
                                model_size_mb(int8), "int8 dynamic (fbgemm) with the cache")
        elif name == "speculative-int8":
            # the deployed form: both models as ONNX Runtime sessions, the target int8
            t_path, d_path = export_decoder(t, int8=True), export_decoder(d)
            out[name] = Variant(name, functools.partial(
                speculative, decoder(t_path), decoder(d_path), k=k),
                _onnx_ppl(decoder(t_path)), (t_path.stat().st_size + d_path.stat().st_size) / 1e6,
                f"ONNX Runtime: the int8 target verifies {k} fp32 draft tokens per call")
        elif name == "speculative-int8-torch":
            out[name] = Variant(name, functools.partial(speculative, int8, d, k=k), int8,
                                model_size_mb(int8) + draft_mb,
                                f"torch: the int8 target verifies {k} fp32 draft tokens per call")
        elif name == "speculative-fp32":
            out[name] = Variant(name, functools.partial(speculative, t, d, k=k), t,
                                fp32_mb + draft_mb, f"fp32 target, {k} draft tokens per call")
        elif name.startswith("weight-only-int"):
            bits = int(name[-1])
            try:
                wo = weight_only(t, bits)
                out[name] = Variant(name, functools.partial(kv_cache, wo), wo,
                                    model_size_mb(wo), f"torchao int{bits} weight-only, cache")
            except BackendUnsupportedError as e:
                out[name] = Variant(name, None, None, None, f"torchao int{bits} weight-only",
                                    skipped=str(e))
        elif name.startswith("onnx-"):
            bits = 4 if name == "onnx-weight-only-int4" else None
            path = export_decoder(t, int8=name == "onnx-int8", weight_only_bits=bits)
            dec = decoder(path)
            out[name] = Variant(name, dec.greedy, _onnx_ppl(dec), path.stat().st_size / 1e6,
                                "ONNX Runtime greedy loop with past key/values" +
                                {"onnx-int8": ", int8 dynamic MatMuls",
                                 "onnx-weight-only-int4": ", int4 weight-only MatMulNBits"
                                 }.get(name, ""))
        else:
            raise ValueError(f"unknown variant {name!r}; known: {', '.join(ALL_VARIANTS)}")
    return out


def compare(variants: dict[str, Variant], tok, tasks: Sequence[CompletionTask],
            windows: np.ndarray, timing_prompts: Sequence[Sequence[int]], *,
            new_tokens: int = 32, repeats: int = 3, warmup: int = 1, baseline: str = "naive-fp32",
            progress: bool = False):
    """Measure every runnable variant.

    Speed: each timing prompt generates exactly `new_tokens` tokens (no stop), every variant
    once per round in shuffled order (`measure.compare`); p50/p90 of the per-prompt time,
    tokens/s = new_tokens / p50, time to first token p50.

    Returns:
        tuple: (pandas.DataFrame indexed by variant, dict name -> details incl. completions).
    """
    import pandas as pd

    live = {n: v for n, v in variants.items() if v.skipped is None}
    state = {n: 0 for n in live}
    ttft: dict[str, list[float]] = {n: [] for n in live}
    accept: dict[str, list[float]] = {n: [] for n in live}

    def timed(name: str):
        def call():
            prompt = timing_prompts[state[name] % len(timing_prompts)]
            state[name] += 1
            g = live[name].generate(prompt, new_tokens)
            ttft[name].append(g.ttft_ms)
            if g.acceptance_rate is not None:
                accept[name].append(g.acceptance_rate)
        return call

    rounds = repeats * len(timing_prompts)
    timings = measure.compare({n: timed(n) for n in live}, warmup=warmup, repeats=rounds)
    rows, details = [], {}
    for name, v in variants.items():
        if v.skipped:
            rows.append({"variant": name, "what": v.what, "skipped": v.skipped})
            continue
        gen = v.generate
        mem = measure.peak_memory(lambda g=gen: g(timing_prompts[0], new_tokens)).peak_mb
        q = line_quality(lambda p, n, stop=None, g=gen: g(p, n, stop=stop), tok, tasks,
                         new_tokens, progress=progress)
        ppl = perplexity(v.ppl_model, windows) if v.ppl_model is not None else None
        t = timings[name]
        row = {"variant": name, "what": v.what, "latency_ms_p50": t.p50,
               "latency_ms_p90": t.p90, "tokens_per_s": new_tokens / (t.p50 / 1e3),
               "ttft_ms_p50": float(np.median(ttft[name][warmup:] or ttft[name])),
               "peak_rss_mb": mem, "size_mb": v.size_mb, "perplexity": ppl,
               "exact_match": q["exact_match"], "char_accuracy": q["char_accuracy"],
               "acceptance_rate": float(np.mean(accept[name])) if accept[name] else None,
               "line_acceptance_rate": q["acceptance_rate"], "skipped": None}
        rows.append(row)
        details[name] = {**row, "completions": q["completions"], "timing": t}
    table = pd.DataFrame(rows).set_index("variant")
    if baseline in details:
        base = details[baseline]
        table["speedup_vs_baseline"] = table["tokens_per_s"] / base["tokens_per_s"]
        # None when the baseline gets no line right (tiny smoke models): no ratio to take
        table["exact_match_vs_baseline"] = (table["exact_match"] / base["exact_match"]
                                            if base["exact_match"] else None)
    return table, details
