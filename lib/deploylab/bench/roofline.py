"""This machine's fp32, bf16 and int8 matrix-multiply peaks and memory bandwidth."""

from __future__ import annotations

from .. import measure
from . import BenchResult, Variant


def run(smoke: bool = False) -> BenchResult:
    """Variants `fp32-matmul` (baseline), `bf16-matmul`, `int8-matmul`.

    throughput_per_s is GFLOP/s (GOP/s for int8) at the median call; latency is one
    n x n x n product; quality is the worst row's cosine to the exact float64 product.
    """
    n, repeats = (256, 5) if smoke else (1024, 10)
    roof = measure.measure_roofline(n, repeats=repeats, bandwidth_mb=64 if smoke else 256,
                                    max_time_s=1.0 if smoke else 3.0)
    base = roof.peak("fp32")
    variants = []
    for dtype, p in roof.peaks.items():
        t = p.timings[p.engine]
        variants.append(Variant(
            name=f"{dtype}-matmul", latency_ms_p50=t.p50, latency_ms_p90=t.p90,
            throughput_per_s=p.rate,
            quality={"metric": "cosine_to_exact_min", "value": p.cosine_min},
            extra={"throughput_unit": measure.UNITS[dtype], "engine": p.engine,
                   "engines": p.rates, "matrix_size": n,
                   "speedup_vs_baseline": p.rate / base}))
    return BenchResult(
        suite="roofline", smoke=smoke, hardware=measure.fingerprint(), baseline="fp32-matmul",
        variants=variants,
        extra={"memory_bandwidth_gbs": roof.bandwidth_gbs,
               "ridge_point_ops_per_byte": {d: roof.ridge(d) for d in roof.peaks}})
