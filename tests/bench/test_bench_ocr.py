"""The `ocr` suite in smoke mode: the issue's variants, complete figures, targets recorded
(their values are for the full run on a quiet machine, never asserted here)."""

import pytest

pytestmark = pytest.mark.slow  # loads and quantizes the PP-OCRv4 models


@pytest.fixture(scope="module")
def result(smoke_json):
    return smoke_json("ocr")


def test_variants_and_baseline_are_the_issues(result):
    assert result["suite"] == "ocr" and result["smoke"] is True
    assert result["baseline"] == "fp32"
    assert [v["name"] for v in result["variants"]] == ["fp32", "fp32-optimized", "int8",
                                                       "int8-batched"]
    assert result["quality_metric"] == "word_accuracy" and result["threads"] == 2
    assert result["benchmark"]["strength"] == "medium"
    assert result["benchmark"]["seed"] != result["benchmark"]["calibration_seed"]


def test_every_variant_has_complete_figures(result):
    for v in result["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb", "latency_ms_per_line_p50"):
            assert v[key] is not None and v[key] > 0, (v["name"], key)
        assert v["quality"]["metric"] == "word_accuracy" and 0 <= v["quality"]["value"] <= 1
        for key in ("det_f1", "det_precision", "det_recall", "cer", "line_accuracy"):
            assert 0 <= v[key] <= max(1, v[key] if key == "cer" else 1), (v["name"], key)
    by = {v["name"]: v for v in result["variants"]}
    assert by["fp32"]["speedup_vs_baseline"] == 1.0 and by["fp32"]["graph"] == "shipped"
    assert by["int8"]["det_model"] == by["int8"]["rec_model"] == "int8"
    assert by["int8"]["size_mb"] < by["fp32"]["size_mb"]
    assert by["int8-batched"]["rec_batch"] > 1 == by["int8"]["rec_batch"]


def test_targets_and_gpu_skips_are_recorded(result):
    (t,) = result["targets"]
    assert t["variant"] == "int8-batched"
    assert set(t["checks"]) == {"speedup", "word_accuracy_drop", "det_f1_drop"}
    assert t["checks"]["speedup"]["bound"] == 1.8 and t["checks"]["speedup"]["kind"] == "min"
    assert all(isinstance(c["met"], bool) for c in t["checks"].values())
    assert set(result["gpu"]) == {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    assert result["fp16"]
