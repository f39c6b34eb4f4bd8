"""MiniLM int8 served on Ray Serve: dynamic batching vs none vs the in-process ceiling."""

from __future__ import annotations

import itertools
import os

import numpy as np

from .. import measure
from . import BenchResult, Variant

CONCURRENCY = 16
WAIT_S = 0.005  # dynamic batching's wait for a batch to fill
BATCH = 16


def _in_process(runner, single, texts: list[str], smoke: bool) -> dict:
    """The same runner the server uses, called directly: rows/s at each batch size, with
    the cores shared two ways: `in-process`, one call at a time on every core's intra-op
    thread (`runner`), and `in-process-per-core`, one one-thread call per core at once
    (`single`, None on one core), timed per call. Returns {layout: {rows per call: Timing}}.

    Each call takes the next `b` queries in turn, cycling through all of them as the clients
    do: a batch is padded to its longest query, so timing one fixed batch would time one
    padded length (the first 16 queries pad to 17 tokens; batches of 16 in turn to 21 on
    average, and up to 32)."""
    from concurrent.futures import ThreadPoolExecutor

    def call(r, b: int, start: int = 0):
        chunks = itertools.cycle([texts[i:i + b] for i in range(start, len(texts) - b + 1, b)])
        return lambda: r.infer({"text": next(chunks)})

    cores = os.cpu_count() or 1
    one_call = {b: f"b{b}" for b in (1, 8, 16, 32)}  # rows per call -> timing name
    fns = {key: call(runner, b) for b, key in one_call.items()}
    rows = {key: b for b, key in one_call.items()}
    layouts = {"in-process": one_call, "in-process-per-core": {}}
    calls_per_sample = {}
    with ThreadPoolExecutor(cores) as pool:
        if single is not None:
            # ONNX Runtime's threads meet at every operator; on a model this small with
            # short queries that costs more than it shares, and independent one-thread
            # calls, one per core, go faster. Each sample runs 16 rows per core, so that
            # the pool's hand-off at the end of a sample (a barrier) stays small
            for b in (1, 4, 8):
                k, key = 16 // b, f"b{b}x{cores}"
                calls = [call(single, b, i) for i in range(cores)]
                fns[key] = lambda calls=calls, k=k: list(
                    pool.map(lambda f: [f() for _ in range(k)], calls))
                rows[key], calls_per_sample[key] = b * cores, k
                layouts["in-process-per-core"][b] = key
        timings = measure.compare(fns, warmup=2, repeats=5 if smoke else 15, batch_size=rows,
                                  max_time_s=2 if smoke else 6)
    # per-core samples as the time of one call on each core, so rows/s reads the same
    for key, k in calls_per_sample.items():
        t = timings[key]
        timings[key] = measure.Timing(key, [ms / k for ms in t.samples_ms], t.batch_size)
    return {name: {b: timings[key] for b, key in keys.items()}
            for name, keys in layouts.items() if keys}


def _served(server, bodies, duration_s: float, rounds: int, batch: int,
            suffix: str = "") -> tuple[dict, str]:
    """Closed-loop runs of the served variants, alternated over `rounds` so that drift of
    this shared machine hits all alike. The batching variants talk to the replicas directly
    (Serve's direct ingress, clients spread over them) where they have their own endpoints;
    `dynamic-batching-proxy` goes through Serve's proxy, to show what that hop costs."""
    from ..serve import load
    from ..serve.monitor import batch_totals

    direct = server.replica_urls()
    url = direct or server.url
    configs = {f"no-batching{suffix}": (1, 0.0, url),
               f"dynamic-batching{suffix}": (batch, WAIT_S, url)}
    if direct and not suffix:
        configs["dynamic-batching-proxy"] = (batch, WAIT_S, server.url)
    records: dict[str, list] = {k: [] for k in configs}
    stats = {k: np.zeros(3) for k in configs}  # batches, rows, model seconds
    client = server.client()
    for _ in range(rounds):
        for name, (size, wait, target) in configs.items():
            server.configure(max_batch_size=size, batch_wait_timeout_s=wait)
            load.closed_loop(target, "minilm", bodies, concurrency=CONCURRENCY,
                             duration_s=1.0)  # warm-up after the change
            before = batch_totals(client.metrics())
            res = load.closed_loop(target, "minilm", bodies, concurrency=CONCURRENCY,
                                   duration_s=duration_s)
            after = batch_totals(client.metrics())
            records[name].append(res)
            stats[name] += after - before
    client.close()
    endpoint = "replica (direct ingress)" if direct else "proxy"
    return {k: (v, stats[k]) for k, v in records.items()}, endpoint


def _merged(results) -> dict:
    from ..serve.load import LoadResult

    merged = LoadResult("closed", sum(r.duration_s for r in results),
                        [rec for r in results for rec in r.records], concurrency=CONCURRENCY)
    return merged.summary()


