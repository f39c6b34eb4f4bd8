"""Prometheus metrics for the server: counters and histograms kept per replica, summed over
replicas, written in Prometheus' text format (what `/metrics` returns).

Each replica counts locally (no lock, no network per request) and pushes a snapshot of its
cumulative values to one small store actor twice a second; `/metrics` renders the sum. A
replica that dies keeps its last snapshot in the sum, so counters never go backwards.

Metric names (labels in braces):
    deploylab_requests_total{model,version,code}        every request a replica received
    deploylab_errors_total{model,code,reason}           4xx/5xx by reason (bad_json, ...)
    deploylab_request_latency_seconds{model,version}    histogram: receipt to response
    deploylab_batch_size{model,version}                 histogram: rows per model call
    deploylab_inference_seconds{model,version}          histogram: one model call

A request that Serve cancels counts with code 499 and reason "cancelled" (nginx's "client
closed request"): past the server's request timeout (the client got a 504) or when the
client hung up. A request that never reached a replica is in none of these counts. This
includes the rare retry that Serve's router loses after a replica dies.

Example:
    >>> m = Metrics()
    >>> m.inc("deploylab_requests_total", {"model": "m", "version": "1", "code": "200"})
    >>> print(render([m.snapshot()]))
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["BUCKETS", "HELP", "Metrics", "MetricsStore", "render"]

# Upper bounds of each histogram's buckets (Prometheus' `le`); +Inf is added.
BUCKETS: dict[str, tuple[float, ...]] = {
    "deploylab_request_latency_seconds": (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                          0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0),
    "deploylab_inference_seconds": (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                    1.0, 2.5),
    "deploylab_batch_size": (1, 2, 4, 8, 16, 32, 64, 128, 256),
}
HELP = {
    "deploylab_requests_total": ("counter", "Requests received, by model, version and code "
                                 "(499: cancelled, past the timeout or by the client)."),
    "deploylab_errors_total": ("counter", "Requests refused, failed or cancelled, by code "
                               "and reason."),
    "deploylab_request_latency_seconds": ("histogram", "Time from receipt to response."),
    "deploylab_inference_seconds": ("histogram", "Time of one batched model call."),
    "deploylab_batch_size": ("histogram", "Rows in one batched model call."),
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """One replica's cumulative counters and histograms."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], float] = {}
        # histogram -> [bucket counts (one per bound, not cumulative) + overflow, sum]
        self.histograms: dict[tuple[str, Labels], list] = {}
        self.version = 0  # bumps on every change, so unchanged snapshots need no push

    def inc(self, name: str, labels: dict[str, str], value: float = 1.0) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value
        self.version += 1

    def observe(self, name: str, labels: dict[str, str], value: float) -> None:
        bounds = BUCKETS[name]
        key = (name, tuple(sorted(labels.items())))
        h = self.histograms.setdefault(key, [[0] * (len(bounds) + 1), 0.0])
        i = next((j for j, b in enumerate(bounds) if value <= b), len(bounds))
        h[0][i] += 1
        h[1] += value
        self.version += 1

    def snapshot(self) -> dict:
        """Plain data (picklable) of the current values."""
        return {"counters": dict(self.counters),
                "histograms": {k: [list(v[0]), v[1]] for k, v in self.histograms.items()}}


def _labels(labels: Labels, extra: tuple = ()) -> str:
    items = [*labels, *extra]
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _escape(v: str) -> str:
    return str(v).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf"
    return repr(int(x)) if float(x).is_integer() else repr(float(x))


def render(snapshots: Iterable[dict]) -> str:
    """Sum snapshots (one per replica) and write them in Prometheus' text format."""
    counters: dict = {}
    hists: dict = {}
    for snap in snapshots:
        for k, v in snap["counters"].items():
            counters[k] = counters.get(k, 0.0) + v
        for k, (counts, total) in snap["histograms"].items():
            h = hists.setdefault(k, [[0] * len(counts), 0.0])
            h[0] = [a + b for a, b in zip(h[0], counts, strict=True)]
            h[1] += total
    lines: list[str] = []
    for name, (kind, text) in HELP.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        if kind == "counter":
            for (n, labels), v in sorted(counters.items()):
                if n == name:
                    lines.append(f"{name}{_labels(labels)} {_num(v)}")
            continue
        for (n, labels), (counts, total) in sorted(hists.items()):
            if n != name:
                continue
            running = 0
            for bound, c in zip((*BUCKETS[name], math.inf), counts, strict=True):
                running += c
                lines.append(f"{name}_bucket{_labels(labels, (('le', _num(bound)),))} "
                             f"{running}")
            lines.append(f"{name}_sum{_labels(labels)} {_num(total)}")
            lines.append(f"{name}_count{_labels(labels)} {running}")
    return "\n".join(lines) + "\n"


class MetricsStore:
    """The actor body that holds every replica's latest snapshot (made a Ray actor by
    `app.py`; plain Python here so it is testable without Ray)."""

    def __init__(self) -> None:
        self.snapshots: dict[str, dict] = {}

    def push(self, replica: str, snapshot: dict) -> None:
        self.snapshots[replica] = snapshot

    def render(self) -> str:
        return render(self.snapshots.values())

    def replicas(self) -> list[str]:
        return sorted(self.snapshots)
