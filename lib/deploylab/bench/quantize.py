"""all-MiniLM-L6-v2 quantized eight ways: size, p50/p90 and embedding fidelity side by side."""

from __future__ import annotations

from . import BenchResult
from . import _inference as inf

METRIC = "cosine_to_reference_mean"
# Fewest float layers that clear cosine 0.995 with a margin on this model: 2 gave 0.9951,
# 3 gave 0.9956, 6 gave 0.9965 but ran 1.2x slower (four of them are FFN output matmuls).
KEEP_FLOAT = 3
# Timed after the shared rounds, alone: bf16 autocast slowed the torch fp32 calls after it by
# ~25% (25.3 -> 31.6 ms), which flattered every ratio to the baseline.
APART = ("torch-bf16-autocast",)
VARIANTS = ("torch-fp32", "torch-bf16-autocast", "ort-fp32", "ort-int8-dynamic",
            "ort-int8-static", "ort-int4-weight-only", "torchao-int8-dynamic", "ort-int8-mixed")


def _build(setup: inf.Setup, smoke: bool) -> tuple[dict, dict, dict]:
    """name -> Quantized (or a runner for torch variants), size bytes, errors."""
    from .. import assets, export
    from .. import quantize as q

    _, eager = assets.load_encoder(inf.MODEL, attn_implementation="eager")
    fp32 = export.export_onnx(eager, export.ExportConfig(overwrite=False))
    fused = export.optimize_onnx(fp32)
    built, errors = {}, {}
    # calibration on sentences other than the quality set, padded to one shape
    docs = [d["doc"] for d in assets.stdlib_docstrings()][-(16 if smoke else 64):]
    calib = q.encoder_feeds(setup.tokenizer, docs, max_length=setup.seq, pad_to_max=True)
    # the scan looks at a few sentences; mixed precision keeps the KEEP_FLOAT most sensitive
    # in float
    scan = q.sensitivity_scan(eager, setup.quality_feeds[:1], mode="local")
    configs = {
        "ort-fp32": None,
        "ort-int8-dynamic": (fp32, q.DynamicInt8Config()),
        "ort-int8-static": (fp32, q.StaticInt8Config(
            calibration=calib, method="minmax", op_types=("MatMul", "Gather"),
            exclude=tuple(q.activation_matmuls(fp32)))),
        "ort-int4-weight-only": (fp32, q.WeightOnlyConfig(bits=4, block_size=32)),
        "torchao-int8-dynamic": (eager, q.DynamicInt8Config(backend="torchao")),
        "ort-int8-mixed": (fp32, q.MixedPrecisionConfig(keep_float=KEEP_FLOAT, sensitivity=scan)),
    }
    for name, spec in configs.items():
        try:
            built[name] = q.reference(fused, name=name) if spec is None else q.quantize(*spec)
        except Exception as e:  # a variant that cannot run here keeps its row, with why
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return built, errors, {"fp32_onnx_bytes": fp32.stat().st_size, "scan": scan}


