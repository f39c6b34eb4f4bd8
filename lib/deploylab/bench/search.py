"""Semantic search over the Python docs: fp32 baseline vs int8, a distilled student and
quantized indexes, query latency end to end.

Every variant answers the same held-out queries (qualified name and signature of a test-split
function, `cases.search.labelled_queries`) over the whole standard-library corpus (~6,100
docstrings): tokenize, embed, look up the top 10. Latency is per query (batch 1, 2 threads),
timed interleaved over a cycle of real queries. Quality: recall@10 (and MRR@10) on every
held-out query; the hand-written query set is scored beside it.
Variants: `baseline-fp32` (torch, exact fp32 index), `int8` (ONNX Runtime int8 encoder,
exact index), `student-int8` (3-layer distilled student, ONNX Runtime int8, exact index),
`student-int8-binary-index` (the same with 1-bit codes and float rescoring), and for the
picture `student-fp32`, `student-int8-int8-index`, `student-int8-hnsw`.
Targets: student-int8 >= 5x faster than the baseline at >= 97% of its recall@10; the binary
index >= 25x smaller than the fp32 index at >= 95% of the baseline's recall@10.
"""

from __future__ import annotations

from .. import measure
from ..cases.retrieval_eval import target
from . import BenchResult, Variant

THREADS = 2
# (variant, encoder, index)
VARIANTS = [("baseline-fp32", "fp32", "exact"), ("int8", "int8", "exact"),
            ("student-fp32", "student-fp32", "exact"), ("student-int8", "student-int8", "exact"),
            ("student-int8-int8-index", "student-int8", "int8"),
            ("student-int8-binary-index", "student-int8", "binary"),
            ("student-int8-hnsw", "student-int8", "hnsw")]


def _engines(smoke: bool):
    from .. import assets
    from ..cases import search

    queries = search.labelled_queries(16 if smoke else None)
    hand = search.handwritten_queries()
    keep = queries.answer_ids | hand.answer_ids
    docs = search.corpus(300, keep=keep) if smoke else search.corpus()
    teacher = assets.load_encoder(search.MODEL)
    encoders = {kind: search.build_encoder(kind, teacher=teacher, threads=THREADS, smoke=smoke)
                for kind in dict.fromkeys(e for _, e, _ in VARIANTS)}
    vectors = {k: search.embed_corpus(e, docs, progress=not smoke) for k, e in encoders.items()}
    engines = {name: search.SearchEngine(encoders[enc], search.make_index(index), docs,
                                         vectors=vectors[enc])
               for name, enc, index in VARIANTS}
    return engines, queries, hand, docs


def run(smoke: bool = False) -> BenchResult:
    import torch

    with torch.no_grad():
        engines, queries, hand, docs = _engines(smoke)
        quality = {k: e.evaluate(queries) for k, e in engines.items()}
        hand_quality = {k: e.evaluate(hand) for k, e in engines.items()}
        timed = queries.queries[:200]
        calls = {k: e.query_call(timed) for k, e in engines.items()}
        with measure.threads(THREADS):
            timings = measure.compare(calls, warmup=3 if smoke else 20,
                                      repeats=5 if smoke else 400, max_time_s=60)
            memory = {k: measure.peak_memory(fn).peak_mb for k, fn in calls.items()}
    base = engines["baseline-fp32"]
    base_t, base_r = timings["baseline-fp32"].p50, quality["baseline-fp32"]["recall@10"]
    base_index = base.index.nbytes
    variants = []
    for name, engine in engines.items():
        t, q = timings[name], quality[name]
        enc_mb, index_mb = engine.encoder.size_bytes() / 1e6, engine.index.nbytes / 1e6
        variants.append(Variant(
            name=name, latency_ms_p50=t.p50, latency_ms_p90=t.p90,
            throughput_per_s=t.throughput_per_s, size_mb=enc_mb + index_mb,
            peak_rss_mb=memory[name],
            quality={"metric": "recall@10", "value": q["recall@10"], "mrr@10": q["mrr@10"],
                     "recall@1": q["recall@1"], "recall@5": q["recall@5"],
                     "queries": len(queries), "documents": len(docs),
                     "task": "held-out name+signature -> docstring, whole stdlib corpus"},
            extra={"latency_ms_p99": t.p99, "speedup_vs_baseline": base_t / t.p50,
                   "quality_vs_baseline": q["recall@10"] / base_r if base_r else None,
                   "encoder": engine.encoder.name, "runtime": engine.encoder.backend,
                   "index": engine.index.kind, "encoder_mb": enc_mb, "index_mb": index_mb,
                   "index_vs_baseline": engine.index.nbytes / base_index,
                   "handwritten_recall@10": hand_quality[name]["recall@10"],
                   "handwritten_mrr@10": hand_quality[name]["mrr@10"]}))
    by = {v.name: v for v in variants}
    s8, b8 = by["student-int8"].extra, by["student-int8-binary-index"].extra
    targets = [
        target("student-int8", speedup=(s8["speedup_vs_baseline"], 5.0, "min"),
                recall_ratio=(s8["quality_vs_baseline"], 0.97, "min")),
        target("student-int8-binary-index",
                index_smaller=(1 / b8["index_vs_baseline"], 25.0, "min"),
                recall_ratio=(b8["quality_vs_baseline"], 0.95, "min")),
    ]
    return BenchResult(
        suite="search", smoke=smoke, hardware=measure.fingerprint(), baseline="baseline-fp32",
        variants=variants,
        extra={"model": "all-MiniLM-L6-v2", "batch_size": 1, "threads": THREADS,
               "k": 10, "documents": len(docs), "queries": len(queries),
               "handwritten_queries": len(hand), "quality_metric": "recall@10",
               "latency": "per query, end to end: tokenize, embed, top-10 lookup",
               "targets": targets, "cpu": " ".join(measure.describe_cpu())})
