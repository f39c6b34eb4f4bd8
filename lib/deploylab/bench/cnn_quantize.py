"""The kit's digits CNN: float vs post-training static int8 vs quantization-aware int8."""

from __future__ import annotations

from . import BenchResult
from . import _inference as inf

METRIC = "accuracy"
VARIANTS = ("torch-fp32", "ort-int8-static", "qat-int8")


def run(smoke: bool = False) -> BenchResult:
    """Variants (baseline torch-fp32): torch-fp32, ort-int8-static (MinMax calibration on
    256 training images, per-channel QDQ), qat-int8 (fake-quantized fine-tuning, exported
    as QDQ). Batch 1 image, 1 thread (a 40k-parameter model has nothing to split across
    threads); quality is test accuracy (450 held-out digits).
    """
    import torch

    from .. import cnn, export, measure
    from .. import quantize as q

    threads, batch = 1, 1
    torch.set_num_threads(threads)
    model, data = cnn.pretrained_cnn(epochs=4 if smoke else 15)
    fp32 = export.export_onnx(model, export.ExportConfig(overwrite=False))
    results = {"torch-fp32": q.reference(model, name="torch-fp32")}
    errors: dict[str, str] = {}
    for name, config in (
            ("ort-int8-static", q.StaticInt8Config(calibration=q.digits_calibration(data))),
            ("qat-int8", q.QATConfig(data=data, epochs=1 if smoke else 3))):
        try:
            results[name] = q.quantize(fp32 if name.startswith("ort") else model, config)
        except Exception as e:  # keeps its row, with why
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    runners = {k: (r.runner(threads) if k == "torch-fp32" else q.reference(r.path).runner(
        threads)) for k, r in results.items()}
    feed = {"input": data.x_test[:batch].numpy()}
    timings, alone = inf.time_all({k: (lambda r=r: r(feed)) for k, r in runners.items()},
                                  repeats=20 if smoke else 200, max_time_s=5, batch=batch,
                                  block=1)  # one thread: nothing spins
    base = timings["torch-fp32"].p50
    variants = []
    for name in VARIANTS:
        if name in errors:
            variants.append(inf.skipped(name, errors[name], METRIC))
            continue
        r = results[name]
        acc = cnn.accuracy(lambda x, run=runners[name]: run({"input": x}), data)
        variants.append(inf.variant(
            name, timings[name], size_bytes=r.size_bytes, baseline_p50=base,
            quality={"metric": METRIC, "value": acc}, threads=threads,
            timed_alone=name in alone, backend=r.backend,
            onnx_file_mb=(r.path.stat().st_size / 1e6) if r.path else None))
    v = {x.name: x for x in variants}
    acc0 = v["torch-fp32"].quality["value"]
    static = v["ort-int8-static"]
    drop = None if static.skipped else (acc0 - static.quality["value"]) * 100
    return BenchResult(
        suite="cnn-quantize", smoke=smoke, hardware=measure.fingerprint(),
        baseline="torch-fp32", variants=variants,
        extra={"model": "DigitsCNN", "batch_size": batch, "threads": threads,
               "test_images": len(data.y_test),
               "targets": [
                   inf.target("ort-int8-static", "speedup_vs_baseline", ">=", 2.0,
                              static.extra.get("speedup_vs_baseline")),
                   inf.target("ort-int8-static", "accuracy_drop_points", "<=", 0.5, drop)]})
