"""The `prune` suite in smoke mode: every variant, figures consistent, targets recorded."""

import pytest


@pytest.fixture(scope="module")
def result(smoke_json):
    return smoke_json("prune")


def test_variants_and_baseline_are_the_issues(result):
    assert result["suite"] == "prune" and result["smoke"] is True
    assert result["baseline"] == "torch-fp32"
    assert [v["name"] for v in result["variants"]] == ["torch-fp32", "unstructured-90",
                                                       "structured-40"]
    assert result["batch_size"] == 1 and result["sequence_length"] == 128
    assert result["threads"] == 2 and result["hardware"]["cores"] >= 1


def test_every_variant_has_complete_consistent_figures(result):
    for v in result["variants"]:
        for key in ("latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb",
                    "peak_rss_mb"):
            assert v[key] is not None and v[key] > 0, (v["name"], key)
        assert v["latency_ms_p90"] >= v["latency_ms_p50"]
        assert v["quality"]["metric"] == "mrr" and 0 <= v["quality"]["value"] <= 1
        assert 0 <= v["quality"]["recall@1"] <= v["quality"]["recall@10"] <= 1
    base = result["variants"][0]
    assert base["speedup_vs_baseline"] == 1.0 and base["size_vs_baseline"] == 1.0


def test_what_pruning_did_is_recorded(result):
    by = {v["name"]: v for v in result["variants"]}
    base, sparse, small = by["torch-fp32"], by["unstructured-90"], by["structured-40"]
    assert sparse["params"] == base["params"] == 22_713_216  # masks keep every tensor
    assert sparse["weight_sparsity"] == pytest.approx(0.9, abs=0.005)
    assert sparse["size_vs_baseline"] <= 0.2  # the compressed file: a size fact, not timing
    # 40% of the encoder goes; the embeddings (half of MiniLM) stay: 18.4M of 22.7M
    assert small["params"] == 18_402_780 and small["weight_sparsity"] < 0.01
    assert small["size_mb"] < base["size_mb"]


def test_targets_are_named_with_their_bounds(result):
    targets = {t["variant"]: t for t in result["targets"]}
    assert set(targets) == {"structured-40", "unstructured-90"}
    assert targets["structured-40"]["checks"]["speedup"]["bound"] == 1.3
    assert targets["structured-40"]["checks"]["quality_ratio"]["bound"] == 0.95
    assert targets["unstructured-90"]["checks"]["size_ratio"]["met"] is True
