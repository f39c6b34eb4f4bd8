"""The `speech` suite in smoke mode: the issue's variants, complete figures, the streaming
figures and the targets recorded (their values are for the full run, never asserted here)."""

import pytest

pytestmark = pytest.mark.slow  # synthesizes, trains and quantizes (smoke sizes) and streams


@pytest.fixture(scope="module")
def result(smoke_json):
    return smoke_json("speech")


def test_variants_and_baseline_are_the_issues(result):
    assert result["suite"] == "speech" and result["smoke"] is True
    assert result["baseline"] == "teacher-fp32" and result["quality_metric"] == "accuracy"
    assert [v["name"] for v in result["variants"]] == ["teacher-fp32", "student-fp32",
                                                       "student-int8"]
    assert result["threads"] == 1 and result["features_ms_p50"] > 0
    d = result["data"]
    assert len(d["commands"]) >= 10 and d["labels"][:2] == ["_silence_", "_unknown_"]
    assert d["test_voices"] > 0 and d["train_voices"] > 0


def test_every_variant_has_complete_figures(result):
    for v in result["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb", "size_kb", "parameters"):
            assert v[key] is not None and v[key] > 0, (v["name"], key)
        assert v["quality"]["metric"] == "accuracy" and 0 <= v["quality"]["value"] <= 1
    by = {v["name"]: v for v in result["variants"]}
    assert by["teacher-fp32"]["speedup_vs_baseline"] == 1.0
    assert by["teacher-fp32"]["speedup_vs_baseline_cold"] == 1.0
    assert all(v["latency_ms_p50_cold"] > 0 for v in result["variants"])
    assert result["timing_block"] > 1  # warm: a variant's calls in a row, as deployed alone
    assert by["student-fp32"]["parameters"] < by["teacher-fp32"]["parameters"]
    # int8 is not asserted smaller: QDQ adds a scale and zero point per tensor, which outweighs
    # the saving on the smoke student's ~2k weights (14 KB vs 9 KB); the size target is recorded
    assert by["student-int8"]["size_kb"] <= 100 or not t_met(result, "size_kb")
    assert result["quantization"]["method"] in ("ptq", "qat")


def t_met(result, check):
    """Whether the student-int8 target `check` is reported met."""
    t = {x["variant"]: x for x in result["targets"]}
    return t["student-int8"]["checks"][check]["met"]


def test_streaming_and_targets_are_recorded(result):
    s = result["streaming"]
    for key in ("precision", "recall", "f1"):
        assert 0 <= s[key] <= 1
    assert s["rtf"] > 0 and s["false_alarms_per_hour"] >= 0 and s["commands"] > 0
    assert 0 < s["windows_run"] <= s["windows"]  # the VAD gate skipped or kept windows
    assert set(s["thresholds"]) == set(result["data"]["commands"])  # calibrated per word
    assert all(0 < v <= 1 for v in s["thresholds"].values()) and s["validation_seeds"] == [1]
    assert 0 <= s["f1_one_threshold"] <= 1
    t = {x["variant"]: x for x in result["targets"]}
    assert set(t["student-int8"]["checks"]) == {"accuracy", "accuracy_drop_vs_student_fp32",
                                                "size_kb", "speedup_vs_teacher"}
    assert t["student-int8"]["checks"]["accuracy"]["bound"] == 0.9
    assert t["streaming"]["checks"]["rtf"]["bound"] == 0.05
    assert all(isinstance(c["met"], bool) for x in t.values() for c in x["checks"].values())
