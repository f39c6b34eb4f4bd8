"""MiniLM int8 served on Ray Serve: dynamic batching vs none vs the in-process ceiling."""

from __future__ import annotations

import os

import numpy as np

from .. import measure
from . import BenchResult, Variant

CONCURRENCY = 16
WAIT_S = 0.005  # dynamic batching's wait for a batch to fill
BATCH = 16


def _in_process(spec, texts: list[str], threads: int, smoke: bool):
    """The same runner the server uses, called directly: rows/s at each batch size."""
    from ..serve.protocol import InferRequest

    runner = spec.build(threads)

    def call(b: int):
        req = InferRequest(None, {"text": np.array(texts[:b], dtype=object)}, ["embedding"], b)
        return lambda: runner.run([runner.prepare(req)])

    sizes = (1, 8, 16, 32)
    timings = measure.compare({f"b{b}": call(b) for b in sizes}, warmup=2,
                              repeats=5 if smoke else 15, batch_size={f"b{b}": b for b in sizes},
                              max_time_s=2 if smoke else 8)
    return runner, timings


def _batch_stats(text: str) -> tuple[float, float]:
    """(batches, rows) so far, from the server's batch-size histogram."""
    from ..serve import monitor

    count = sum(v for _, v in monitor.samples(text, "deploylab_batch_size_count"))
    rows = sum(v for _, v in monitor.samples(text, "deploylab_batch_size_sum"))
    return count, rows


def _served(server, bodies, duration_s: float, rounds: int) -> tuple[dict, str]:
    """Closed-loop runs of the served variants, alternated over `rounds` so that drift of
    this shared machine hits all alike. The batching variants talk to the replica directly
    (Serve's direct ingress) where it has its own endpoint; `dynamic-batching-proxy` goes
    through Serve's proxy, to show what that hop costs."""
    from ..serve import load

    direct = server.replica_urls()
    url = direct[0] if direct else server.url
    configs = {"no-batching": (1, 0.0, url), "dynamic-batching": (BATCH, WAIT_S, url)}
    if direct:
        configs["dynamic-batching-proxy"] = (BATCH, WAIT_S, server.url)
    records: dict[str, list] = {k: [] for k in configs}
    batches = dict.fromkeys(configs, (0.0, 0.0))
    client = server.client()
    for _ in range(rounds):
        for name, (size, wait, target) in configs.items():
            server.configure(max_batch_size=size, batch_wait_timeout_s=wait)
            load.closed_loop(target, "minilm", bodies, concurrency=CONCURRENCY,
                             duration_s=1.0)  # warm-up after the change
            before = _batch_stats(client.metrics())
            res = load.closed_loop(target, "minilm", bodies, concurrency=CONCURRENCY,
                                   duration_s=duration_s)
            after = _batch_stats(client.metrics())
            records[name].append(res)
            b, r = batches[name]
            batches[name] = (b + after[0] - before[0], r + after[1] - before[1])
    client.close()
    endpoint = "replica (direct ingress)" if direct else "proxy"
    return {k: (v, batches[k]) for k, v in records.items()}, endpoint


def _merged(results) -> dict:
    from ..serve.load import LoadResult

    merged = LoadResult("closed", sum(r.duration_s for r in results),
                        [rec for r in results for rec in r.records], concurrency=CONCURRENCY)
    return merged.summary()


