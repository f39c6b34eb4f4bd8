import time

import numpy as np
import pytest
import torch

from deploylab import measure
from deploylab.measure import Timing


def test_timing_percentiles_and_throughput():
    t = Timing("x", [float(v) for v in range(1, 101)], batch_size=4)
    assert t.p50 == pytest.approx(50.5)
    assert t.p90 == pytest.approx(90.1)
    assert t.throughput_per_s == pytest.approx(4 * 1000 / 50.5)
    assert t.spread == pytest.approx((90.1 - 50.5) / 50.5)
    assert t.as_dict()["repeats"] == 100


def test_compare_interleaves_every_round_and_warms_up():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    out = measure.compare(fns, warmup=2, repeats=5, seed=1)
    assert list(out) == ["a", "b", "c"]
    assert all(len(t.samples_ms) == 5 for t in out.values())
    timed = calls[2 * 3:]
    rounds = [timed[i:i + 3] for i in range(0, len(timed), 3)]
    assert len(rounds) == 5 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order is shuffled between rounds


def test_compare_in_blocks_runs_each_variant_back_to_back():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "ab"}
    out = measure.compare(fns, warmup=0, repeats=3, block=4, seed=0)
    assert all(len(t.samples_ms) == 3 * 4 for t in out.values())
    # each block is one untimed call plus 4 timed ones, never mixed with the other variant
    runs = [calls[i:i + 5] for i in range(0, len(calls), 5)]
    assert len(runs) == 2 * 3 and all(len(set(r)) == 1 for r in runs)
    assert sorted(r[0] for r in runs) == ["a"] * 3 + ["b"] * 3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"block": 0}, "block"), ({"block": 2.0}, "block"), ({"settle_s": -1}, "settle_s"),
])
def test_compare_rejects_bad_blocks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure.compare({"a": lambda: None}, **kwargs)


def test_compare_is_deterministic_for_a_seed():
    def order(seed):
        calls: list[str] = []
        measure.compare({n: (lambda n=n: calls.append(n)) for n in "abcd"}, warmup=0,
                        repeats=4, seed=seed)
        return calls

    assert order(3) == order(3)


def test_time_budget_stops_early_but_keeps_three_samples():
    t = measure.time_fn(lambda: time.sleep(0.005), warmup=0, repeats=1000, max_time_s=0.001)
    assert len(t.samples_ms) == 3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup"), ({"repeats": 2.5}, "repeats"),
])
def test_compare_rejects_bad_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure.compare({"a": lambda: None}, **kwargs)


def test_compare_needs_a_variant():
    with pytest.raises(ValueError, match="at least one"):
        measure.compare({})


def test_summary_speedups_are_relative_to_the_baseline():
    timings = {"slow": Timing("slow", [10.0] * 5), "fast": Timing("fast", [5.0] * 5)}
    table = measure.summary(timings, baseline="slow")
    assert table.loc["slow", "speedup"] == pytest.approx(1.0)
    assert table.loc["fast", "speedup"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="baseline 'x'"):
        measure.summary(timings, baseline="x")


def test_threads_context_restores_the_count():
    before = torch.get_num_threads()
    with measure.threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with measure.threads(0):
            pass


def test_peak_memory_sees_a_large_allocation():
    def allocate():
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        return block.sum()

    mem = measure.peak_memory(allocate)
    assert mem.delta_mb >= 150
    assert mem.peak_mb >= mem.before_mb


def test_size_on_disk(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 23)
    assert measure.size_on_disk(tmp_path / "a.bin") == 100
    assert measure.size_on_disk(tmp_path) == 123
    with pytest.raises(FileNotFoundError, match="does not exist"):
        measure.size_on_disk(tmp_path / "missing")


def test_param_bytes_counts_parameters_and_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.BatchNorm1d(5))
    # linear 55 + batchnorm weight/bias 10 + running mean/var 10 (fp32) + num_batches (int64)
    assert measure.param_bytes(model) == (55 + 10 + 10) * 4 + 8


def test_cosine_and_fidelity():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [0.0, -1.0], [0.0, 0.0]])
    assert measure.cosine(a, b).tolist() == [1.0, -1.0, 1.0]
    assert measure.fidelity(a, a) == {"cosine_min": 1.0, "cosine_mean": 1.0,
                                      "max_abs_error": 0.0}
    with pytest.raises(ValueError, match="shapes differ"):
        measure.cosine(a, b[:2])
    t = torch.randn(4, 3, 8)
    assert measure.cosine(t, t).min() == pytest.approx(1.0)


def test_topk_agreement():
    ref = np.array([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3]])
    assert measure.topk_agreement(ref, ref, k=2) == 1.0
    assert measure.topk_agreement(ref, -ref, k=1) == 0.0
    assert measure.topk_agreement(ref, ref[:, ::-1], k=3) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        measure.topk_agreement(ref, ref, k=4)