def _targets(by_name: dict, suffix: str) -> dict:
    dyn = by_name[f"dynamic-batching{suffix}"]
    t = {"throughput_vs_no_batching": dyn["speedup_vs_baseline"],
         "p99_vs_no_batching": dyn["p99_vs_baseline"],
         "fraction_of_in_process": dyn["fraction_of_in_process"],
         "fraction_of_best_in_process": dyn["fraction_of_best_in_process"],
         "errors": sum(by_name[f"{k}{suffix}"]["errors"]
                       for k in ("no-batching", "dynamic-batching"))}
    t["met"] = bool(t["throughput_vs_no_batching"] >= 1.5 and t["p99_vs_no_batching"] <= 2.0
                    and t["fraction_of_in_process"] >= 0.6 and t["errors"] == 0)
    # the same, judged against the best in-process split of the cores (not the issue's)
    t["met_against_best_in_process"] = bool(t["met"]
                                            and t["fraction_of_best_in_process"] >= 0.6)
    return t


def run(smoke: bool = False) -> BenchResult:
    """Three deployments of the same model, each measured with and without batching:

    - one replica, one model call at a time on every core: variants `no-batching`
      (baseline: max batch 1), `dynamic-batching` (max batch 16, 5 ms wait) and
      `dynamic-batching-proxy` (the same through Serve's proxy, when the replica has its
      own endpoint);
    - one replica with a worker per core (`-workers`): one-thread calls on each core at
      once, sharing one copy of the weights, max batch 16 / cores;
    - one replica per core, one thread each (`-per-core`), the 16 clients spread over the
      replicas' own endpoints, max batch 16 / replicas;

    and `in-process`: the same runner called directly with every core at its best batch
    size, the issue's ceiling (`fraction_of_in_process`, `targets`), and
    `in-process-per-core`: one one-thread call per core at once, at its best batch size,
    often faster on a small model (`fraction_of_best_in_process` is against the faster of
    the two); each timed before the servers start and again after they stop, pooled
    (`ceiling_before_after` has each). 16 closed-loop clients send one query (8-32 tokens)
    per request; throughput is queries/s, latency per request (ms) including HTTP; quality
    is the worst cosine of each variant's embeddings to fp32 in-process ones. `model_busy`
    is the share of a served run each worker's model spent computing (from the server's
    inference-time histogram), and `model_rows_per_s` how fast it computed meanwhile, so
    throughput = model_busy x replicas x workers x model_rows_per_s: the first says how long
    the model waits between batches, the second how much slower it runs beside Ray's own
    processes than alone (`in-process`, which tokenizes too: `in-process`'s
    `throughput_by_batch` for one replica, `in-process-per-core`'s / cores for one worker of
    the others). `targets` judges each deployment against its own baseline (`one_replica`,
    `workers`, `per_core`).
    """
    from ..serve import load, start, zoo

    duration, rounds = (2.0, 1) if smoke else (8.0, 2)
    threads = os.cpu_count() or 1
    texts = zoo.queries(64 if smoke else 256)
    int8 = zoo.minilm_specs(["int8"])[0]
    fp32 = zoo.minilm_specs(["fp32"])[0]
    sample = texts[:32]
    reference = fp32.build(threads).infer({"text": sample})["embedding"]
    # built once, timed before the servers start and again after they stop
    runner, single = int8.build(threads), int8.build(1) if threads > 1 else None
    before = _in_process(runner, single, texts, smoke)
    inproc_emb = runner.infer({"text": sample})["embedding"]
    bodies = [load.text_request(t) for t in texts]
    # (suffix, replicas, workers per replica, threads per worker, max batch): a batch fills
    # with the clients that one worker serves
    deployments = [("", 1, 1, threads, BATCH)]
    if threads > 1:
        per_core_batch = max(1, CONCURRENCY // threads)
        deployments += [("-workers", 1, threads, 1, per_core_batch),
                        ("-per-core", threads, 1, 1, per_core_batch)]
    size_mb = os.path.getsize(int8.model) / 1e6
    variants, extras, leftovers = [], {}, []
    for suffix, replicas, workers, per_worker, batch in deployments:
        with start(int8, num_replicas=replicas, workers=workers, threads=per_worker) as server:
            runs, endpoint = _served(server, bodies, duration, rounds, batch, suffix)
            emb = server.client().embed("minilm", sample, batch_size=batch)
        leftovers += server.leftovers
        quality = float(measure.cosine(reference, emb).min())
        base = _merged(runs[f"no-batching{suffix}"][0])
        for name, (results, (batches, rows, model_s)) in runs.items():
            s = _merged(results)
            unbatched = name.startswith("no-batching")
            extras[name] = {
                "latency_ms_p99": s["latency_ms_p99"], "requests": s["requests"],
                "errors": s["errors"], "errors_by_status": s["errors_by_status"],
                "endpoint": "proxy" if name.endswith("-proxy") else endpoint,
                "replicas": replicas, "workers_per_replica": workers,
                "threads_per_worker": per_worker,
                "concurrency": CONCURRENCY, "max_batch_size": 1 if unbatched else batch,
                "batch_wait_ms": 0.0 if unbatched else WAIT_S * 1e3,
                "mean_batch_size": rows / batches if batches else None,
                # share of the run each worker's model was computing: the rest of a
                # worker's time goes to HTTP, parsing and answering, or waiting
                "model_busy": model_s / (s["duration_s"] * replicas * workers),
                # one worker's model speed while it computes: against the in-process
                # throughput_by_batch it shows what sharing the cores with Ray costs the model
                "model_rows_per_s": rows / model_s if model_s else None,
                "speedup_vs_baseline": s["throughput_per_s"] / base["throughput_per_s"],
                "p99_vs_baseline": s["latency_ms_p99"] / base["latency_ms_p99"]}
            variants.append(Variant(
                name=name, latency_ms_p50=s["latency_ms_p50"],
                latency_ms_p90=s["latency_ms_p90"], throughput_per_s=s["throughput_per_s"],
                size_mb=size_mb, quality={"metric": "cosine_to_fp32_min", "value": quality},
                extra=extras[name]))
    # the ceiling timed again once the servers are gone, pooled with the first: over the
    # minutes of served runs the machine drifts, and one timing moved by +-7% between runs
    after = _in_process(runner, single, texts, smoke)
    del runner, single
    pooled = {name: {b: measure.Timing(t.name, t.samples_ms + after[name][b].samples_ms,
                                       t.batch_size) for b, t in group.items()}
              for name, group in before.items()}
    fastest = {name: max(group, key=lambda b: group[b].throughput_per_s)
               for name, group in pooled.items()}  # layout -> its best rows per call
    tops = {name: pooled[name][b] for name, b in fastest.items()}
    best = tops["in-process"]
    best_of_all = max(tops.values(), key=lambda t: t.throughput_per_s)
    for v in variants:
        # the ceiling: one call with every core, at its best batch size
        v.extra["fraction_of_in_process"] = v.throughput_per_s / best.throughput_per_s
        # and the best this machine does in process, whichever split of the cores
        v.extra["fraction_of_best_in_process"] = (v.throughput_per_s
                                                  / best_of_all.throughput_per_s)
    baseline = variants[0].throughput_per_s  # no-batching, one replica
    quality = {"metric": "cosine_to_fp32_min",
               "value": float(measure.cosine(reference, inproc_emb).min())}
    for name, group in pooled.items():
        top, calls = tops[name], 1 if name == "in-process" else threads
        variants.append(Variant(
            name=name, latency_ms_p50=top.p50, latency_ms_p90=top.p90,
            throughput_per_s=top.throughput_per_s, size_mb=size_mb, quality=quality,
            extra={"latency_ms_p99": top.p99, "requests": len(top.samples_ms), "errors": 0,
                   "batch_size": fastest[name], "calls_at_once": calls,
                   "threads_per_call": threads // calls,
                   "latency_unit": "one batch call" if calls == 1
                   else f"one batch call, {calls} at once",
                   "threads": threads,
                   "throughput_by_batch": {b: t.throughput_per_s for b, t in group.items()},
                   "ceiling_before_after": [max(t.throughput_per_s for t in x[name].values())
                                            for x in (before, after)],
                   "speedup_vs_baseline": top.throughput_per_s / baseline}))
    # the targets, judged per deployment; flat keys are the one-replica deployment's
    targets = {**_targets(extras, ""), "one_replica": _targets(extras, "")}
    if len(deployments) > 1:
        targets["workers"] = _targets(extras, "-workers")
        targets["per_core"] = _targets(extras, "-per-core")
    return BenchResult(
        suite="serve", smoke=smoke, hardware=measure.fingerprint(), baseline="no-batching",
        variants=variants,
        extra={"model": "all-MiniLM-L6-v2 ONNX int8 (dynamic)",
               "deployments": [{"variants": f"*{sfx}" if sfx else "one replica",
                                "replicas": r, "workers_per_replica": w,
                                "threads_per_worker": t, "max_batch_size": b}
                               for sfx, r, w, t, b in deployments],
               "duration_s_per_run": duration,
               "rounds": rounds, "query_tokens": [8, 32],
               "endpoint": extras["no-batching"]["endpoint"],
               "targets": targets,
               "clean_shutdown": leftovers == [], "leftovers": leftovers})
