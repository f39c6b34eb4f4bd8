"""`deploylab.serve.metrics`: replicas' counts summed into Prometheus text that
`monitor` reads back."""

import pytest

from deploylab.serve import monitor
from deploylab.serve.metrics import Metrics, MetricsStore, render


def test_metrics_sum_over_replicas_in_prometheus_text():
    a, b = Metrics(), Metrics()
    for m, size in ((a, 4), (b, 12)):
        m.inc("deploylab_requests_total", {"model": "m", "version": "1", "code": "200"})
        m.observe("deploylab_batch_size", {"model": "m", "version": "1"}, size)
        m.observe("deploylab_request_latency_seconds", {"model": "m", "version": "1"}, 0.02)
    store = MetricsStore()
    store.push("r1", a.snapshot())
    store.push("r2", b.snapshot())
    text = store.render()
    assert text == render([a.snapshot(), b.snapshot()])
    assert 'deploylab_requests_total{code="200",model="m",version="1"} 2' in text
    hist = monitor.histogram(text, "deploylab_batch_size")
    assert dict(zip(hist["le"], hist["count"], strict=True))[4.0] == 1
    assert dict(zip(hist["le"], hist["count"], strict=True))[16.0] == 1
    table = monitor.requests_table(text)
    assert table["requests"].sum() == 2 and table["share"].sum() == pytest.approx(1)
    p50 = monitor.histogram_quantile(text, "deploylab_request_latency_seconds", 0.5)
    assert 0.01 < p50 <= 0.025
