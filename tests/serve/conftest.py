"""Fixtures shared by the serving tests."""

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
