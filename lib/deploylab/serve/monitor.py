"""Reading a running model: Prometheus metrics as tables, latency against an SLO, the
agreement of two model versions on the same traffic, and input drift with a statistical
test. Pure functions of text and arrays, so they work on any server's `/metrics` and on
logged traffic alike.

Example:
    >>> from deploylab.serve import monitor
    >>> text = client.metrics()
    >>> monitor.requests_table(text)                 # requests by model, version, code
    >>> monitor.proxy_requests(server.ray_metrics())  # what Serve's proxy answered
    >>> monitor.histogram_quantile(text, "deploylab_request_latency_seconds", 0.99)
    >>> monitor.ks_drift(reference_lengths, live_lengths).drifted
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DriftResult",
    "agreement",
    "batch_totals",
    "embedding_drift",
    "histogram",
    "histogram_quantile",
    "ks_drift",
    "proxy_requests",
    "requests_table",
    "samples",
    "slo_report",
]


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    """Every sample of one metric (labels, value) in Prometheus text; for a histogram give
    the series name (`..._bucket`, `..._count`, `..._sum`)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out.append((dict(s.labels), float(s.value)))
    return out


def _match(labels: dict, want: Mapping[str, str] | None) -> bool:
    return all(labels.get(k) == str(v) for k, v in (want or {}).items())


def batch_totals(text: str, model: str | None = None) -> np.ndarray:
    """Batches run, rows in them and seconds the model spent on them, so far, summed over
    replicas and versions (of `model`, or of every model). The difference of two readings
    describes what happened between them: rows / batches is the mean batch size, seconds
    over the wall time how busy the model was.

    Returns:
        numpy.ndarray: [batches, rows, model seconds].
    """
    want = None if model is None else {"model": model}
    return np.array([sum(v for lab, v in samples(text, series) if _match(lab, want))
                     for series in ("deploylab_batch_size_count", "deploylab_batch_size_sum",
                                    "deploylab_inference_seconds_sum")])


def requests_table(text: str):
    """Requests by model, version and HTTP code (499: cancelled), with each row's share.

    Returns:
        pandas.DataFrame: columns model, version, code, requests, share.
    """
    import pandas as pd

    rows = [{**lab, "requests": int(v)} for lab, v in samples(text, "deploylab_requests_total")]
    df = pd.DataFrame(rows, columns=["model", "version", "code", "requests"])
    df["share"] = df["requests"] / max(1, df["requests"].sum())
    return df.sort_values(["model", "version", "code"]).reset_index(drop=True)


def proxy_requests(text: str, method: str = "POST"):
    """Requests Serve's proxy answered, by HTTP status, summed over routes and nodes: from
    Ray's metrics (`Server.ray_metrics()`), which count what no replica saw as well.
    A request past the server's request timeout counts as 408 here, the status the proxy
    chose, though the client got a 504 (see `gateway`).

    Returns:
        pandas.Series: requests by status code (a str), sorted.
    """
    import pandas as pd

    counts: dict[str, int] = {}
    for lab, v in samples(text, "ray_serve_num_http_requests_total"):
        if lab.get("method") == method:
            counts[lab["status_code"]] = counts.get(lab["status_code"], 0) + int(v)
    return pd.Series(counts, name="requests", dtype=int).sort_index()


def histogram(text: str, name: str, labels: Mapping[str, str] | None = None):
    """One histogram's buckets, summed over series matching `labels`, not cumulative.

    Returns:
        pandas.DataFrame: columns le (upper bound), count (observations in the bucket).
    """
    import pandas as pd

    cum: dict[float, float] = {}
    for lab, v in samples(text, f"{name}_bucket"):
        if _match(lab, labels):
            le = float(lab["le"])
            cum[le] = cum.get(le, 0.0) + v
    bounds = sorted(cum)
    counts = np.diff([0.0] + [cum[b] for b in bounds])
    return pd.DataFrame({"le": bounds, "count": counts.astype(int)})