def run(smoke: bool = False) -> BenchResult:
    """Variants (baseline torch-fp32): torch-fp32, torch-bf16-autocast, ort-fp32,
    ort-int8-dynamic, ort-int8-static, ort-int4-weight-only, torchao-int8-dynamic,
    ort-int8-mixed. Batch 1 x 128 tokens, 2 threads; quality is the mean cosine of
    mean-pooled embeddings to torch-fp32's over 200 standard-library docstrings (16
    sentences and 16 tokens in smoke mode). Fast variants are timed interleaved in blocks
    (`_inference.TIMING`: ONNX Runtime's threads spin, as by default); variants slower than
    0.4 s a call are timed alone (`timed_alone`) and their quality is measured on the first
    32 sentences (`quality_sentences`); torch-bf16-autocast is timed alone after the
    others (APART). ort-int8-mixed keeps the KEEP_FLOAT most sensitive layers in float.
    """
    from .. import measure
    from ..quantize import _state_bytes

    setup = inf.encoder_setup(smoke)
    built, errors, meta = _build(setup, smoke)
    runners = {"torch-fp32": inf.torch_runner(setup.model),
               "torch-bf16-autocast": inf.torch_runner(setup.model, autocast=True)}
    runners.update({k: r.runner(setup.threads, spinning=True) for k, r in built.items()})
    feed = setup.timing_feed
    timings, alone = inf.time_all({k: (lambda run=run: run(feed)) for k, run in runners.items()},
                                  repeats=2 if smoke else 8, block=2 if smoke else inf.BLOCK,
                                  max_time_s=3 if smoke else 30,
                                  apart=APART)
    # Variants slower than 0.4 s a call (no bf16 or fast int8 kernels here) are checked on
    # the first 32 sentences: 200 would take them tens of minutes. Their rows say so.
    few = setup.quality_feeds[:2]
    ref = inf.pooled(runners["torch-fp32"], setup.quality_feeds)
    quality, counted = {}, {}
    for k, run in runners.items():
        feeds = few if k in alone and k not in APART and k != "torch-fp32" else \
            setup.quality_feeds
        counted[k] = sum(len(f["input_ids"]) for f in feeds)
        out = ref if k == "torch-fp32" else inf.pooled(run, feeds)
        quality[k] = measure.cosine(ref[:counted[k]], out)
    base = timings["torch-fp32"].p50
    fp32_bytes = meta["fp32_onnx_bytes"]
    torch_bytes = _state_bytes(setup.model)
    variants = []
    for name in VARIANTS:
        if name in errors:
            variants.append(inf.skipped(name, errors[name], METRIC))
            continue
        r = built.get(name)
        size = torch_bytes if r is None else r.size_bytes
        if name == "torch-bf16-autocast":
            size = torch_bytes  # autocast keeps fp32 weights and casts on the fly
        c = quality[name]
        variants.append(inf.variant(
            name, timings[name], size_bytes=size, baseline_p50=base,
            quality={"metric": METRIC, "value": float(c.mean())},
            cosine_to_reference_min=float(c.min()),
            size_ratio_vs_onnx_fp32=size / fp32_bytes,
            backend="torch" if r is None else r.backend, threads=setup.threads,
            timed_alone=name in alone, quality_sentences=counted[name],
            kept_float=list(r.kept_float) if r is not None and r.kept_float else None))
    v = {x.name: x for x in variants}

    def fig(name, key):
        x = v[name]
        return None if x.skipped else (x.quality["value"] if key == "cosine" else
                                       x.extra.get(key))

    targets = [
        inf.target("ort-int8-dynamic", "speedup_vs_baseline", ">=", 3.0,
                   fig("ort-int8-dynamic", "speedup_vs_baseline")),
        inf.target("ort-int8-dynamic", "size_ratio_vs_onnx_fp32", "<=", 0.30,
                   fig("ort-int8-dynamic", "size_ratio_vs_onnx_fp32")),
        inf.target("ort-int8-dynamic", METRIC, ">=", 0.99, fig("ort-int8-dynamic", "cosine")),
        inf.target("ort-int8-mixed", METRIC, ">=", 0.995, fig("ort-int8-mixed", "cosine")),
        inf.target("ort-int8-mixed", "speedup_vs_baseline", ">=", 2.5,
                   fig("ort-int8-mixed", "speedup_vs_baseline")),
    ]
    return BenchResult(
        suite="quantize", smoke=smoke, hardware=measure.fingerprint(), baseline="torch-fp32",
        variants=variants,
        extra={"model": inf.MODEL, "batch_size": setup.batch, "sequence_length": setup.seq,
               "threads": setup.threads, "quality_sentences": setup.sentences,
               "timing": inf.TIMING, "fp32_onnx_mb": fp32_bytes / 1e6, "targets": targets,
               "most_sensitive_layers": meta["scan"].most_sensitive(6), "kept_float": KEEP_FLOAT,
               "cpu_note": inf.cpu_note()})
