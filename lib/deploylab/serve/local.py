"""The server's answer without the server: `LocalClient` runs each request through the same
steps as a replica (protocol parsing, the model's `prepare`, one batch of `run`, the response
encoding) in this process, behind the `Client.infer` API.

What it leaves out is exactly what a real server adds: HTTP, Ray Serve's proxy and replicas,
dynamic batching across requests, metrics. Notebooks use it in smoke mode, where starting Ray
would take longer than the whole lesson; full runs and the end-to-end tests use `start()`.

Example:
    >>> client = LocalClient(ModelSpec("upper", "1", Upper()))
    >>> client.infer("upper", {"text": ["abc"]})["upper"]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from .client import InferenceError, build_request, decode_outputs
from .models import ModelSpec, version_order
from .protocol import ProtocolError, parse_request, render_response

__all__ = ["LocalClient"]


class LocalClient:
    """In-process stand-in for `Client` over one or more model versions.

    Args:
        models (ModelSpec | Sequence[ModelSpec]): what to answer for (loaded on first use).
        threads (int | None, default None): compute threads of the loaded models.
        max_text_chars (int, default 10000): the server's limit for BYTES strings (a
            pipeline's own limit wins, as on the server).
    """

    def __init__(self, models: ModelSpec | Sequence[ModelSpec], *, threads: int | None = None,
                 max_text_chars: int = 10_000):
        specs = [models] if isinstance(models, ModelSpec) else list(models)
        self.specs = {s.key: s for s in specs}
        self.threads, self.max_text_chars, self._runners = threads, max_text_chars, {}

    def _runner(self, name: str, version: str | None):
        versions = sorted((v for n, v in (k.split(":", 1) for k in self.specs) if n == name),
                          key=version_order)  # as the server: "10" is higher than "9"
        if not versions or (version is not None and version not in versions):
            raise InferenceError(f"unknown model {name!r} version {version!r}; known: "
                                 f"{sorted(self.specs)}", 404)
        key = f"{name}:{version or versions[-1]}"
        if key not in self._runners:
            self._runners[key] = self.specs[key].build(self.threads)
        return self._runners[key]

    def infer(self, name: str, inputs: Mapping[str, object], *, version: str | None = None,
              outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """As `Client.infer`: output name -> array, or InferenceError with the 4xx the
        server would send."""
        runner = self._runner(name, version)
        body = json.dumps(build_request(inputs, outputs=outputs))
        try:
            req = parse_request(body, runner.inputs, runner.outputs,
                                max_rows=runner.spec.max_batch_size,
                                max_text_chars=runner.max_text_chars or self.max_text_chars)
            out = runner.run([runner.prepare(req)])[0]
        except ProtocolError as e:
            raise InferenceError(f"POST /v2/models/{name}/infer: {e.status} {e}",
                                 e.status) from None
        wire = render_response(runner.spec.name, runner.spec.version, None,
                               {k: out[k] for k in req.outputs})
        return decode_outputs(json.loads(wire))
