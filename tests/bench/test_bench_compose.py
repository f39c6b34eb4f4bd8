"""The `compose` suite in smoke mode: the issue's variants, complete figures, the skipped
int4 row kept with its reason, targets recorded (their values are for the full run on a
quiet machine, never asserted here)."""

import pytest

pytestmark = pytest.mark.slow  # exports two ONNX decoders and times nine variants


@pytest.fixture(scope="module")
def result(smoke_json):
    return smoke_json("compose")


def test_variants_and_baseline_are_the_issues(result):
    assert result["suite"] == "compose" and result["smoke"] is True
    assert result["baseline"] == "naive-fp32"
    names = [v["name"] for v in result["variants"]]
    assert names[:4] == ["naive-fp32", "kv-cache-fp32", "kv-cache-int8", "speculative-int8"]
    assert result["quality_metric"] == "next_line_exact_match" and result["threads"] == 2


def test_every_runnable_variant_has_complete_figures(result):
    for v in result["variants"]:
        if v.get("skipped"):
            assert v["latency_ms_p50"] is None and v["quality"] is None
            continue
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb", "ttft_ms_p50", "perplexity"):
            assert v[key] is not None and v[key] > 0, (v["name"], key)
        assert 0 <= v["quality"]["value"] <= 1 and 0 <= v["char_accuracy"] <= 1
    by = {v["name"]: v for v in result["variants"]}
    assert by["naive-fp32"]["speedup_vs_baseline"] == 1.0
    assert 0 <= by["speculative-int8"]["acceptance_rate"] <= 1
    assert by["naive-fp32"]["acceptance_rate"] is None
    # greedy: the cache and speculation change the speed, never the text
    same = result["same_completions_as_baseline"]
    assert same["kv-cache-fp32"] and same["speculative-fp32"]


def test_targets_are_recorded(result):
    spec, kv8 = result["targets"]
    assert spec["variant"] == "speculative-int8" and kv8["variant"] == "kv-cache-int8"
    assert spec["checks"]["speedup"]["bound"] == 4.0
    assert spec["checks"]["exact_match_ratio"]["bound"] == 0.97
    assert kv8["checks"]["perplexity_ratio"]["bound"] == 1.05
    assert all(isinstance(c["met"], bool) for t in (spec, kv8) for c in t["checks"].values())
