"""Fixtures shared by the serving tests."""

import copy
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def http_server():
    """Start loopback HTTP servers for a test: `http_server(answer)` gives the URL of one
    whose every POST gets `answer(path)`, a (status, JSON body bytes) pair; all of them
    are shut down after the test."""
    started = []

    def start(answer) -> str:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                status, body = answer(self.path)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def nap_spec():
    """A torch model that sleeps x[0, 0] seconds, then returns x: slow without using the
    cores or holding the GIL. One row per batch, no batch wait."""
    import torch

    from deploylab.serve import ModelSpec, TensorSpec

    class Nap(torch.nn.Module):  # defined here, so Ray ships it to the replica by value
        def forward(self, x):
            import time

            time.sleep(float(x[0, 0]))
            return x

    return ModelSpec("nap", "1", Nap(), inputs=[TensorSpec("x", "FP32", (-1, 2))],
                     outputs=[TensorSpec("y", "FP32", (-1, 2))], max_batch_size=1,
                     batch_wait_timeout_s=0.0)


@pytest.fixture(scope="session")
def lookup_onnx(tmp_path_factory):
    """An ONNX model, ids (batch, 3) INT64 -> rows (batch, 3, 2) of a 10-row table: any id
    past 9 is out of bounds, which ONNX Runtime refuses as INVALID_ARGUMENT."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])], "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 2])],
        [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("lookup") / "lookup.onnx"
    path.write_bytes(model.SerializeToString())
    return path


# ----------------------------------------------------------------- fuzzing

ODD = [None, True, 0, -1, 2**64, 1e308, float("nan"), "", "\ud800", "\x00", "FP32", "BYTES",
       [], {}, [[]], [1, [2]], {"name": "x"}, 10**30]


def _junk(rng, depth=0):
    r = rng.random()
    if depth < 3 and r < 0.2:
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and r < 0.3:
        return {rng.choice(["name", "datatype", "shape", "data", "inputs", "outputs"]):
                _junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return copy.deepcopy(rng.choice(ODD))  # a fresh [] each time: no shared or cyclic lists


def _mutated(rng, req):
    """The request with one to three of its values (or keys) replaced, dropped or added to."""
    req = copy.deepcopy(req)
    for _ in range(rng.randint(1, 3)):
        paths, todo = [], [((), req)]
        while todo:
            path, node = todo.pop()
            items = node.items() if isinstance(node, dict) else (
                enumerate(node) if isinstance(node, list) else ())
            for k, v in items:
                paths.append((*path, k))
                todo.append(((*path, k), v))
        if not paths:
            break
        *up, last = rng.choice(paths)
        parent = req
        for k in up:
            parent = parent[k]
        if isinstance(parent, dict) and rng.random() < 0.15:
            del parent[last]
        elif isinstance(parent, list) and rng.random() < 0.1:
            parent.append(_junk(rng))
        else:
            parent[last] = _junk(rng)
    return req


@pytest.fixture(scope="session")
def mutate():
    """A fuzzer's mutation: `mutate(rng, request)` is a copy of a valid request (a dict) with
    one to three of its values replaced by odd ones (NaN, 2**64, "\\ud800", [], ...), dropped,
    or added to."""
    return _mutated
