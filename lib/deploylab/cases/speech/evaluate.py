"""The case study's comparison: the three variants side by side, and the streaming run.

`compare` scores each ONNX variant on the held-out voices (accuracy, per class and over
all), times one 1-second clip through each on one thread (a keyword spotter owns one small
core), and measures sizes on disk. Latency is the model's: the log-mel front end is shared
by all three and timed once, separately (`features_ms`). `snr_sweep` re-scores on the test
clips with noise at other levels.

Timing is interleaved against drift, in blocks of BLOCK calls of a variant (the first
untimed), because a deployed spotter runs alone: its weights stay in cache from one window
to the next. Called one at a time in turn, each student call would start with caches the
teacher's 2.3 MB of weights had just filled, and the tiny model pays that miss on every
call (~40% here, the teacher ~2%); that figure is kept as `cold_ms_p50`.

Example:
    >>> table, timings, features = compare(run.paths, ds)
    >>> stream = streaming_eval(run.paths["student-int8"], ds, seconds=300)
    >>> per_word = calibrated_thresholds(run.paths["student-int8"], ds)
    >>> tuned = streaming_eval(run.paths["student-int8"], ds, thresholds=per_word)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ... import measure
from .data import noisy_test_features
from .features import log_mel
from .training import accuracy, onnx_logits

__all__ = ["SMOKE_VALIDATION", "VALIDATION", "calibrated_thresholds", "compare", "confusion",
           "per_class_accuracy", "snr_sweep", "streaming_eval"]

# the validation recordings thresholds are calibrated on (smoke: one short one; seed 0 is the
# reported recording); prefetch, the bench and the notebook share them, and so the cached
# thresholds
VALIDATION = {"seeds": (1, 2, 3), "seconds": 600.0}
SMOKE_VALIDATION = {"seeds": (1,), "seconds": 20.0}
BLOCK = 25  # calls of one variant in a row when timing (see the module docstring)


def compare(paths: dict, ds, *, repeats: int = 200, warmup: int = 20, threads: int = 1,
            block: int = BLOCK):
    """(DataFrame indexed by variant, {name: measure.Timing}, features Timing).

    Each variant gets about `repeats` timed calls, `block` in a row per round (warm, as
    deployed alone), and `repeats` more one call per round (cold: `cold_ms_p50`).
    """
    import pandas as pd

    x, y = ds.x_test.numpy(), ds.y_test.numpy()
    runners = {k: onnx_logits(p, threads) for k, p in paths.items()}
    clip = x[:1]
    calls = {k: (lambda r=r: r(clip)) for k, r in runners.items()}
    # one thread: nothing spins, so no rest between blocks
    timings = measure.compare(calls, warmup=warmup, repeats=max(3, -(-repeats // block)),
                              block=block, settle_s=0.0)
    cold = measure.compare(calls, warmup=warmup, repeats=repeats)
    audio = ds.audio_test[0].astype(np.float32) / 32768
    feats = measure.time_fn(lambda: log_mel(audio), warmup=warmup, repeats=repeats)
    base = next(iter(paths))
    rows = {}
    for k, r in runners.items():
        rows[k] = {"accuracy": accuracy(r, x, y), "latency_ms_p50": timings[k].p50,
                   "latency_ms_p90": timings[k].p90,
                   "speedup_vs_teacher": timings[base].p50 / timings[k].p50,
                   "cold_ms_p50": cold[k].p50, "cold_speedup": cold[base].p50 / cold[k].p50,
                   "size_kb": measure.size_on_disk(paths[k]) / 1024}
    return pd.DataFrame(rows).T, timings, feats


def per_class_accuracy(path, ds):
    """Accuracy of one variant per class (a Series indexed by label)."""
    import pandas as pd

    pred = onnx_logits(path)(ds.x_test.numpy()).argmax(1)
    y = ds.y_test.numpy()
    return pd.Series({lab: float((pred[y == i] == i).mean()) if (y == i).any() else np.nan
                      for i, lab in enumerate(ds.labels)}, name="accuracy")


def confusion(path, ds) -> np.ndarray:
    """[true, predicted] counts on the test set."""
    pred = onnx_logits(path)(ds.x_test.numpy()).argmax(1)
    n = len(ds.labels)
    out = np.zeros((n, n), np.int64)
    np.add.at(out, (ds.y_test.numpy(), pred), 1)
    return out


def snr_sweep(paths: dict, ds, snrs=(0.0, 5.0, 10.0, 20.0, float("inf"))):
    """Accuracy of each variant (columns) at each noise level (rows, dB; inf = clean)."""
    import pandas as pd

    y = ds.y_test.numpy()
    runners = {k: onnx_logits(p) for k, p in paths.items()}
    rows = {}
    for snr in snrs:
        x = noisy_test_features(ds, snr).numpy()
        rows[snr] = {k: accuracy(r, x, y) for k, r in runners.items()}
    return pd.DataFrame(rows).T.rename_axis("snr_db")


def streaming_eval(path, ds, *, seconds: float = 300.0, seed: int = 0, vad: bool = True,
                   recording=None, **spotter) -> dict:
    """Synthesize (or take) a long recording, run the VAD-gated spotter on it, score it.

    Returns:
        dict: precision, recall, f1, false_alarms_per_hour, rtf, windows run / total,
        timings, plus "recording" and "result" objects for plots.
    """
    from .streaming import StreamingSpotter, make_recording, score

    rec = recording or make_recording(ds.config, seconds, seed=seed)
    spot = StreamingSpotter(path, ds.labels, vad=vad, **spotter)
    spot.process(rec.audio[:16000 * 3])  # warm-up: sessions allocate on first run
    res = spot.process(rec.audio)
    out = score(res.detections, rec.truth, seconds=rec.seconds)
    out.update(rtf=res.rtf, audio_seconds=rec.seconds, processing_seconds=res.seconds,
               windows=res.windows, windows_run=res.windows_run, vad=vad,
               **{k: v for k, v in res.timings.items()}, recording=rec, result=res)
    return out


def calibrated_thresholds(path, ds, *, seeds=VALIDATION["seeds"],
                          seconds: float = VALIDATION["seconds"],
                          **spotter) -> dict[str, float]:
    """Per-word thresholds for one spotter model (`streaming.calibrate`), chosen on
    validation recordings (`seeds`, never the reported seed 0) and cached as JSON beside
    the model, keyed by the model file's hash, the recordings and the spotter settings.

    Args:
        path (str | Path): the spotter's ONNX file.
        ds (SpeechData): its data set (commands and held-out voices of the recordings).
        seeds (Sequence[int], default (1, 2, 3)): validation recordings.
        seconds (float, default 600): length of each.
        **spotter: further `StreamingSpotter` settings (smooth, threshold, vad...).
    """
    from ... import assets
    from ..._files import write_atomic
    from .streaming import StreamingSpotter, calibrate, make_recording

    if 0 in seeds:
        raise ValueError("seed 0 is the reported recording; calibrate on other seeds")
    path = Path(path)
    key = hashlib.sha256(json.dumps(
        [assets.sha256_file(path), ds.config.key(), list(seeds), seconds, spotter],
        sort_keys=True, default=str).encode()).hexdigest()[:12]
    cache = path.with_name(f"{path.stem}-thresholds-{key}.json")
    if cache.is_file():
        return json.loads(cache.read_text())
    recordings = [make_recording(ds.config, seconds, seed=s) for s in seeds]
    chosen = calibrate(StreamingSpotter(path, ds.labels, **spotter), recordings)
    write_atomic(cache, json.dumps(chosen, indent=1))
    return chosen