def histogram_quantile(text: str, name: str, q: float,
                       labels: Mapping[str, str] | None = None) -> float:
    """Estimate a quantile from histogram buckets the way Prometheus'
    `histogram_quantile` does (linear within the bucket); NaN without observations.

    Args:
        text (str): Prometheus text.
        name (str): the histogram, e.g. "deploylab_request_latency_seconds".
        q (float): the quantile in [0, 1] (0.99 for p99).
        labels (Mapping[str, str] | None): only series with these labels.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    h = histogram(text, name, labels)
    total = float(h["count"].sum())
    if total == 0:
        return float("nan")
    rank, seen, lower = q * total, 0.0, 0.0
    for le, c in zip(h["le"], h["count"], strict=True):
        if seen + c >= rank and c > 0:
            if math.isinf(le):
                return lower  # beyond the last bound: report the bound, as Prometheus does
            return lower + (le - lower) * (rank - seen) / c
        seen += c
        lower = le if not math.isinf(le) else lower
    return lower


def slo_report(latencies_ms: Sequence[float], slo_ms: float, *, target: float = 0.99,
               errors: int = 0) -> dict:
    """Latency percentiles against a service-level objective.

    Args:
        latencies_ms (Sequence[float]): successful requests' latencies.
        slo_ms (float): the objective, e.g. 200 ms.
        target (float, default 0.99): the fraction of requests that must meet it.
        errors (int, default 0): failed requests (they count as misses).

    Returns:
        dict: p50, p90, p99 (ms), within_slo (fraction of all requests, errors included),
        error_rate, and met (bool).

    Raises:
        ValueError: no requests at all, slo_ms <= 0, target outside (0, 1], errors < 0.
    """
    if not slo_ms > 0 or not 0 < target <= 1 or errors < 0:
        raise ValueError(f"need slo_ms > 0, 0 < target <= 1 and errors >= 0, got "
                         f"slo_ms={slo_ms!r}, target={target!r}, errors={errors!r}")
    lat = np.asarray(latencies_ms, dtype=float)
    total = len(lat) + errors
    if total == 0:
        raise ValueError("no requests to judge")
    within = float((lat <= slo_ms).sum() / total)
    pct = (lambda p: float(np.percentile(lat, p))) if len(lat) else (lambda p: float("nan"))
    return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "slo_ms": float(slo_ms),
            "within_slo": within, "error_rate": errors / total, "target": target,
            "met": within >= target}


def agreement(primary: np.ndarray, candidate: np.ndarray, *, corpus_primary=None,
              corpus_candidate=None, min_cosine: float = 0.99) -> dict:
    """How often a candidate model (e.g. int8) agrees with the primary (fp32) on the same
    requests: A/B or shadow traffic.

    Args:
        primary (np.ndarray): (n, d) embeddings from the model in production.
        candidate (np.ndarray): (n, d) embeddings of the same inputs from the candidate.
        corpus_primary, corpus_candidate (np.ndarray | None): (m, d) a document index
            embedded by each model; when given, agreement also counts queries whose
            nearest document is the same under both (what a search user would notice).
        min_cosine (float, default 0.99): a pair agrees when its cosine reaches this.

    Returns:
        dict: cosine_mean, cosine_min, agreement (fraction of pairs >= min_cosine) and,
        with corpora, top1_agreement.
    """
    from ..measure import cosine

    a, b = np.asarray(primary, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"need two (n, d) arrays of one shape, got {a.shape} and {b.shape}")
    c = cosine(a, b)
    out = {"n": len(a), "cosine_mean": float(c.mean()), "cosine_min": float(c.min()),
           "agreement": float((c >= min_cosine).mean()), "min_cosine": min_cosine}
    if corpus_primary is not None and corpus_candidate is not None:
        top_a = np.argmax(a @ np.asarray(corpus_primary, dtype=np.float64).T, axis=1)
        top_b = np.argmax(b @ np.asarray(corpus_candidate, dtype=np.float64).T, axis=1)
        out["top1_agreement"] = float((top_a == top_b).mean())
    return out


@dataclass
class DriftResult:
    """A drift test's outcome.

    Attributes:
        statistic (float): the test statistic (largest KS distance for several tests).
        pvalue (float): smallest p-value (before the multiple-test correction).
        threshold (float): the p-value under which drift is declared (alpha / tests).
        drifted (bool): pvalue < threshold.
        tests (int): how many tests were combined.
    """

    statistic: float
    pvalue: float
    threshold: float
    drifted: bool
    tests: int = 1


def _windows(reference, live, *, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Both windows as float arrays, refused when a test on them would mean nothing: too
    few values (a KS test on 3 values flags almost nothing), or NaN and infinities (which
    would silently sort to one end)."""
    ref, cur = np.asarray(reference, dtype=float), np.asarray(live, dtype=float)
    if ref.ndim != ndim or cur.ndim != ndim or ref.shape[1:] != cur.shape[1:]:
        want = "1-D sequences" if ndim == 1 else "(n, d) and (m, d) arrays"
        raise ValueError(f"need {want}, got shapes {ref.shape} and {cur.shape}")
    if len(ref) < 5 or len(cur) < 5:
        raise ValueError(f"need >= 5 values in each window, got {len(ref)} and {len(cur)}")
    for name, a in (("reference", ref), ("live", cur)):
        if not np.isfinite(a).all():
            raise ValueError(f"the {name} window holds NaN or infinite values: drop them "
                             "(or the requests they came from) before testing")
    return ref, cur


