"""`deploylab.serve.monitor`: Prometheus text as tables and quantiles, latency against an
SLO, agreement of two versions and drift tests, each refusing input it cannot judge."""

import numpy as np
import pytest

from deploylab.serve import monitor
from deploylab.serve.metrics import Metrics, MetricsStore

RAY_TEXT = """\
# HELP ray_serve_num_http_requests_total The number of HTTP requests processed.
# TYPE ray_serve_num_http_requests_total counter
ray_serve_num_http_requests_total{application="a",method="POST",route="/",status_code="200"} 5.0
ray_serve_num_http_requests_total{application="b",method="POST",route="/b",status_code="200"} 2.0
ray_serve_num_http_requests_total{application="a",method="POST",route="/",status_code="408"} 1.0
ray_serve_num_http_requests_total{application="a",method="GET",route="/",status_code="200"} 9.0
ray_serve_num_http_requests_total{application="a",method="POST",route="/",status_code="500"} 3.0
"""


def test_proxy_requests_sum_one_method_by_status_over_routes_and_nodes():
    assert monitor.proxy_requests(RAY_TEXT).to_dict() == {"200": 7, "408": 1, "500": 3}
    assert monitor.proxy_requests(RAY_TEXT, method="GET").to_dict() == {"200": 9}
    two_nodes = RAY_TEXT + "\n" + RAY_TEXT.replace("5.0", "1.0")  # Server.ray_metrics joins
    assert monitor.proxy_requests(two_nodes)["200"] == 7 + 3
    assert monitor.proxy_requests("").empty


def test_batch_totals_sum_batches_rows_and_model_time_per_model():
    a, b = Metrics(), Metrics()
    for m, (model, size, seconds) in ((a, ("m", 4, 0.01)), (b, ("m", 12, 0.03)),
                                      (a, ("other", 1, 0.5))):
        m.observe("deploylab_batch_size", {"model": model, "version": "1"}, size)
        m.observe("deploylab_inference_seconds", {"model": model, "version": "1"}, seconds)
    store = MetricsStore()
    store.push("r1", a.snapshot())
    store.push("r2", b.snapshot())
    text = store.render()
    assert monitor.batch_totals(text, "m") == pytest.approx([2, 16, 0.04])
    assert monitor.batch_totals(text) == pytest.approx([3, 17, 0.54])
    assert monitor.batch_totals(text, "absent").tolist() == [0, 0, 0]


def test_slo_report_counts_errors_as_misses():
    r = monitor.slo_report([10, 20, 30, 300], slo_ms=100, target=0.7, errors=1)
    assert r["within_slo"] == pytest.approx(0.6) and r["error_rate"] == pytest.approx(0.2)
    assert r["met"] is False


def test_agreement_and_drift_tests():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 8))
    r = monitor.agreement(a, a + 1e-4, corpus_primary=a, corpus_candidate=a)
    assert r["agreement"] == 1.0 and r["top1_agreement"] == 1.0
    same = monitor.ks_drift(rng.normal(10, 2, 300), rng.normal(10, 2, 300))
    moved = monitor.ks_drift(rng.normal(10, 2, 300), rng.normal(14, 2, 300))
    assert not same.drifted and moved.drifted
    emb_same = monitor.embedding_drift(rng.standard_normal((300, 8)),
                                       rng.standard_normal((300, 8)))
    emb_moved = monitor.embedding_drift(rng.standard_normal((300, 8)),
                                        rng.standard_normal((300, 8)) + 0.5)
    assert not emb_same.drifted and emb_moved.drifted and emb_moved.tests == 8


def _latencies(*seconds: float) -> str:
    m = Metrics()
    for s in seconds:
        m.observe("deploylab_request_latency_seconds", {"model": "m", "version": "1"}, s)
    store = MetricsStore()
    store.push("r1", m.snapshot())
    return store.render()


def test_histogram_quantile_interpolates_within_a_bucket_as_prometheus_does():
    text = _latencies(0.002, 0.004, 0.007, 0.009)  # two in (0, 5 ms], two in (5, 10 ms]
    name = "deploylab_request_latency_seconds"
    assert monitor.histogram_quantile(text, name, 0.5) == pytest.approx(0.005)
    assert monitor.histogram_quantile(text, name, 0.75) == pytest.approx(0.0075)
    assert np.isnan(monitor.histogram_quantile(text, name, 0.5, {"model": "other"}))


def test_histogram_quantile_past_the_last_bound_reports_that_bound():
    text = _latencies(0.02, 30.0, 40.0)  # two slower than the last bound, 10 s
    assert monitor.histogram_quantile(text, "deploylab_request_latency_seconds", 0.99) == 10.0
    assert np.isnan(monitor.histogram_quantile("", "deploylab_request_latency_seconds", 0.5))
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\], got 99"):
        monitor.histogram_quantile(text, "deploylab_request_latency_seconds", 99)


def test_slo_report_with_only_errors_has_no_percentiles_and_misses():
    r = monitor.slo_report([], slo_ms=100, errors=3)
    assert np.isnan(r["p99_ms"]) and r["within_slo"] == 0 and r["met"] is False
    assert monitor.slo_report([10, 20], slo_ms=100, target=1.0)["met"] is True


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"latencies_ms": [], "slo_ms": 100}, "no requests to judge"),
    ({"latencies_ms": [10], "slo_ms": 0}, "need slo_ms > 0"),
    ({"latencies_ms": [10], "slo_ms": 100, "target": 99}, "target=99"),
    ({"latencies_ms": [10], "slo_ms": 100, "errors": -1}, "errors=-1"),
])
def test_slo_report_refuses_what_it_cannot_judge(kwargs, words):
    with pytest.raises(ValueError, match=words):
        monitor.slo_report(**kwargs)


def test_agreement_needs_two_arrays_of_one_shape():
    with pytest.raises(ValueError, match=r"one shape, got \(4, 8\) and \(4, 7\)"):
        monitor.agreement(np.ones((4, 8)), np.ones((4, 7)))
    low = monitor.agreement(np.eye(4), np.eye(4)[::-1])  # orthogonal pairs
    assert low["agreement"] == 0.0 and low["cosine_mean"] == 0.0


GOOD = np.arange(20.0)


@pytest.mark.parametrize(("reference", "live", "words"), [
    (GOOD, GOOD[:4], "need >= 5 values in each window, got 20 and 4"),
    (GOOD, np.r_[GOOD[:9], np.nan], "the live window holds NaN"),
    (np.r_[np.inf, GOOD], GOOD, "the reference window holds NaN or infinite"),
    (GOOD.reshape(10, 2), GOOD, "need 1-D sequences"),
])
def test_ks_drift_refuses_windows_it_cannot_judge(reference, live, words):
    with pytest.raises(ValueError, match=words):
        monitor.ks_drift(reference, live)


def test_embedding_drift_refuses_windows_it_cannot_judge():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 8))
    with pytest.raises(ValueError, match=r"\(n, d\) and \(m, d\) arrays, got shapes"):
        monitor.embedding_drift(ref, ref[:, :4])
    with pytest.raises(ValueError, match="got 50 and 3"):
        monitor.embedding_drift(ref, ref[:3])
    with pytest.raises(ValueError, match="live window holds NaN"):
        monitor.embedding_drift(ref, np.where(ref > 2, np.nan, ref))
    with pytest.raises(ValueError, match="projections must be >= 1, got 0"):
        monitor.embedding_drift(ref, ref, projections=0)