def test_count_flops_of_a_linear_layer():
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64)
    assert measure.count_flops(lambda: layer(x)) == 2 * 8 * 64 * 32


def test_fingerprint_names_what_decides_the_numbers():
    fp = measure.fingerprint()
    for key in ("cpu", "cores", "threads", "flags", "torch", "onnxruntime", "python"):
        assert fp[key] not in (None, "")
    assert set(fp["flags"]) <= set(measure.FLAGS_OF_INTEREST)
    assert fp["threads"] == torch.get_num_threads()


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_matmul_peak_is_positive_and_checked_against_the_exact_product(dtype):
    peak = measure.matmul_peak(dtype, 64, repeats=3)
    assert peak.rate > 0 and peak.engine in peak.rates
    assert all(t.p50 > 0 for t in peak.timings.values())
    if dtype == "int8":  # 7-bit weights: integer products are exact
        assert peak.cosine_min == pytest.approx(1.0, abs=1e-12)
    else:
        assert peak.cosine_min > 0.999


@pytest.mark.parametrize(("args", "match"), [(("fp16", 64), "dtype"), (("fp32", 8), "size")])
def test_matmul_peak_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        measure.matmul_peak(*args)


def test_roofline_model():
    peak = measure.MatmulPeak("fp32", 64, "torch", {"torch": 100.0}, {}, 1.0)
    roof = measure.Roofline({"fp32": peak}, bandwidth_gbs=20.0, threads=2)
    assert roof.ridge("fp32") == 5.0
    assert roof.attainable(1.0) == 20.0
    assert roof.attainable(50.0) == 100.0
    assert roof.fraction_of_peak(25.0) == 0.25


def test_plot_roofline_draws_every_dtype_and_point():
    import matplotlib

    matplotlib.use("Agg")
    peaks = {d: measure.MatmulPeak(d, 64, "torch", {"torch": r}, {}, 1.0)
             for d, r in (("fp32", 100.0), ("int8", 200.0))}
    roof = measure.Roofline(peaks, 20.0, 2)
    ax = measure.plot_roofline(roof, [("model", 3.0, 40.0, "fp32")])
    assert len(ax.get_lines()) == 2
    assert len(ax.collections) == 1


def test_shape_sweep_covers_the_grid_with_flops():
    layer = torch.nn.Linear(16, 16)

    def call_for(batch, seq):
        x = torch.randn(batch, seq, 16)
        return lambda: layer(x)

    table = measure.shape_sweep(call_for, [1, 4], [2, 8], warmup=1, repeats=3)
    assert sorted(zip(table.batch, table.seq, strict=True)) == [(1, 2), (1, 8), (4, 2), (4, 8)]
    row = table[(table.batch == 4) & (table.seq == 8)].iloc[0]
    assert row.gflops == pytest.approx(2 * 4 * 8 * 16 * 16 / 1e9)
    assert row.tokens_per_s == pytest.approx(row.items_per_s * 8)
    assert (table.gflop_per_s > 0).all()


@pytest.mark.parametrize(("flags", "int8", "bf16"), [
    (["avx2", "fma"], "no VNNI", "no native bf16"),
    (["avx2", "avx512f", "avx512_vnni", "avx512_bf16"], "VNNI", "native bf16"),
    (["avx2", "amx_tile", "amx_int8", "amx_bf16"], "AMX", "native bf16"),
    ([], "no AVX2", "no native bf16"),
])
def test_describe_cpu_explains_int8_and_bf16(flags, int8, bf16):
    lines = measure.describe_cpu(flags)
    assert int8 in lines[0] and bf16 in lines[1]


def test_busy_cores_starts_and_stops_its_processes():
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children()}
    with measure.busy_cores(1):
        spinning = {p.pid for p in me.children()} - before
        assert len(spinning) == 1
    assert not ({p.pid for p in me.children()} & spinning)
    with pytest.raises(ValueError, match="busy cores"):
        with measure.busy_cores(0):
            pass


def test_fast_kernels_are_interleaved_per_engine_and_slow_ones_budgeted(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(measure, "_SLOW_MS", 20.0)
    log = lambda name: (lambda: calls.append(name))  # noqa: E731
    groups = {"e1": {"a": log("a"), "b": log("b"),
                     "slow": lambda: (calls.append("slow"), time.sleep(0.03))},
              "e2": {"c": log("c")}}
    timings = measure._time_kernels(groups, repeats=6, max_time_s=0.001)
    assert [len(timings[k].samples_ms) for k in "abc"] == [6, 6, 6]
    assert len(timings["slow"].samples_ms) == 3  # budget spent at once: the minimum of 3
    # e1: first calls (3), warm-up (2), 6 interleaved rounds of a and b, then slow alone
    assert sorted(calls[5:17]) == ["a"] * 6 + ["b"] * 6
    assert calls[17:20] == ["slow"] * 3
    assert set(calls[20:]) == {"c"}  # engines are never interleaved with each other
