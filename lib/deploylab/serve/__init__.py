"""Serving: a Ray Serve application speaking the Open Inference Protocol (v2) over HTTP,
with dynamic batching, workers (batches run at once in one replica), replicas, a request
timeout, Prometheus metrics and JSON logs; a client (with retries), load generators, and the
monitoring helpers the chapters use.

Modules: `protocol` (request validation, datatypes), `models` (`ModelSpec`: what to serve),
`pipeline` (`Pipeline`: a whole search, OCR or audio pipeline as one servable), `app` (the
Serve deployment; imports Ray), `server` (`start`/`stop`), `metrics`, `client`,
`local` (`LocalClient`: a replica's answer in this process, for smoke runs),
`load` (closed- and open-loop load), `monitor` (reading metrics, A/B agreement, drift).
Ray, Starlette and httpx load only when used, so `import deploylab.serve` stays fast.

Example:
    >>> from deploylab import serve
    >>> spec = serve.ModelSpec("minilm", "1", "minilm.onnx", tokenizer="all-MiniLM-L6-v2")
    >>> with serve.start(spec, num_replicas=2) as server:
    ...     vectors = server.client().embed("minilm", ["open a file", "sort a list"])
"""

from __future__ import annotations

from .client import Client, InferenceError, build_request, decode_outputs
from .local import LocalClient
from .models import ModelSpec
from .pipeline import Pipeline
from .protocol import ProtocolError, TensorSpec
from .server import ServeError, Server, start, stop

__all__ = ["Client", "InferenceError", "LocalClient", "ModelSpec", "Pipeline", "ProtocolError",
           "ServeError", "Server", "TensorSpec", "build_request", "decode_outputs", "start",
           "stop"]
