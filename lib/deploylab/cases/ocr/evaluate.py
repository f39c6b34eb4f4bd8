"""Scoring a pipeline on the generated benchmark: one row per image, a summary, and the
recognizer alone on the true crops.

Example:
    >>> ev = evaluate(engine, make_benchmark(32))
    >>> ev.summary                      # det_f1, word_accuracy, cer, latency p50/p90, ...
    >>> ev.by("size")                   # the same scores per font size
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import Sample
from .metrics import detection_scores, end_to_end, match, recognition_scores

__all__ = ["Evaluation", "compare", "evaluate", "matched_pairs", "recognition_on_truth"]


@dataclass
class Evaluation:
    """What `evaluate` found.

    Args:
        samples (list[Sample]): the images scored.
        results (list[OcrResult]): the pipeline's output per image.
        summary (dict): det_precision, det_recall, det_f1, word_accuracy, word_precision,
            cer, line_accuracy (end to end), latency_ms_p50/p90 (per image), ms_per_line,
            images, lines, words.
    """

    samples: list
    results: list
    summary: dict

    def table(self):
        """One row per image: its conditions, detection and end-to-end scores, timings."""
        import pandas as pd

        rows = []
        for s, r in zip(self.samples, self.results, strict=True):
            true = [line.quad for line in s.lines]
            det = detection_scores([list(r.boxes)], [true])
            e2e = end_to_end([(list(r.boxes), r.texts)],
                             [(true, [line.text for line in s.lines])])
            rows.append({**s.meta, "lines": len(s.lines), "words": s.words,
                         "detected": len(r.boxes), "det_f1": det["f1"],
                         "det_recall": det["recall"], "word_accuracy": e2e["word_accuracy"],
                         "cer": e2e["cer"], "total_ms": r.timings.get("total_ms"),
                         "truth": " | ".join(line.text for line in s.lines),
                         "predicted": " | ".join(r.texts)})
        return pd.DataFrame(rows)

    def by(self, column: str, bins=None):
        """Scores grouped by one condition (e.g. "size", "font", "background"), pooled over
        the images of each group (words and lines summed before dividing)."""
        t = self.table()
        key = t[column] if bins is None else __import__("pandas").cut(t[column].abs(), bins)
        rows = {}
        for value, idx in t.groupby(key, observed=True).groups.items():
            part = [i for i in idx]
            sub = _scores([self.samples[i] for i in part], [self.results[i] for i in part])
            rows[value] = {"images": len(part), "det_f1": sub["det_f1"],
                           "word_accuracy": sub["word_accuracy"], "cer": sub["cer"]}
        import pandas as pd

        return pd.DataFrame(rows).T.rename_axis(column)


def _scores(samples: Sequence[Sample], results: Sequence) -> dict:
    true = [[line.quad for line in s.lines] for s in samples]
    det = detection_scores([list(r.boxes) for r in results], true)
    e2e = end_to_end([(list(r.boxes), r.texts) for r in results],
                     [(t, [line.text for line in s.lines]) for t, s in zip(true, samples,
                                                                            strict=True)])
    return {"det_precision": det["precision"], "det_recall": det["recall"],
            "det_f1": det["f1"], "word_accuracy": e2e["word_accuracy"],
            "word_precision": e2e["word_precision"], "cer": e2e["cer"],
            "line_accuracy": e2e["line_accuracy"], "lines": e2e["lines"],
            "words": e2e["words"]}


def evaluate(engine, samples: Sequence[Sample], *, progress: bool = False) -> Evaluation:
    """Run a pipeline over benchmark images and score it.

    Args:
        engine (OcrEngine): the pipeline (anything callable image -> OcrResult).
        samples (Sequence[Sample]): from `make_benchmark`.
        progress (bool, default False): a tqdm bar.

    Returns:
        Evaluation: per-image results and the summary (latency from this one pass: for
        comparisons between pipelines use the benchmark suite, which interleaves them).
    """
    it = samples
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(samples, desc="images", leave=False)
    results = [engine(s.image) for s in it]
    summary = _scores(samples, results)
    ms = np.array([r.timings["total_ms"] for r in results]) if results else np.zeros(1)
    crops = sum(r.timings["crops"] for r in results)
    summary.update(latency_ms_p50=float(np.percentile(ms, 50)),
                   latency_ms_p90=float(np.percentile(ms, 90)),
                   ms_per_line=float(ms.sum() / crops) if crops else None,
                   det_ms_mean=float(np.mean([r.timings["det_ms"] for r in results]))
                   if results else None,
                   rec_ms_mean=float(np.mean([r.timings["rec_ms"] for r in results]))
                   if results else None,
                   images=len(samples))
    return Evaluation(list(samples), results, summary)


def recognition_on_truth(engine, samples: Sequence[Sample], *, batch: int | None = None
                         ) -> dict:
    """The recognizer alone, on the true line crops (detection errors excluded).

    Returns:
        dict: cer, word_accuracy, word_precision, line_accuracy, lines, words, and
        `predictions`/`truths` (lists of strings).
    """
    from .engine import crop_quad, pad_quad

    crops, truths = [], []
    for s in samples:
        for line in s.lines:
            crops.append(crop_quad(s.image, pad_quad(line.quad)))
            truths.append(line.text)
    preds = [t for t, _ in engine.recognize(crops, batch)] if crops else []
    return {**recognition_scores(preds, truths), "predictions": preds, "truths": truths}


def matched_pairs(sample: Sample, result) -> list[tuple[int, int, float]]:
    """Detection matches of one image (predicted index, true index, IoU)."""
    return match(list(result.boxes), [line.quad for line in sample.lines])


def _round_robin(engines: dict, images: list) -> dict:
    """Zero-argument calls for `measure.compare`: each runs its engine on the next image."""
    state = dict.fromkeys(engines, 0)

    def call(name):
        def run():
            engines[name](images[state[name] % len(images)])
            state[name] += 1
        return run

    return {k: call(k) for k in engines}


def time_pipelines(pipelines: dict, images: Sequence, *, repeats: int = 16, warmup: int = 1,
                   max_time_s: float | None = 240, block: int = 4) -> dict:
    """Latency per image of several pipelines, timed interleaved: each round runs every
    pipeline on `block` images in a row (the next images of `images`, round robin), in a
    shuffled order, with a rest after each block (see `measure.compare`).

    Args:
        pipelines (dict[str, OcrConfig | OcrEngine]): name -> config or built engine.
        images (Sequence): what the engines read (arrays, paths, bytes).
        repeats, warmup, max_time_s, block: the timed rounds (see `measure.compare`).

    Returns:
        dict[str, measure.Timing]: in the order of `pipelines`.
    """
    from ... import measure
    from .engine import OcrEngine

    if not images:
        raise ValueError("time_pipelines() needs at least one image")
    engines = {k: p if isinstance(p, OcrEngine) else OcrEngine(p) for k, p in pipelines.items()}
    return measure.compare(_round_robin(engines, list(images)), warmup=warmup,
                           repeats=repeats, max_time_s=max_time_s, block=block)


def compare(configs: dict, samples: Sequence[Sample], *, timing_images: int = 8,
            repeats: int = 16, warmup: int = 1, baseline: str | None = None,
            max_time_s: float = 240, progress: bool = False, block: int = 4):
    """Several pipelines on the same images: quality of each, then latency per image timed
    interleaved (each round runs every pipeline on `block` images in a row, in a shuffled
    order, so drift of the machine hits them alike; blocks with a rest after each keep a
    spinning session's threads off the next pipeline's cores).

    Args:
        configs (dict[str, OcrConfig]): name -> config (e.g. `variant_configs(...)`).
        samples (Sequence[Sample]): scored images; the first `timing_images` are timed.
        timing_images, repeats, warmup, max_time_s, block: the timed rounds (see
            `measure.compare`); each pipeline gets repeats x block timed images.
        baseline (str | None, default None): the name ratios refer to; the first if None.
        progress (bool, default False): a bar per pipeline while scoring.

    Returns:
        tuple[pandas.DataFrame, dict[str, Evaluation], dict[str, measure.Timing]]: one row
        per pipeline (latency p50/p90 per image and per line, speedup, det and rec ms,
        detection P/R/F1, word accuracy, CER, size), the evaluations, the timings.
    """
    import pandas as pd

    from .engine import OcrEngine, model_size_mb

    engines = {k: OcrEngine(c) for k, c in configs.items()}
    evals = {k: evaluate(e, samples, progress=progress) for k, e in engines.items()}
    timings = time_pipelines(engines, [s.image for s in samples[:timing_images]],
                             repeats=repeats, warmup=warmup, max_time_s=max_time_s, block=block)
    baseline = baseline or next(iter(configs))
    lines = np.mean([len(s.lines) for s in samples[:timing_images]])
    rows = []
    for k, ev in evals.items():
        s, t = ev.summary, timings[k]
        rows.append({"variant": k, "latency_ms_p50": t.p50, "latency_ms_p90": t.p90,
                     "ms_per_line": t.p50 / max(lines, 1e-9),
                     "speedup": timings[baseline].p50 / t.p50,
                     "det_ms": s["det_ms_mean"], "rec_ms": s["rec_ms_mean"],
                     "det_precision": s["det_precision"], "det_recall": s["det_recall"],
                     "det_f1": s["det_f1"], "word_accuracy": s["word_accuracy"],
                     "cer": s["cer"], "line_accuracy": s["line_accuracy"],
                     "size_mb": model_size_mb(configs[k])})
    return pd.DataFrame(rows).set_index("variant"), evals, timings
