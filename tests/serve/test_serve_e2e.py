"""The server end to end, on loopback: one server for the module (Ray starts once).

It serves a tiny torch model (lin:1), the same weights as ONNX (lin:2) and a tiny BERT
text model behind the MiniLM tokenizer (text:1), and an ONNX table lookup that refuses ids
past its end (lookup:1), with two replicas, and ends by stopping it and checking that
nothing is left behind.
"""

import json
import re
import time

import httpx
import numpy as np
import psutil
import pytest

from deploylab import serve
from deploylab.serve import Client, InferenceError, ModelSpec, TensorSpec, load, monitor

pytestmark = pytest.mark.slow
W = np.arange(8, dtype=np.float32).reshape(4, 2) / 8  # lin's weights: y = x @ W


def _onnx_lin(path):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _specs(tmp, lookup_onnx):
    import torch
    from transformers import BertConfig, BertModel

    lin = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W.T))
    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, vocab_size=30522))
    opts = {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}
    return [ModelSpec("lin", "1", lin, inputs=[TensorSpec("x", "FP32", (-1, 4))],
                      outputs=[TensorSpec("y", "FP32", (-1, 2))], **opts),
            ModelSpec("lin", "2", _onnx_lin(tmp / "lin.onnx"), **opts),
            ModelSpec("text", "1", bert, tokenizer="all-MiniLM-L6-v2", max_length=32, **opts),
            ModelSpec("lookup", "1", lookup_onnx, **opts)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, lookup_onnx):
    # a request timeout well under the load generator's 30 s (see the replica-kill test)
    s = serve.start(_specs(tmp_path_factory.mktemp("models"), lookup_onnx), num_replicas=2,
                    threads=1, replica_cpus=0.5, max_body_bytes=64_000, max_text_chars=2_000,
                    request_timeout_s=10)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url) as c:
        yield c


def test_it_binds_loopback_and_is_live_and_ready(server, client):
    assert server.url.startswith("http://127.0.0.1:")
    assert client.live() and client.ready()
    assert client.server_metadata()["name"] == "deploylab"
    index = {(m["name"], m["version"]) for m in client.models()}
    assert index == {("lin", "1"), ("lin", "2"), ("text", "1"), ("lookup", "1")}


def test_metadata_names_tensors_and_versions(client):
    meta = client.metadata("lin")
    assert meta["versions"] == ["1", "2"] and meta["version"] == "2"  # latest by default
    assert meta["platform"] == "onnxruntime"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.metadata("lin", "1")["platform"] == "pytorch"
    text = client.metadata("text")
    assert text["inputs"][0]["datatype"] == "BYTES"
    assert text["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 32]}]


def test_tensor_inference_agrees_across_versions(client):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for version in ("1", "2"):
        y = client.infer("lin", {"x": x}, version=version)["y"]
        np.testing.assert_allclose(y, x @ W, rtol=1e-5, atol=1e-6)


def test_text_inference_over_plain_http(server, client):
    body = {"id": "q1", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                                    "data": ["open a file", "sort a list in place"]}]}
    r = httpx.post(f"{server.url}/v2/models/text/infer", json=body, trust_env=False)
    assert r.status_code == 200 and r.json()["id"] == "q1"
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 32] and out["datatype"] == "FP32"
    emb = client.embed("text", ["open a file", "sort a list in place"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb.reshape(-1), out["data"], atol=1e-5)


def test_each_replica_also_answers_on_its_own_loopback_endpoint(server, client):
    urls = server.replica_urls()  # Serve's direct ingress: no proxy hop
    assert len(urls) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert server.url not in urls
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    for url in urls:
        with Client(url) as direct:
            assert direct.ready()
            np.testing.assert_allclose(direct.infer("lin", {"x": x})["y"], x @ W, rtol=1e-5,
                                       atol=1e-6)


def _batch_stats(text):
    labels = {"model": "text"}
    count = sum(v for lab, v in monitor.samples(text, "deploylab_batch_size_count")
                if lab["model"] == labels["model"])
    rows = sum(v for lab, v in monitor.samples(text, "deploylab_batch_size_sum")
               if lab["model"] == labels["model"])
    return count, rows


def _settled_metrics(client):
    time.sleep(1.0)  # every replica pushes its counts twice a second
    return client.metrics()


def test_concurrent_requests_form_batches(server, client):
    before = _batch_stats(_settled_metrics(client))
    bodies = [load.text_request(f"query number {i}") for i in range(40)]
    res = load.closed_loop(server.url, "text", bodies, concurrency=16, duration_s=3,
                           max_requests=240)
    assert res.requests > 0 and res.errors == {}
    after = _batch_stats(_settled_metrics(client))
    batches, rows = after[0] - before[0], after[1] - before[1]
    assert rows == res.ok and batches > 0
    assert rows / batches > 1.5, f"{rows} rows in {batches} batches: no batching happened"
    hist = monitor.histogram(client.metrics(), "deploylab_batch_size", {"model": "text"})
    assert hist[hist["le"] > 1]["count"].sum() > 0


LONG = " ".join(["word"] * 60)  # about 62 tokens, over text's max_length of 32


def _post(url, path, content, headers=None):
    return httpx.post(url + path, content=content, trust_env=False,
                      headers=headers or {"content-type": "application/json"})


def _lin(**tensor):
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                   "data": [1, 2, 3, 4], **tensor}]})


