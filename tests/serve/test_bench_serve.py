"""`deploylab bench serve --smoke`: the JSON is complete and consistent (never timings)."""

import json
import os

import pytest

from deploylab import bench, cli

pytestmark = pytest.mark.slow


def test_serve_bench_writes_every_variant_with_latency_p99_and_errors(tmp_path):
    out = tmp_path / "serve.json"
    assert cli.main(["bench", "serve", "--json", str(out), "--smoke"]) == 0
    data = json.loads(out.read_text())
    assert data["suite"] == "serve" and data["smoke"] is True
    assert data["baseline"] == "no-batching" and data["hardware"]["cores"] >= 1
    names = [v["name"] for v in data["variants"]]
    # on a fresh local Ray the replica has its own endpoint, so the proxy's hop is shown too
    assert data["endpoint"] == "replica (direct ingress)"
    cores = os.cpu_count()
    per_core = ["no-batching-workers", "dynamic-batching-workers", "no-batching-per-core",
                "dynamic-batching-per-core"] if cores > 1 else []
    ceilings = ["in-process", "in-process-per-core"] if per_core else ["in-process"]
    assert names == ["no-batching", "dynamic-batching", "dynamic-batching-proxy", *per_core,
                     *ceilings]
    for v in data["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput_per_s",
                    "size_mb", "errors"):
            assert v[key] is not None and v[key] >= 0, (v["name"], key)
        assert v["latency_ms_p50"] <= v["latency_ms_p90"] <= v["latency_ms_p99"]
        assert 0.9 <= v["quality"]["value"] <= 1.0  # int8 stays close to fp32
    served = data["variants"][:3]
    assert all(v["requests"] > 0 for v in served)
    # each replica's model computes for part of the run, never for more than all of it
    # (one batch that started before the window may count whole)
    served_all = data["variants"][:-len(ceilings)]
    assert all(0 < v["model_busy"] <= 1.05 for v in served_all)
    for v in served_all:  # throughput = busy share x replicas x workers x compute speed
        assert v["throughput_per_s"] == pytest.approx(
            v["model_busy"] * v["replicas"] * v["workers_per_replica"] * v["model_rows_per_s"],
            rel=0.25), v["name"]
    assert served[0]["max_batch_size"] == 1 and served[0]["speedup_vs_baseline"] == 1.0
    assert served[1]["max_batch_size"] == served[2]["max_batch_size"] > 1
    assert [v["endpoint"] for v in served] == [data["endpoint"]] * 2 + ["proxy"]
    keys = {"throughput_vs_no_batching", "p99_vs_no_batching", "fraction_of_in_process",
            "fraction_of_best_in_process", "errors", "met", "met_against_best_in_process"}
    assert set(data["targets"]) >= keys and set(data["targets"]["one_replica"]) == keys
    groups = [g for g in ("one_replica", "workers", "per_core") if g in data["targets"]]
    assert [what for what, _ in bench.verdicts(data["targets"])] == [  # each judged once
        f"{g}: {k}" for g in groups for k in ("met", "met_against_best_in_process")]
    if per_core:  # a worker, or a replica, per core, one thread each
        two = {v["name"]: v for v in data["variants"]}
        assert set(data["targets"]["workers"]) == keys == set(data["targets"]["per_core"])
        for name in per_core:
            shape = (1, cores) if "workers" in name else (cores, 1)
            assert (two[name]["replicas"], two[name]["workers_per_replica"]) == shape
            assert two[name]["threads_per_worker"] == 1 and two[name]["requests"] > 0
        for suffix in ("-workers", "-per-core"):
            assert two[f"no-batching{suffix}"]["speedup_vs_baseline"] == 1.0
            assert two[f"dynamic-batching{suffix}"]["max_batch_size"] == 16 // cores
    by_name = {v["name"]: v for v in data["variants"]}
    ceiling = by_name["in-process"]  # the issue's: one call with every core
    for c in (by_name[n] for n in ceilings):
        assert len(c["ceiling_before_after"]) == 2 and min(c["ceiling_before_after"]) > 0
        # the best batch size of its split of the cores
        assert c["throughput_per_s"] == pytest.approx(max(c["throughput_by_batch"].values()))
        assert c["threads_per_call"] * c["calls_at_once"] == os.cpu_count()
    assert sorted(map(int, ceiling["throughput_by_batch"])) == [1, 8, 16, 32]
    assert ceiling["calls_at_once"] == 1
    if per_core:
        assert sorted(map(int, by_name["in-process-per-core"]["throughput_by_batch"])) == [1, 4, 8]
        assert by_name["in-process-per-core"]["calls_at_once"] == os.cpu_count()
    best = max(by_name[n]["throughput_per_s"] for n in ceilings)
    for v in served_all:  # judged against the ceiling, and against the best
        assert v["fraction_of_in_process"] == pytest.approx(
            v["throughput_per_s"] / ceiling["throughput_per_s"])
        assert v["fraction_of_best_in_process"] == pytest.approx(v["throughput_per_s"] / best)
    assert data["clean_shutdown"] is True
