"""all-MiniLM-L6-v2 on torch eager, torch.compile, ONNX Runtime (unfused, fused), OpenVINO."""

from __future__ import annotations

from . import BenchResult
from . import _inference as inf

METRIC = "cosine_to_reference_mean"
VARIANTS = ("torch-fp32", "torch-compile", "ort-fp32-unfused", "ort-fp32", "openvino-fp32")


def _runners(setup: inf.Setup, smoke: bool) -> tuple[dict, dict, dict]:
    """name -> runner, name -> size in bytes, name -> reason it cannot run here."""
    from .. import assets, export
    from ..quantize import _state_bytes

    runners = {"torch-fp32": inf.torch_runner(setup.model)}
    sizes = {"torch-fp32": _state_bytes(setup.model), "torch-compile": None}
    errors: dict[str, str] = {}
    if smoke:  # inductor compiles C++ for minutes on 2 cores: not a smoke test's business
        errors["torch-compile"] = "skipped in smoke mode: compiling takes minutes on 2 cores"
    else:
        _compile(setup, runners, errors)
    # the usual first attempt: transformers' default SDPA attention, no optimizer
    unfused = export.export_onnx(setup.model, export.ExportConfig(attention=None,
                                                                  overwrite=False))
    _, eager = assets.load_encoder(inf.MODEL, attn_implementation="eager")
    fused = export.optimize_onnx(export.export_onnx(eager, export.ExportConfig(overwrite=False)))
    for name, path in (("ort-fp32-unfused", unfused), ("ort-fp32", fused)):
        sess = export.session(path, threads=setup.threads, spinning=True)
        runners[name] = lambda feeds, s=sess: s.run(None, feeds)[0]
        sizes[name] = path.stat().st_size
    if export.openvino_available():
        plain = export.export_onnx(eager, export.ExportConfig(overwrite=False))
        ov = export.openvino_session(plain, threads=setup.threads)
        runners["openvino-fp32"] = lambda feeds: ov(feeds)[0]
        sizes["openvino-fp32"] = plain.stat().st_size
    else:
        errors["openvino-fp32"] = "openvino is not installed (pip install openvino)"
    return runners, sizes, {"unfused_ops": export.runtime_op_counts(unfused),
                            "fused_ops": export.op_counts(fused), "errors": errors}


def _padded(setup: inf.Setup) -> list:
    from ..quantize import encoder_feeds

    texts = setup.tokenizer.batch_decode(
        [f["input_ids"][i] for f in setup.quality_feeds[:2] for i in range(len(f["input_ids"]))],
        skip_special_tokens=True)
    return encoder_feeds(setup.tokenizer, texts, max_length=setup.seq, pad_to_max=True)


def _compile(setup: inf.Setup, runners: dict, errors: dict) -> None:
    import torch

    try:
        compiled = torch.compile(setup.model, dynamic=False)
        run = inf.torch_runner(compiled)
        run(setup.timing_feed)  # compiles now, not inside the timed rounds
        runners["torch-compile"] = run
    except Exception as e:  # no C++ compiler, unsupported op, ...
        errors["torch-compile"] = f"torch.compile failed: {type(e).__name__}: {str(e)[:160]}"


def run(smoke: bool = False) -> BenchResult:
    """Variants (baseline torch-fp32, transformers' default SDPA attention): torch-fp32,
    torch-compile, ort-fp32-unfused (SDPA export, ORT's own optimizations), ort-fp32 (eager
    export + transformer optimizer: fused Attention/SkipLayerNorm/BiasGelu),
    openvino-fp32. Batch 1 x 128 tokens (16 in smoke mode), 2 threads; quality is the mean
    cosine of mean-pooled embeddings to torch-fp32's over 200 real sentences (16 in smoke).
    """
    from .. import measure

    setup = inf.encoder_setup(smoke)
    runners, sizes, meta = _runners(setup, smoke)
    errors = meta["errors"]
    ref = inf.pooled(runners["torch-fp32"], setup.quality_feeds)
    # torch.compile specialises on shapes: checked on 32 sentences padded to one length
    # (one more compilation) instead of recompiling for every batch's length
    fixed = [f for f in _padded(setup)][:2]
    feed = setup.timing_feed
    timings, alone = inf.time_all({k: (lambda r=r: r(feed)) for k, r in runners.items()},
                                  repeats=2 if smoke else 8, block=2 if smoke else inf.BLOCK,
                                  max_time_s=3 if smoke else 30)
    base = timings["torch-fp32"].p50
    variants = []
    for name in VARIANTS:
        if name in errors:
            variants.append(inf.skipped(name, errors[name], METRIC))
            continue
        if name == "torch-compile":
            c = measure.cosine(inf.pooled(runners["torch-fp32"], fixed),
                               inf.pooled(runners[name], fixed))
        elif name == "torch-fp32":
            c = measure.cosine(ref, ref)
        else:
            c = measure.cosine(ref, inf.pooled(runners[name], setup.quality_feeds))
        variants.append(inf.variant(
            name, timings[name], size_bytes=sizes.get(name), baseline_p50=base,
            quality={"metric": METRIC, "value": float(c.mean())},
            cosine_to_reference_min=float(c.min()), threads=setup.threads,
            timed_alone=name in alone,
            quality_sentences=len(c)))
    ort = next(v for v in variants if v.name == "ort-fp32")
    return BenchResult(
        suite="export", smoke=smoke, hardware=measure.fingerprint(), baseline="torch-fp32",
        variants=variants,
        extra={"model": inf.MODEL, "batch_size": setup.batch, "sequence_length": setup.seq,
               "threads": setup.threads, "quality_sentences": setup.sentences,
               "timing": inf.TIMING,
               "targets": [inf.target("ort-fp32", "speedup_vs_baseline", ">=", 1.25,
                                      ort.extra.get("speedup_vs_baseline"))],
               "ops_unfused_runtime": meta["unfused_ops"], "ops_fused": meta["fused_ops"]})