def run(smoke: bool = False) -> BenchResult:
    """Variants `no-batching` (baseline: max batch 1), `dynamic-batching` (max batch 16,
    5 ms wait), `dynamic-batching-proxy` (the same through Serve's proxy, when the replica
    has its own endpoint) and `in-process` (the same runner called directly at its best
    batch size: the ceiling). 16 closed-loop clients send one query (8-32 tokens) per request to one
    replica with all cores; throughput is queries/s, latency per request (ms) including
    HTTP; quality is the worst cosine of each variant's embeddings to fp32 in-process ones.
    """
    from ..serve import load, start, zoo

    duration, rounds = (2.0, 1) if smoke else (8.0, 2)
    threads = os.cpu_count() or 1
    texts = zoo.queries(64 if smoke else 256)
    int8 = zoo.minilm_specs(["int8"])[0]
    fp32 = zoo.minilm_specs(["fp32"])[0]
    sample = texts[:32]
    from ..serve.protocol import InferRequest

    ref_runner = fp32.build(threads)
    req = InferRequest(None, {"text": np.array(sample, dtype=object)}, ["embedding"], 32)
    reference = ref_runner.run([ref_runner.prepare(req)])[0]["embedding"]
    del ref_runner
    runner, timings = _in_process(int8, texts, threads, smoke)
    best = max(timings.values(), key=lambda t: t.throughput_per_s)
    inproc_emb = runner.run([runner.prepare(req)])[0]["embedding"]
    del runner
    bodies = [load.text_request(t) for t in texts]
    with start(int8, num_replicas=1, threads=threads) as server:
        served, endpoint = _served(server, bodies, duration, rounds)
        served_emb = server.client().embed("minilm", sample)
    leftovers = server.leftovers
    quality = {name: float(measure.cosine(reference, emb).min())
               for name, emb in (("served", served_emb), ("in-process", inproc_emb))}
    base = _merged(served["no-batching"][0])
    variants = []
    for name, (results, (batches, rows)) in served.items():
        s = _merged(results)
        variants.append(Variant(
            name=name, latency_ms_p50=s["latency_ms_p50"], latency_ms_p90=s["latency_ms_p90"],
            throughput_per_s=s["throughput_per_s"], size_mb=os.path.getsize(int8.model) / 1e6,
            quality={"metric": "cosine_to_fp32_min", "value": quality["served"]},
            extra={"latency_ms_p99": s["latency_ms_p99"], "requests": s["requests"],
                   "errors": s["errors"], "errors_by_status": s["errors_by_status"],
                   "endpoint": "proxy" if name.endswith("-proxy") else endpoint,
                   "concurrency": CONCURRENCY, "max_batch_size": 1 if name == "no-batching"
                   else BATCH, "batch_wait_ms": 0.0 if name == "no-batching" else WAIT_S * 1e3,
                   "mean_batch_size": rows / batches if batches else None,
                   "speedup_vs_baseline": s["throughput_per_s"] / base["throughput_per_s"],
                   "p99_vs_baseline": s["latency_ms_p99"] / base["latency_ms_p99"],
                   "fraction_of_in_process": s["throughput_per_s"] / best.throughput_per_s}))
    variants.append(Variant(
        name="in-process", latency_ms_p50=best.p50, latency_ms_p90=best.p90,
        throughput_per_s=best.throughput_per_s, size_mb=os.path.getsize(int8.model) / 1e6,
        quality={"metric": "cosine_to_fp32_min", "value": quality["in-process"]},
        extra={"latency_ms_p99": best.p99, "requests": len(best.samples_ms), "errors": 0,
               "batch_size": best.batch_size, "latency_unit": "one batch call",
               "throughput_by_batch": {t.batch_size: t.throughput_per_s
                                       for t in timings.values()},
               "speedup_vs_baseline": best.throughput_per_s / base["throughput_per_s"]}))
    dyn = next(v for v in variants if v.name == "dynamic-batching").extra
    targets = {"throughput_vs_no_batching": dyn["speedup_vs_baseline"],
               "p99_vs_no_batching": dyn["p99_vs_baseline"],
               "fraction_of_in_process": dyn["fraction_of_in_process"],
               "errors": sum(v.extra["errors"] for v in variants)}
    targets["met"] = bool(targets["throughput_vs_no_batching"] >= 1.5
                          and targets["p99_vs_no_batching"] <= 2.0
                          and targets["fraction_of_in_process"] >= 0.6
                          and targets["errors"] == 0)
    return BenchResult(
        suite="serve", smoke=smoke, hardware=measure.fingerprint(), baseline="no-batching",
        variants=variants,
        extra={"model": "all-MiniLM-L6-v2 ONNX int8 (dynamic)", "replicas": 1,
               "threads_per_replica": threads, "duration_s_per_run": duration,
               "rounds": rounds, "query_tokens": [8, 32], "endpoint": endpoint,
               "targets": targets,
               "clean_shutdown": leftovers == [], "leftovers": leftovers})
