"""The `distill` suite in smoke mode: every variant, figures consistent, targets recorded."""

import pytest


@pytest.fixture(scope="module")
def result(smoke_json):
    return smoke_json("distill")


def test_variants_and_baseline_are_the_issues(result):
    assert result["suite"] == "distill" and result["smoke"] is True
    assert result["baseline"] == "teacher-fp32"
    assert [v["name"] for v in result["variants"]] == ["teacher-fp32", "student-fp32",
                                                       "student-ort-int8"]
    assert result["student_layers"] == [3, 4, 5] and result["threads"] == 2


def test_every_variant_has_complete_consistent_figures(result):
    for v in result["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb"):
            assert v[key] is not None and v[key] > 0, (v["name"], key)
        assert v["quality"]["metric"] == "mrr" and 0 <= v["quality"]["value"] <= 1
        assert -1 <= v["cosine_to_baseline_min"] <= v["cosine_to_baseline_mean"] <= 1
    by = {v["name"]: v for v in result["variants"]}
    assert by["teacher-fp32"]["layers"] == 6 and by["student-fp32"]["layers"] == 3
    assert by["student-fp32"]["params"] < by["teacher-fp32"]["params"]
    assert by["student-ort-int8"]["size_mb"] < by["student-fp32"]["size_mb"]
    assert by["student-ort-int8"]["runtime"] == "onnxruntime"
    assert by["teacher-fp32"]["quality_vs_baseline"] == 1.0


def test_targets_and_training_are_recorded(result):
    targets = {t["variant"]: t for t in result["targets"]}
    assert targets["student-fp32"]["checks"]["speedup"]["bound"] == 1.9
    assert targets["student-fp32"]["checks"]["quality_ratio"]["bound"] == 0.97
    assert targets["student-ort-int8"]["checks"]["speedup"]["bound"] == 5.0
    assert result["training"]["steps"] >= 1
    assert result["training"]["final_loss"] == pytest.approx(result["training"]["final_loss"])
