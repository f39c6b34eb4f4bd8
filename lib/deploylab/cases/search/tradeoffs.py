"""The search case study's trade-offs: every pipeline measured the same way, the Pareto
front of latency against recall, the recommendation within a latency budget, and how exact
and approximate indexes scale with the corpus.

Example:
    >>> table = measure_pipelines(engines, queries, repeats=300)
    >>> recommend(table, budget_ms=5.0)["pipeline"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from ... import measure
from .data import QuerySet, SearchError
from .engine import SearchEngine
from .indexes import make_index

__all__ = ["measure_pipelines", "recommend", "scaling"]


def measure_pipelines(engines: Mapping[str, SearchEngine], queries: QuerySet, *,
                      repeats: int = 300, warmup: int = 20, timed: int = 200,
                      threads: int = 2):
    """Quality and per-query latency of every engine, timed interleaved (`measure.compare`).

    Args:
        engines (Mapping[str, SearchEngine]): pipeline name -> engine.
        queries (QuerySet): labelled queries; all are scored, the first `timed` are timed.
        repeats (int, default 300): timed queries per pipeline.
        warmup (int, default 20): untimed queries first.
        timed (int, default 200): distinct queries cycled through while timing.
        threads (int, default 2): intra-op threads while timing.

    Returns:
        pandas.DataFrame: one row per pipeline: encoder, index, latency_ms_p50/p90,
        recall@1/@10, mrr@10, index_mb, encoder_mb, pareto (on the front of p90 latency
        against recall@10).
    """
    import pandas as pd

    from ...report.sweep import pareto_front

    if not engines:
        raise SearchError("measure_pipelines() needs at least one engine")
    calls = {k: e.query_call(queries.queries[:timed]) for k, e in engines.items()}
    with measure.threads(threads):
        timings = measure.compare(calls, warmup=warmup, repeats=repeats, max_time_s=120)
    rows = []
    for name, e in engines.items():
        m = e.evaluate(queries)
        rows.append({"pipeline": name, "encoder": e.encoder.name, "index": e.index.kind,
                     "latency_ms_p50": timings[name].p50, "latency_ms_p90": timings[name].p90,
                     "recall@1": m["recall@1"], "recall@10": m["recall@10"],
                     "mrr@10": m["mrr@10"], "index_mb": e.index.nbytes / 1e6,
                     "encoder_mb": e.encoder.size_bytes() / 1e6})
    table = pd.DataFrame(rows)
    table["pareto"] = pareto_front(table, {"latency_ms_p90": "min", "recall@10": "max"})
    return table


def recommend(table, budget_ms: float, *, latency: str = "latency_ms_p90",
              quality: str = "recall@10"):
    """The pipeline with the best quality whose latency fits the budget (ties: the faster).

    Args:
        table (pandas.DataFrame): from `measure_pipelines`.
        budget_ms (float): the latency budget per query.
        latency (str, default "latency_ms_p90"): the latency column judged (p90: what most
            users feel, not the median).
        quality (str, default "recall@10"): the quality column maximized.

    Returns:
        pandas.Series: the chosen row, or None when no pipeline fits the budget.
    """
    if not (isinstance(budget_ms, (int, float)) and budget_ms > 0):
        raise SearchError(f"budget_ms must be a positive number, got {budget_ms!r}")
    fits = table[table[latency] <= budget_ms]
    if fits.empty:
        return None
    return fits.sort_values([quality, latency], ascending=[False, True]).iloc[0]


def scaling(vectors: np.ndarray, sizes, *, queries: int = 200, k: int = 10, seed: int = 0,
            kinds=("exact", "hnsw"), noise: float = 0.4):
    """How lookup time and recall move with the corpus size, for each index kind.

    Corpora larger than the real one are made from its vectors: each synthetic document is a
    real one plus Gaussian noise, renormalized, so the neighbourhood structure stays
    realistic. Recall is against exact search on the same corpus (the index's own loss, not
    the encoder's); queries are held-out perturbations of real vectors.

    Args:
        vectors (np.ndarray): (N, dim) real unit document vectors.
        sizes (Sequence[int]): corpus sizes to try.
        queries (int, default 200): queries per size.
        k (int, default 10): results per query.
        seed (int, default 0): noise seed.
        kinds (Sequence[str], default ("exact", "hnsw")): index kinds.
        noise (float, default 0.4): noise norm relative to a unit vector.

    Returns:
        pandas.DataFrame: size, index, build_s, lookup_ms_p50 (one query), recall@k vs exact,
        index_mb.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    v = np.asarray(vectors, np.float32)

    def synth(n):
        base = v[rng.integers(0, len(v), n)]
        x = base + noise / np.sqrt(v.shape[1]) * rng.standard_normal(base.shape, np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    q = synth(queries)
    rows = []
    for n in sizes:
        docs = synth(int(n))
        truth = make_index("exact").add(docs).search(q, k)[1]
        for kind in kinds:
            start = time.perf_counter()
            index = make_index(kind).add(docs)
            build = time.perf_counter() - start
            got = index.search(q, k)[1]
            t = measure.time_fn(lambda i=index: i.search(q[:1], k), warmup=3, repeats=30)
            rows.append({"size": int(n), "index": kind, "build_s": build,
                         "lookup_ms_p50": t.p50, f"recall@{k}_vs_exact": float(np.mean(
                             [len(set(a) & set(b)) / k for a, b in zip(truth, got, strict=True)])),
                         "index_mb": index.nbytes / 1e6})
    return pd.DataFrame(rows)