BAD = {
    "malformed JSON": ("/v2/models/lin/infer", "{\"inputs\": [", 400, "not valid JSON"),
    "missing input": ("/v2/models/lin/infer", json.dumps({"inputs": []}), 400, "missing input"),
    "extra input": ("/v2/models/lin/infer",
                    json.dumps({"inputs": [json.loads(_lin())["inputs"][0],
                                           {**json.loads(_lin())["inputs"][0], "name": "z"}]}),
                    400, "unexpected input(s) ['z']"),
    "wrong datatype": ("/v2/models/lin/infer", _lin(datatype="INT32"), 400, "datatype"),
    "wrong shape": ("/v2/models/lin/infer", _lin(shape=[2, 2]), 400, "does not fit"),
    "empty batch": ("/v2/models/lin/infer", _lin(shape=[0, 4], data=[]), 400, "empty batch"),
    "too many rows": ("/v2/models/lin/infer", _lin(shape=[9, 4], data=[0.0] * 36), 400,
                      "limit of 8"),
    "over-long text": ("/v2/models/text/infer", load.text_request(LONG).decode(), 400,
                       "tokens is over this model's limit of 32"),
    "text not UTF-8": ("/v2/models/text/infer", load.text_request("ab\ud800").decode(), 400,
                       "text 0 is not valid UTF-8"),
    "huge text": ("/v2/models/text/infer", load.text_request("x" * 3000).decode(), 400,
                  "3000 characters is over the limit"),
    "deeply nested JSON": ("/v2/models/lin/infer", "[" * 20_000 + "]" * 20_000, 400,
                           "nested too deeply"),
    "body too large": ("/v2/models/lin/infer", _lin(data=[0.0] * 20_000), 413,
                       "over the limit of 64000 bytes"),
    "unknown model": ("/v2/models/nope/infer", _lin(), 404, "unknown model 'nope'"),
    "unknown version": ("/v2/models/lin/versions/9/infer", _lin(), 404, "no version '9'"),
    "unknown route": ("/v2/nothing", "{}", 404, "POST /v2/nothing"),
    "wrong method": ("/v2/models/lin", "{}", 405, "Method Not Allowed (use GET)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_naming_it_and_the_next_request_succeeds(server, client, case):
    path, content, status, words = BAD[case]
    r = _post(server.url, path, content)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    ok = client.infer("lin", {"x": np.ones((1, 4), np.float32)})["y"]
    np.testing.assert_allclose(ok, np.ones((1, 4)) @ W, rtol=1e-6)


def test_a_body_sent_without_a_length_is_refused_at_the_limit(server, client):
    # chunked transfer: no content-length to refuse it by, so the replica counts as it reads
    for url in (server.url, server.replica_urls()[0]):
        r = httpx.post(url + "/v2/models/lin/infer", content=iter([b" " * 16_000] * 8),
                       headers={"content-type": "application/json"}, trust_env=False)
        assert r.status_code == 413, r.text
        assert "sent without a length" in r.json()["error"]
    assert client.infer("lin", {"x": np.ones((1, 4), np.float32)})["y"].shape == (1, 2)


def test_a_request_the_model_refuses_fails_alone_in_its_batch(server):
    # an id past the table's end fails the whole model call; the replica then runs each
    # request of the batch alone: the bad one gets a 400, the others their answers
    from concurrent.futures import ThreadPoolExecutor

    def send(i):
        ids = [[i % 10, 1, 99 if i % 8 == 0 else 2]]
        r = httpx.post(server.replica_urls()[0] + "/v2/models/lookup/infer", trust_env=False,
                       json={"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 3],
                                         "data": ids}]})
        return i, r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(48)))
    for i, status, body in answers:
        if i % 8 == 0:
            assert status == 400 and "out of data bounds" in body["error"], body
        else:
            assert status == 200, body
            assert body["outputs"][0]["data"][:2] == [2.0 * (i % 10), 2.0 * (i % 10) + 1]
    hist = monitor.histogram(server.client().metrics(), "deploylab_batch_size",
                             {"model": "lookup"})
    assert hist[hist["le"] > 1]["count"].sum() > 0  # batches formed, so the test means it


def test_mutated_requests_get_a_4xx_or_an_answer_never_a_5xx(server, client, mutate):
    # the protocol's fuzzer, over HTTP and through every model's prepare and run
    import random

    valid = {"lin": _lin(), "text": load.text_request("hello there", "yo").decode(),
             "lookup": json.dumps({"inputs": [{"name": "ids", "datatype": "INT64",
                                               "shape": [1, 3], "data": [[1, 2, 3]]}]})}
    rng, seen = random.Random(1), {}
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        for _ in range(300):
            model = rng.choice(list(valid))
            raw = json.dumps(mutate(rng, json.loads(valid[model])))
            r = http.post(f"/v2/models/{model}/infer", content=raw,
                          headers={"content-type": "application/json"})
            assert r.status_code < 500, (raw, r.text)
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 100, seen  # both paths exercised
    ok = client.infer("lin", {"x": np.ones((1, 4), np.float32)})["y"]
    np.testing.assert_allclose(ok, np.ones((1, 4)) @ W, rtol=1e-6)


