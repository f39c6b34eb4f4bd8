"""The inference-path suites (export, quantize, cnn-quantize) in smoke mode: complete,
consistent JSON, never a timing. One set of checks, parameterized over the suites."""

import importlib
import json

import pytest

from deploylab import bench

pytestmark = pytest.mark.slow


SUITES = ["export", "quantize", "cnn-quantize"]


@pytest.fixture(scope="module", params=SUITES)
def run(request, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp("bench") / f"{name}.json"
    data = json.loads(bench.run(name, smoke=True).write_json(out).read_text())
    return name, importlib.import_module(f"deploylab.bench.{name.replace('-', '_')}"), data


def test_every_named_variant_is_present_in_order(run):
    name, suite, data = run
    assert data["suite"] == name and data["smoke"] is True
    assert [v["name"] for v in data["variants"]] == list(suite.VARIANTS)
    assert data["baseline"] == suite.VARIANTS[0]
    assert {"cpu", "cores", "threads", "flags"} <= set(data["hardware"])


def test_rows_are_complete_or_skipped_with_a_reason(run):
    _, suite, data = run
    for v in data["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb", "quality"):
            assert key in v, (v["name"], key)
        assert v["quality"]["metric"] == suite.METRIC
        if v.get("skipped"):
            assert v["latency_ms_p50"] is None and v["quality"]["value"] is None
            continue
        assert v["latency_ms_p90"] >= v["latency_ms_p50"] > 0
        assert v["size_mb"] > 0 and 0.0 <= v["quality"]["value"] <= 1.0
        assert v["speedup_vs_baseline"] > 0


def test_baseline_is_measured_and_targets_are_recorded(run):
    data = run[2]
    base = data["variants"][0]
    assert not base.get("skipped") and base["speedup_vs_baseline"] == pytest.approx(1.0)
    assert data["targets"] and all({"variant", "metric", "threshold", "value", "met"} <= set(t)
                                   for t in data["targets"])
    names = {v["name"] for v in data["variants"]}
    assert all(t["variant"] in names for t in data["targets"])
    assert len(bench.verdicts(data["targets"])) == len(data["targets"])
