import json
import math

import pytest

from deploylab import bench
from deploylab.bench import BenchError, BenchResult, Variant

HW = {"cpu": "test", "cores": 2, "threads": 2, "flags": []}


def test_suites_are_discovered():
    assert "roofline" in bench.suites()


def test_unknown_suite_lists_the_real_ones():
    with pytest.raises(BenchError, match=r"unknown benchmark suite 'nonsense'.*roofline"):
        bench.run("nonsense")


@pytest.fixture(scope="module")
def roofline():
    return bench.run("roofline", smoke=True)


def test_roofline_suite_follows_the_schema(roofline, tmp_path):
    data = json.loads(roofline.write_json(tmp_path / "r.json").read_text())
    assert data["suite"] == "roofline" and data["smoke"] is True
    assert {"cpu", "cores", "threads", "flags"} <= set(data["hardware"])
    assert data["baseline"] == "fp32-matmul"
    names = [v["name"] for v in data["variants"]]
    assert names == ["fp32-matmul", "bf16-matmul", "int8-matmul"]
    for v in data["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb", "quality"):
            assert key in v
        assert v["throughput_per_s"] > 0
        assert v["latency_ms_p90"] >= v["latency_ms_p50"] > 0
        assert 0.0 <= v["quality"]["value"] <= 1.0
        assert v["throughput_unit"] in ("GFLOP/s", "GOP/s")
    assert data["variants"][0]["speedup_vs_baseline"] == pytest.approx(1.0)
    assert data["memory_bandwidth_gbs"] > 0


def test_write_json_refuses_a_folder_and_leaves_nothing(tmp_path, roofline):
    with pytest.raises(BenchError, match="is a folder"):
        roofline.write_json(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_write_json_creates_parents_and_writes_null_for_nan(tmp_path):
    result = BenchResult("t", True, HW, "a", [Variant("a", latency_ms_p50=math.nan)])
    out = result.write_json(tmp_path / "deep" / "t.json")
    assert json.loads(out.read_text())["variants"][0]["latency_ms_p50"] is None
    assert [p.name for p in out.parent.iterdir()] == ["t.json"]


def test_skipped_variant_keeps_its_row_with_a_reason():
    v = Variant("cuda", skipped="no CUDA device here")
    d = v.to_dict()
    assert d["skipped"] == "no CUDA device here" and d["latency_ms_p50"] is None
    assert "skipped" not in Variant("cpu").to_dict()


@pytest.mark.parametrize("value", [1.5, -0.1, "high"])
def test_accuracy_like_quality_must_be_a_fraction(value):
    with pytest.raises(BenchError, match=r"fraction in \[0, 1\]"):
        Variant("x", quality={"metric": "recall_at_10", "value": value})


def test_result_checks_baseline_and_names():
    with pytest.raises(BenchError, match="baseline 'z'"):
        BenchResult("t", False, HW, "z", [Variant("a")])
    with pytest.raises(BenchError, match="repeat"):
        BenchResult("t", False, HW, "a", [Variant("a"), Variant("a")])


def test_verdicts_read_a_list_of_target_rows():
    from deploylab.bench._inference import target

    rows = [target("int8", "speedup_vs_baseline", ">=", 2.0, 2.345),
            target("int8", "accuracy_drop_points", "<=", 0.5, 0.9),
            target("gpu", "speedup_vs_baseline", ">=", 3.0, None)]
    assert bench.verdicts(rows) == [("int8 speedup_vs_baseline >= 2 (got 2.35)", True),
                                    ("int8 accuracy_drop_points <= 0.5 (got 0.9)", False),
                                    ("gpu speedup_vs_baseline >= 3", None)]
    assert bench.verdicts(None) == [] and bench.verdicts([]) == []


def test_verdicts_read_rows_of_several_checks():
    from deploylab.cases.retrieval_eval import target

    rows = [target("student", speedup=(5.6, 5.0, "min"), size_kb=(120.0, 100.0, "max")),
            target("binary", index_smaller=(None, 25.0, "min"))]
    assert bench.verdicts(rows) == [("student speedup >= 5 (got 5.6)", True),
                                    ("student size_kb <= 100 (got 120)", False),
                                    ("binary index_smaller >= 25", None)]


def test_verdicts_judge_each_group_once_and_keep_not_applicable():
    one = {"gain": 2.1, "met": True, "met_against_best_in_process": False}
    serve_like = {**one, "one_replica": dict(one), "per_core": {"gain": 1.3, "met": False}}
    assert bench.verdicts(serve_like) == [("one_replica: met", True),
                                          ("one_replica: met_against_best_in_process", False),
                                          ("per_core: met", False)]
    train_like = {"saving": 0.5, "checkpointing_met": True, "bf16_native": False,
                  "bf16_speed_met": None}
    assert bench.verdicts(train_like) == [("checkpointing_met", True), ("bf16_speed_met", None)]
