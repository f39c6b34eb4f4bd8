"""Request validation, metrics text and monitoring helpers: no Ray, no HTTP."""

import json

import numpy as np
import pytest

from deploylab.serve import monitor
from deploylab.serve.client import build_request, decode_outputs
from deploylab.serve.metrics import Metrics, MetricsStore, render
from deploylab.serve.protocol import (
    ProtocolError,
    TensorSpec,
    encode_response,
    parse_request,
    render_response,
)

X = [TensorSpec("x", "FP32", (-1, 4))]
Y = [TensorSpec("y", "FP32", (-1, 2))]
TEXT = [TensorSpec("text", "BYTES", (-1,))]
EMB = [TensorSpec("embedding", "FP32", (-1, 3))]


def body(**kw) -> bytes:
    req = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                       "data": list(range(8))}]}
    req["inputs"][0].update(kw)
    return json.dumps(req).encode()


def test_a_valid_request_becomes_arrays_with_rows():
    req = parse_request(body(), X, Y)
    assert req.rows == 2 and req.inputs["x"].shape == (2, 4)
    assert req.inputs["x"].dtype == np.float32 and req.outputs == ["y"]


def test_nested_data_is_read_row_major():
    req = parse_request(body(data=[[0, 1, 2, 3], [4, 5, 6, 7]]), X, Y)
    assert req.inputs["x"][1, 0] == 4


@pytest.mark.parametrize(("raw", "reason", "words"), [
    (b"{not json", "bad_json", "not valid JSON"),
    (b"[1, 2]", "bad_json", "JSON object"),
    (json.dumps({"inputs": []}).encode(), "missing_input", "missing input(s) ['x']"),
    (body(name="z"), "extra_input", "unexpected input(s) ['z']"),
    (body(datatype="INT64"), "wrong_datatype", "does not match the model's FP32"),
    (body(shape=[2, 5]), "wrong_shape", "does not fit"),
    (body(shape=[8]), "wrong_shape", "1 dimensions"),
    (body(shape=[3, 4]), "wrong_shape", "needs 12 values"),
    (body(shape=[0, 4], data=[]), "empty_batch", "empty batch"),
    (body(data=["a"] * 8), "wrong_datatype", "value of another type"),
    (body(data=None), "bad_data", "'data' must be a list"),
])
def test_each_bad_request_is_a_400_naming_the_problem(raw, reason, words):
    with pytest.raises(ProtocolError) as e:
        parse_request(raw, X, Y)
    assert e.value.status == 400 and e.value.reason == reason
    assert words in str(e.value)


def test_too_many_rows_unknown_outputs_and_long_texts_are_refused():
    with pytest.raises(ProtocolError, match="over this model's limit of 1"):
        parse_request(body(), X, Y, max_rows=1)
    with pytest.raises(ProtocolError, match=r"unknown output\(s\) \['q'\]"):
        parse_request(json.dumps({**json.loads(body()), "outputs": [{"name": "q"}]}), X, Y)
    text = json.dumps(build_request({"text": ["ab" * 50]}))
    with pytest.raises(ProtocolError, match="100 characters is over the limit of 10"):
        parse_request(text, TEXT, EMB, max_text_chars=10)
    assert parse_request(text, TEXT, EMB).inputs["text"][0] == "ab" * 50


def test_client_request_and_server_response_round_trip():
    req = parse_request(json.dumps(build_request({"x": np.ones((2, 4), np.float32)},
                                                 request_id="7")), X, Y)
    assert req.id == "7"
    out = encode_response("m", "1", req.id, {"y": np.arange(4, dtype=np.float32).reshape(2, 2)})
    assert out["id"] == "7" and out["outputs"][0]["datatype"] == "FP32"
    np.testing.assert_array_equal(decode_outputs(json.loads(json.dumps(out)))["y"],
                                  [[0, 1], [2, 3]])


def test_tensor_specs_validate_themselves():
    with pytest.raises(ValueError, match="datatype must be one of"):
        TensorSpec("x", "FLOAT", (-1,))
    with pytest.raises(ValueError, match="shape needs"):
        TensorSpec("x", "FP32", (0,))


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


def test_rendered_response_carries_the_same_values_in_fewer_bytes():
    rng = np.random.default_rng(0)
    emb = (rng.standard_normal((2, 384)) * 10.0 ** rng.integers(-30, 30, (2, 384))
           ).astype(np.float32)
    outs = {"embedding": emb, "ids": np.arange(3, dtype=np.int64),
            "flags": np.array([True, False]), "text": np.array(["a", "é"], dtype=object)}
    wire = render_response("m", "2", "9", outs)
    body = json.loads(wire)
    assert body["id"] == "9" and body["model_version"] == "2"
    back = decode_outputs(body)
    for k, v in outs.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)  # float32 bit for bit
    assert len(wire) < len(json.dumps(encode_response("m", "2", "9", outs)))


def test_rendered_response_refuses_non_finite_values():
    with pytest.raises(ValueError, match="NaN or infinite"):
        render_response("m", "1", None, {"y": np.array([1.0, np.inf], np.float32)})
