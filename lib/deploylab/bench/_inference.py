"""Shared pieces of the inference suites (export, quantize, cnn-quantize): the MiniLM
setup, sentence feeds, mean-pooled fidelity, and timing that keeps slow variants from
stalling the interleaved rounds of the fast ones."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import measure
from . import Variant

MODEL = "all-MiniLM-L6-v2"
SLOW_MS = 400.0  # a first call slower than this is timed alone, within a budget
# ONNX Runtime sessions here spin (its default): each variant is timed in blocks of BLOCK
# calls with a rest after (measure.SPIN_SETTLE_S), so no variant's spinning threads steal
# another's cores.
BLOCK = 10
TIMING = (f"interleaved rounds; each variant {BLOCK} calls in a row per round (one untimed "
          f"first), {measure.SPIN_SETTLE_S * 1e3:.0f} ms rest between; ONNX Runtime threads "
          "spin, as by default")


@dataclass
class Setup:
    """Everything an encoder suite needs, built once."""

    tokenizer: object
    model: object  # transformers' default attention (SDPA): the torch-fp32 baseline
    timing_feed: dict  # batch x seq, padded to seq: the shape that is timed
    quality_feeds: list  # real sentences, dynamic padding
    batch: int
    seq: int
    sentences: int
    threads: int


def encoder_setup(smoke: bool, *, sentences: int = 200, threads: int = 2) -> Setup:
    """MiniLM with its tokenizer, a timing feed (batch 1, 128 tokens; 16 in smoke mode)
    and quality feeds over real sentences (standard-library docstrings)."""
    import torch

    from .. import assets
    from ..quantize import encoder_feeds

    torch.set_num_threads(threads)
    tokenizer, model = assets.load_encoder(MODEL)
    seq = 16 if smoke else 128
    n = 16 if smoke else sentences
    docs = [d["doc"] for d in assets.stdlib_docstrings()]
    texts = docs[:: max(1, len(docs) // n)][:n]
    timing = encoder_feeds(tokenizer, texts[:1], max_length=seq, pad_to_max=True)[0]
    quality = encoder_feeds(tokenizer, texts, batch_size=16, max_length=seq)
    return Setup(tokenizer, model, timing, quality, 1, seq, len(texts), threads)


def pooled(run: Callable[[dict], np.ndarray], feeds: list) -> np.ndarray:
    """Mean-pooled, L2-normalized sentence embeddings (all-MiniLM-L6-v2's recipe)."""
    from ..quantize import _embeddings

    return _embeddings(run, feeds)


def torch_runner(model, *, autocast: bool = False) -> Callable[[dict], np.ndarray]:
    import torch

    def run(feeds: dict) -> np.ndarray:
        ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
               else contextlib.nullcontext())
        with torch.inference_mode(), ctx:
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return out.last_hidden_state.float().numpy()

    return run


def time_all(calls: dict[str, Callable[[], object]], *, repeats: int, max_time_s: float,
             batch: int = 1, block: int = BLOCK, apart: Sequence[str] = ()
             ) -> tuple[dict[str, measure.Timing], set[str]]:
    """Fast variants interleaved in one `measure.compare`, `repeats` rounds of `block`
    calls each (see BLOCK); a variant whose first call is slower than SLOW_MS (bf16
    without hardware support, torch int8 without fast kernels) is timed alone within
    `max_time_s` so it cannot dominate the shared rounds. Variants named in `apart` are not
    called at all until the shared rounds are over, then timed alone: torch's bf16
    autocast slows the torch fp32 calls after it by ~25% on this machine, which would
    flatter every ratio to an fp32 baseline.

    Returns:
        (timings, names timed alone)
    """
    later = {k: calls[k] for k in apart if k in calls}
    calls = {k: fn for k, fn in calls.items() if k not in later}
    for fn in calls.values():  # first calls pay for lazy initialisation: not a measurement
        fn()
    first = {k: measure._once_ms(fn) for k, fn in calls.items()}
    fast = {k: fn for k, fn in calls.items() if first[k] < SLOW_MS}
    timings = measure.compare(fast, warmup=2, repeats=repeats, batch_size=batch, block=block,
                              max_time_s=max_time_s) if fast else {}
    slow = set(calls) - set(fast)
    for k in slow:
        timings[k] = measure.time_fn(calls[k], warmup=0, repeats=repeats, name=k,
                                     max_time_s=max_time_s, batch_size=batch)
    for k, fn in later.items():
        timings[k] = measure.time_fn(fn, warmup=2, repeats=repeats * block, name=k,
                                     max_time_s=max_time_s, batch_size=batch)
    return timings, slow | set(later)


def variant(name: str, timing: measure.Timing | None, *, size_bytes: int | None,
            quality: dict | None, baseline_p50: float | None, **extra) -> Variant:
    """A bench row; speedup is baseline p50 / this p50, from the same run."""
    if timing is None:
        return Variant(name, size_mb=None if size_bytes is None else size_bytes / 1e6,
                       quality=quality, extra=extra)
    extra = {"latency_ms_p99": timing.p99, "repeats": len(timing.samples_ms),
             "speedup_vs_baseline": (baseline_p50 / timing.p50) if baseline_p50 else None,
             **extra}
    return Variant(name, latency_ms_p50=timing.p50, latency_ms_p90=timing.p90,
                   throughput_per_s=timing.throughput_per_s,
                   size_mb=None if size_bytes is None else size_bytes / 1e6,
                   quality=quality, extra=extra)


def skipped(name: str, reason: str, quality_metric: str) -> Variant:
    """A variant that cannot run here: null figures and the reason."""
    return Variant(name, quality={"metric": quality_metric, "value": None}, skipped=reason)


def target(variant: str, metric: str, op: str, threshold: float, value: float | None) -> dict:
    """One target of the issue, with its measured value and whether it was met."""
    met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
    return {"variant": variant, "metric": metric, "op": op, "threshold": threshold,
            "value": value, "met": met}


def cpu_note() -> str:
    """Why int8 and bf16 are (not) faster here, from the CPU's flags."""
    return " ".join(measure.describe_cpu())


def torch_call(model, feed: dict, *, threads: int) -> Callable[[], object]:
    """A zero-argument call of a torch encoder on `feed` with `threads` intra-op threads
    (set on every call: torch's pool is process-wide, so variants can be interleaved)."""
    import torch

    tensors = {k: torch.from_numpy(v) for k, v in feed.items()}

    def call():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(**tensors)

    return call