def test_client_raises_with_the_servers_message(client):
    with pytest.raises(InferenceError, match="unknown model 'nope'") as e:
        client.metadata("nope")
    assert e.value.status == 404 and not e.value.retryable


def _refusals_logged(server) -> bool:
    lines = [json.loads(line) for f in server.log_files() for line in f.read_text().splitlines()
             if line.startswith("{")]
    return any("\"event\": \"refused\"" in rec.get("message", "") for rec in lines)


def test_errors_are_counted_by_reason_and_logged_as_json(server, client):
    text = _settled_metrics(client)  # the other replica's counts arrive within 0.5 s
    errors = {(lab["code"], lab["reason"])
              for lab, _ in monitor.samples(text, "deploylab_errors_total")}
    assert {("400", "bad_json"), ("413", "body_too_large"),
            ("404", "unknown_model")} <= errors
    table = monitor.requests_table(text)
    assert set(table["code"]) >= {"200", "400", "404", "413"}
    deadline = time.monotonic() + 10  # log lines are written by a background thread
    while not _refusals_logged(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _refusals_logged(server)


def test_a_replica_killed_under_load_leaves_no_request_unanswered(server, client):
    assert len(server.replicas()) == 2
    bodies = [load.text_request(f"query {i}") for i in range(20)]
    killed = []
    res = load.closed_loop(server.url, "text", bodies, concurrency=8, duration_s=4,
                           max_requests=2000,
                           events={1.0: lambda: killed.append(server.kill_replica())})
    assert killed, "the replica was not killed"
    table = res.table()
    statuses = set(table["status"])
    # answered: 200 or a retryable 5xx (a 504 for a retry of Serve's that never completed);
    # a failure shows what the unanswered requests saw
    answered = {200, 500, 502, 503, 504}
    unanswered = table[~table["status"].isin(answered)]
    assert statuses <= answered, (
        res.errors, unanswered[["t_s", "latency_ms", "error"]].round(2).to_dict("records"))
    assert 0 not in statuses
    assert res.table().query("t_s > 2")["status"].eq(200).any(), "the survivor kept serving"
    with Client(server.url, retries=5, backoff_s=0.2) as patient:
        assert patient.embed("text", ["after the crash"]).shape == (1, 32)


def test_a_sweep_can_aim_at_a_replica_directly(server):
    # after the log and metrics checks: `configure` redeploys, which starts fresh replicas
    direct = server.replica_urls()[0]
    as_started = {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}  # leaves the server as is
    table = load.sweep(server, "text", [load.text_request("open a file")],
                       settings={"direct": as_started}, concurrencies=[2], duration_s=0.5,
                       warmup_s=0.2, url=direct)
    row = table.iloc[0]
    assert row["setting"] == "direct" and row["concurrency"] == 2 and row["errors"] == 0
    assert row["throughput_per_s"] > 0 and row["mean_batch_size"] >= 1
    assert 0 < row["model_busy"] <= 1.05  # the model computed for part of the run
    # "replicas": every replica's own endpoint, looked up after each change; the metadata
    # reports the batching in force, not the one the server started with
    smaller = {"max_batch_size": 4, "batch_wait_timeout_s": 0.01}
    spread = load.sweep(server, "text", [load.text_request("open a file")],
                        settings={"both": smaller}, concurrencies=[4], duration_s=0.5,
                        warmup_s=0.2, url="replicas").iloc[0]
    assert spread["errors"] == 0 and spread["throughput_per_s"] > 0
    for url in server.replica_urls():
        with Client(url) as direct:
            params = direct.metadata("text")["parameters"]
        assert params["max_batch_size"] == 4 and params["batch_wait_timeout_s"] == 0.01



ACCESS_LINE = re.compile(r"(GET|POST) /\S* \d{3} [\d.]+ms")


def test_configure_keeps_the_logging_settings(server, client):
    # `configure` runs the application again; Serve's defaults (text lines at INFO, one access
    # line per request, which also costs throughput) must not come back with it
    server.configure(max_batch_size=4)
    for _ in range(5):
        client.embed("text", ["after configure"])
    time.sleep(0.5)
    lines = [line for f in server.log_files() for line in f.read_text().splitlines()]
    assert not [line for line in lines if ACCESS_LINE.search(line)]
    assert all(line.startswith("{") for line in lines), [x for x in lines if x[:1] != "{"][:3]

def test_clean_shutdown_leaves_no_process_or_port(server, capfd):
    from deploylab.serve.server import _port_open, _ray_processes

    procs = _ray_processes()
    assert procs, "the server's Ray processes are visible before stopping"
    capfd.readouterr()
    assert server.stop() == []
    said = capfd.readouterr()
    assert "failed" not in said.err + said.out, "a clean stop prints no failure"
    assert not _port_open(server.host, server.port)
    assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert server.stop() == []  # idempotent