def ks_drift(reference: Sequence[float], live: Sequence[float], *,
             alpha: float = 0.01) -> DriftResult:
    """Two-sample Kolmogorov-Smirnov test: do live values (e.g. request lengths in tokens)
    come from the same distribution as the reference window?

    Args:
        reference (Sequence[float]): values from a period you trust (e.g. launch week).
        live (Sequence[float]): the recent window.
        alpha (float, default 0.01): false-alarm rate you accept per check.

    Returns:
        DriftResult.

    Raises:
        ValueError: a window of under 5 values, or one holding NaN or infinities.
    """
    from scipy.stats import ks_2samp

    ref, cur = _windows(reference, live, ndim=1)
    res = ks_2samp(ref, cur)
    return DriftResult(float(res.statistic), float(res.pvalue), alpha,
                       bool(res.pvalue < alpha))


def embedding_drift(reference: np.ndarray, live: np.ndarray, *, projections: int = 8,
                    alpha: float = 0.01, seed: int = 0) -> DriftResult:
    """Drift of embedding distributions: KS tests on random 1-D projections, with a
    Bonferroni correction (drift when any p-value < alpha / projections).

    Args:
        reference (np.ndarray): (n, d) embeddings of the reference window.
        live (np.ndarray): (m, d) embeddings of the live window.
        projections (int, default 8): random unit directions tested.
        alpha (float, default 0.01): overall false-alarm rate.
        seed (int, default 0): seed of the directions.

    Returns:
        DriftResult with the largest statistic and smallest p-value over directions.

    Raises:
        ValueError: windows of another width, of under 5 rows, or holding NaN or
            infinities; projections < 1.
    """
    from scipy.stats import ks_2samp

    if projections < 1:
        raise ValueError(f"projections must be >= 1, got {projections!r}")
    ref, cur = _windows(reference, live, ndim=2)
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((ref.shape[1], projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    results = [ks_2samp(ref @ dirs[:, k], cur @ dirs[:, k]) for k in range(projections)]
    p = min(float(r.pvalue) for r in results)
    threshold = alpha / projections
    return DriftResult(max(float(r.statistic) for r in results), p, threshold, p < threshold,
                       projections)
