"""Shared checks of the inference suites' JSON (export, quantize, cnn-quantize)."""

from deploylab.bench import _inference as inf


def test_target_records_value_and_verdict():
    assert inf.target("v", "speedup", ">=", 2.0, 2.5)["met"] is True
    assert inf.target("v", "size", "<=", 0.3, 0.5)["met"] is False
    assert inf.target("v", "size", "<=", 0.3, None)["met"] is None


def test_skipped_variant_has_null_figures_and_a_reason():
    row = inf.skipped("openvino-fp32", "not installed", "cosine_to_reference_mean").to_dict()
    assert row["skipped"] == "not installed"
    assert row["latency_ms_p50"] is None and row["quality"]["value"] is None


def test_slow_variants_are_timed_alone():
    import time

    calls = {"fast": lambda: None, "slow": lambda: time.sleep(inf.SLOW_MS / 1000 + 0.05)}
    timings, alone = inf.time_all(calls, repeats=3, max_time_s=0.1, block=1)
    assert alone == {"slow"} and len(timings["fast"].samples_ms) == 3
    assert len(timings["slow"].samples_ms) == 3  # the budget never cuts below 3 samples


def test_variants_kept_apart_run_only_after_the_shared_rounds():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "later")}
    timings, alone = inf.time_all(calls, repeats=2, max_time_s=10, block=3, apart=("later",))
    first = order.index("later")
    assert set(order[:first]) == {"a", "b"} and set(order[first:]) == {"later"}
    assert alone == {"later"}
    assert all(len(timings[k].samples_ms) == 2 * 3 for k in ("a", "b", "later"))
