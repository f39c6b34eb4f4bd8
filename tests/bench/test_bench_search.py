"""The `search` suite in smoke mode: the issue's variants, consistent figures, targets."""

import pytest


@pytest.fixture(scope="module")
def result(smoke_json):
    return smoke_json("search")


def test_variants_and_baseline_are_the_issues(result):
    assert result["suite"] == "search" and result["smoke"] is True
    assert result["baseline"] == "baseline-fp32"
    names = [v["name"] for v in result["variants"]]
    assert {"baseline-fp32", "int8", "student-int8", "student-int8-binary-index"} <= set(names)
    assert result["quality_metric"] == "recall@10" and result["batch_size"] == 1


def test_every_variant_has_complete_consistent_figures(result):
    for v in result["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb", "index_mb", "encoder_mb"):
            assert v[key] is not None and v[key] > 0, (v["name"], key)
        assert v["latency_ms_p50"] <= v["latency_ms_p90"] <= v["latency_ms_p99"]
        q = v["quality"]
        assert q["metric"] == "recall@10" and 0 <= q["recall@1"] <= q["recall@5"] <= q["value"]
        assert 0 <= q["mrr@10"] <= q["value"] and q["documents"] == result["documents"]
    by = {v["name"]: v for v in result["variants"]}
    assert by["baseline-fp32"]["runtime"] == "torch" and by["int8"]["runtime"] == "onnxruntime"
    assert by["baseline-fp32"]["quality_vs_baseline"] == 1.0
    assert by["student-int8"]["encoder_mb"] < by["int8"]["encoder_mb"]
    # 1 bit instead of 32 per dimension, plus the 384 float32 means of the centring
    assert by["student-int8-binary-index"]["index_vs_baseline"] == pytest.approx(
        1 / 32, rel=0.2)
    assert by["student-int8-int8-index"]["index_vs_baseline"] == pytest.approx(1 / 4, rel=0.05)


def test_targets_are_recorded(result):
    targets = {t["variant"]: t["checks"] for t in result["targets"]}
    assert targets["student-int8"]["speedup"]["bound"] == 5.0
    assert targets["student-int8"]["recall_ratio"]["bound"] == 0.97
    assert targets["student-int8-binary-index"]["index_smaller"]["bound"] == 25.0
    assert targets["student-int8-binary-index"]["recall_ratio"]["bound"] == 0.95
    assert all(isinstance(c["met"], bool) for t in targets.values() for c in t.values())
