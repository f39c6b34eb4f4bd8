"""The `train` bench suite in smoke mode: the JSON is complete and consistent (no timings)."""

import json

import pytest

from deploylab import bench

VARIANTS = ["fp32", "checkpointing", "checkpointing-every-layer", "bf16-autocast",
            "checkpointing-bf16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    result = bench.run("train", smoke=True)
    return json.loads(result.write_json(tmp_path_factory.mktemp("b") / "t.json").read_text())


def test_suite_is_listed():
    assert "train" in bench.suites()


def test_schema_and_variants(data):
    assert data["suite"] == "train" and data["smoke"] is True and data["baseline"] == "fp32"
    assert {"cpu", "cores", "threads", "flags"} <= set(data["hardware"])
    assert data["hardware"]["threads"] == 2
    assert [v["name"] for v in data["variants"]] == VARIANTS
    steps = data["steps"]
    for v in data["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb", "quality", "activation_mb", "weight_copy_mb"):
            assert key in v, key
        assert v["latency_ms_p90"] >= v["latency_ms_p50"] > 0
        assert v["peak_rss_mb"] > 0 and v["activation_mb"] > 0
        assert v["quality"]["metric"] == f"test_loss_after_{steps}_steps"
        assert 0 < v["quality"]["value"] < 10
        assert len(v["train_loss_per_step"]) == len(v["step_ms"]) == steps


def test_figures_are_consistent(data):
    v = {x["name"]: x for x in data["variants"]}
    base = v["fp32"]
    assert base["step_time_vs_baseline"] == base["activation_vs_baseline"] == 1.0
    # exact memory: checkpointing keeps far less; bf16 keeps its weight copies
    every = v["checkpointing-every-layer"]
    assert every["activation_mb"] < v["checkpointing"]["activation_mb"] < base["activation_mb"]
    assert every["checkpointed_modules"] == 6 and every["checkpointed_blocks"] == []
    assert v["checkpointing"]["checkpointed_blocks"] == ["encoder.layer.*[02468]"]
    assert v["checkpointing"]["checkpointed_modules"] == 3  # layers 0, 2, 4 of six
    assert v["checkpointing-bf16"]["activation_mb"] < v["bf16-autocast"]["activation_mb"]
    assert base["weight_copy_mb"] == v["checkpointing"]["weight_copy_mb"] == 0
    assert v["bf16-autocast"]["weight_copy_mb"] > 0
    # checkpointing recomputes exactly: same dropout masks, same losses
    for name in ("checkpointing", "checkpointing-every-layer"):
        assert v[name]["train_loss_per_step"] == pytest.approx(
            base["train_loss_per_step"], rel=1e-5)
    t = data["targets"]
    assert t["bf16_native"] == data["bf16_supported"] == t["bf16_speed_target_applies"]
    assert (t["bf16_speed_met"] is None) == (not t["bf16_native"])
    assert t["checkpointing_activation_saving"] == pytest.approx(
        1 - v["checkpointing"]["activation_vs_baseline"])
    assert t["every_layer_activation_saving"] == pytest.approx(
        1 - every["activation_vs_baseline"])
    assert t["bf16_loss_met"] == (t["bf16_loss_gap"] <= 0.02)
    assert [what for what, _ in bench.verdicts(t)] == ["checkpointing_met", "bf16_speed_met",
                                                      "bf16_loss_met"]
