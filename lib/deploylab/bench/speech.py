"""Voice commands: a wav2vec2-style teacher, a distilled DS-CNN student, the student in int8.

Variants: `teacher-fp32` (baseline: the transformer teacher), `student-fp32` (the Hello Edge
DS-CNN distilled from it, BN folded), `student-int8` (static int8 QDQ, per-channel, calibrated
on training clips, the first convolution kept float: `quantization.float_nodes`; QAT instead
when post-training quantization loses more than 0.5 points).
All three are ONNX Runtime sessions on one thread. Quality: accuracy on the held-out voices
at the default noise level (10 dB SNR); latency: one 1-second clip's log-mel through the
model (the shared front end is timed once, `features_ms_p50`), interleaved in blocks of
`timing_block` calls, warm as a deployed spotter runs; `latency_ms_p50_cold` and
`speedup_vs_baseline_cold` time one call per variant in turn, each after the others had
the caches (see `speech.evaluate`).
Streaming: a long synthesized recording through Silero VAD + the int8 student in a sliding
window, with per-word thresholds calibrated on three other recordings (`calibrated_thresholds`,
seeds 1-3): real-time factor, detection precision/recall/F1 (0.5 s tolerance), false alarms
per hour; the same with one threshold for every word (`*_one_threshold`) beside it.
Targets: student-int8 accuracy >= 0.90 and within 0.005 of student-fp32, size <= 100 KB,
>= 10x faster than the teacher; streaming RTF <= 0.05 with F1 >= 0.9.
"""

from __future__ import annotations

from .. import measure
from ..cases import speech
from ..cases.retrieval_eval import target
from . import BenchResult, Variant

FULL = {"repeats": 300, "warmup": 30, "stream_seconds": 600.0,
        "validation": speech.VALIDATION}
SMOKE = {"repeats": 5, "warmup": 1, "stream_seconds": 20.0,
         "validation": speech.SMOKE_VALIDATION}
THREADS = 1


def run(smoke: bool = False) -> BenchResult:
    p = SMOKE if smoke else FULL
    ds = speech.build(speech.SpeechConfig.smoke() if smoke else speech.SpeechConfig(),
                      progress=False)
    cfg = speech.TrainConfig.smoke() if smoke else speech.TrainConfig()
    models = speech.train_all(ds, cfg, progress=False)
    table, timings, feats = speech.compare(models.paths, ds, repeats=p["repeats"],
                                           warmup=p["warmup"], threads=THREADS)
    runners = {k: speech.training.onnx_logits(v, THREADS) for k, v in models.paths.items()}
    clip = ds.x_test.numpy()[:1]
    memory = {k: measure.peak_memory(lambda r=r: r(clip)).peak_mb for k, r in runners.items()}
    spotter = models.paths["student-int8"]
    per_word = speech.calibrated_thresholds(spotter, ds, **p["validation"])
    stream = speech.streaming_eval(spotter, ds, seconds=p["stream_seconds"], threads=THREADS,
                                   thresholds=per_word)
    one = speech.streaming_eval(spotter, ds, recording=stream["recording"], threads=THREADS)
    base = timings["teacher-fp32"].p50
    params = {"teacher-fp32": speech.count_parameters(models.teacher),
              "student-fp32": speech.count_parameters(models.student),
              "student-int8": speech.count_parameters(models.student)}
    variants = []
    for name, row in table.iterrows():
        t = timings[name]
        variants.append(Variant(
            name=name, latency_ms_p50=t.p50, latency_ms_p90=t.p90,
            throughput_per_s=t.throughput_per_s, size_mb=row["size_kb"] / 1024,
            peak_rss_mb=memory[name], quality={"metric": "accuracy", "value": row["accuracy"]},
            extra={"speedup_vs_baseline": base / t.p50, "size_kb": row["size_kb"],
                   "parameters": params[name], "latency_ms_p50_cold": row["cold_ms_p50"],
                   "speedup_vs_baseline_cold": row["cold_speedup"],
                   "accuracy_vs_baseline": row["accuracy"] - table.loc["teacher-fp32",
                                                                         "accuracy"]}))
    by = {v.name: v for v in variants}
    int8, fp32 = by["student-int8"], by["student-fp32"]
    drop = fp32.quality["value"] - int8.quality["value"]
    stream_out = {k: stream[k] for k in (
        "precision", "recall", "f1", "false_alarms_per_hour", "rtf", "hits", "false_alarms",
        "missed", "commands", "detections", "tolerance_s", "audio_seconds",
        "processing_seconds", "windows", "windows_run", "vad_s", "features_s", "spotter_s")}
    stream_out.update({f"{k}_one_threshold": one[k] for k in (
        "precision", "recall", "f1", "false_alarms_per_hour")})
    stream_out.update(thresholds=per_word, validation_seeds=list(p["validation"]["seeds"]),
                      validation_seconds=p["validation"]["seconds"])
    targets = [
        target("student-int8", accuracy=(int8.quality["value"], 0.90, "min"),
               accuracy_drop_vs_student_fp32=(drop, 0.005, "max"),
               size_kb=(int8.extra["size_kb"], 100.0, "max"),
               speedup_vs_teacher=(int8.extra["speedup_vs_baseline"], 10.0, "min")),
        target("streaming", rtf=(stream["rtf"], 0.05, "max"), f1=(stream["f1"], 0.9, "min"))]
    return BenchResult(
        suite="speech", smoke=smoke, hardware=measure.fingerprint(), baseline="teacher-fp32",
        variants=variants,
        extra={"quality_metric": "accuracy", "threads": THREADS,
               "features_ms_p50": feats.p50, "timing_block": speech.evaluate.BLOCK,
               "data": {"commands": list(ds.config.commands), "labels": list(ds.labels),
                        "train_clips": len(ds.y_train), "test_clips": len(ds.y_test),
                        "held_out_variants": list(ds.config.held_out),
                        "train_voices": len(ds.config.voices("train")),
                        "test_voices": len(ds.config.voices("test")),
                        "test_snr_db": ds.config.test_snr_db, "seed": ds.config.seed},
               "quantization": {k: (str(v) if k == "path" else v)
                                for k, v in models.quant.items()},
               "streaming": stream_out, "targets": targets})
