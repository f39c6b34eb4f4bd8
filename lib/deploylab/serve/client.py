"""A Python client for the Open Inference Protocol (v2) over HTTP.

It works against any v2 server (this kit's, Triton, KServe, MLServer): NumPy arrays and
lists of strings go in, NumPy arrays come out, and a refused request raises
`InferenceError` with the server's message and whether retrying can help.

Example:
    >>> from deploylab.serve import Client
    >>> c = Client("http://127.0.0.1:8000")
    >>> c.metadata("minilm")["inputs"]
    >>> c.infer("minilm", {"text": ["open a file"]})["embedding"].shape      # (1, 384)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import DeploylabError
from .protocol import DATATYPES, datatype_of

__all__ = ["Client", "InferenceError", "build_request", "decode_outputs"]

# "this attempt failed, the next may not": safe to retry an inference. 504 is the kit's
# server giving up on a request after `start(request_timeout_s=...)`; 408 is the same from
# a Serve that runs without the kit's `gateway` middleware
RETRYABLE = (408, 500, 502, 503, 504)


class InferenceError(DeploylabError):
    """The server refused or failed a request.

    Attributes:
        status (int | None): HTTP status; None when no response came (connection error).
        retryable (bool): True for 5xx, 408 (Serve's own request timeout, see
            `gateway`) and connection errors (inference is idempotent).
    """

    def __init__(self, message: str, status: int | None):
        super().__init__(message)
        self.status = status
        self.retryable = status is None or status in RETRYABLE


def build_request(inputs: Mapping[str, object], *, outputs: Sequence[str] | None = None,
                  request_id: str | None = None) -> dict:
    """The JSON body of an infer request.

    Args:
        inputs (Mapping[str, array | list[str]]): input name -> NumPy array, or a list of
            strings (one BYTES row each).
        outputs (Sequence[str] | None, default None): output names to return; all if None.
        request_id (str | None, default None): echoed back by the server.

    Returns:
        dict: ready for `json.dumps`.
    """
    tensors = []
    for name, value in inputs.items():
        if isinstance(value, str):
            raise TypeError(f"input {name!r}: pass a list of strings, not one string")
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            tensors.append({"name": name, "datatype": "BYTES", "shape": [len(value)],
                            "data": list(value)})
            continue
        arr = np.asarray(value)
        tensors.append({"name": name, "datatype": datatype_of(arr.dtype),
                        "shape": list(arr.shape), "data": arr.reshape(-1).tolist()})
    body: dict = {"inputs": tensors}
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    if request_id is not None:
        body["id"] = request_id
    return body


def decode_outputs(response: Mapping) -> dict[str, np.ndarray]:
    """Output name -> array of a response body."""
    out = {}
    for o in response["outputs"]:
        dtype = DATATYPES[o["datatype"]]
        out[o["name"]] = np.asarray(o["data"], dtype=dtype).reshape(o["shape"])
    return out


class Client:
    """A synchronous OIP v2 client (httpx, keep-alive connections).

    Args:
        url (str, default "http://127.0.0.1:8000"): the server.
        timeout_s (float, default 30): per-request timeout.
        retries (int, default 0): extra attempts after a retryable failure (5xx, 408 or
            no response), with exponential backoff from `backoff_s`.
        backoff_s (float, default 0.1): first wait between attempts.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout_s: float = 30.0,
                 retries: int = 0, backoff_s: float = 0.1):
        import httpx

        if not (timeout_s > 0 and retries >= 0 and backoff_s >= 0):
            raise ValueError(f"need timeout_s > 0, retries >= 0 and backoff_s >= 0, got "
                             f"timeout_s={timeout_s!r}, retries={retries!r}, "
                             f"backoff_s={backoff_s!r}")
        self.url = url.rstrip("/")
        self.retries, self.backoff_s = int(retries), float(backoff_s)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, trust_env=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, body: dict | None = None):
        import httpx

        content = None if body is None else json.dumps(body)
        headers = {"content-type": "application/json"} if body is not None else None
        for attempt in range(self.retries + 1):
            try:
                r = self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as e:
                err = InferenceError(f"{method} {path}: no response ({type(e).__name__}: "
                                     f"{e})", None)
            else:
                if r.status_code < 400:
                    return r
                try:
                    message = r.json().get("error", r.text)
                except (ValueError, AttributeError):
                    message = r.text
                err = InferenceError(f"{method} {path}: {r.status_code} {message}",
                                     r.status_code)
            if not err.retryable or attempt == self.retries:
                raise err
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------ health and metadata

    def live(self) -> bool:
        """True when the server process answers."""
        try:
            return self._send("GET", "/v2/health/live").json().get("live", False)
        except InferenceError:
            return False

    def ready(self) -> bool:
        """True when the server is ready to infer."""
        try:
            return self._send("GET", "/v2/health/ready").json().get("ready", False)
        except InferenceError:
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until `ready()` (raises InferenceError after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise InferenceError(f"{self.url} not ready after {timeout_s:.0f} s", None)
            time.sleep(0.2)

    def server_metadata(self) -> dict:
        return self._send("GET", "/v2").json()

    def models(self) -> list[dict]:
        """Every model version the server has (the repository index extension)."""
        return self._send("POST", "/v2/repository/index", {}).json()

    def metadata(self, name: str, version: str | None = None) -> dict:
        """A model's inputs and outputs (name, datatype, shape) and its versions."""
        return self._send("GET", _model_path(name, version)).json()

    # ------------------------------------------------------------------- inference

    def infer(self, name: str, inputs: Mapping[str, object], *, version: str | None = None,
              outputs: Sequence[str] | None = None,
              request_id: str | None = None) -> dict[str, np.ndarray]:
        """One inference request.

        Args:
            name (str): the model.
            inputs (Mapping[str, array | list[str]]): see `build_request`.
            version (str | None, default None): a version; the latest if None.
            outputs (Sequence[str] | None, default None): outputs to return; all if None.
            request_id (str | None, default None): echoed in the response.

        Returns:
            dict[str, np.ndarray]: output name -> array.

        Raises:
            InferenceError: with the server's message (4xx: fix the request).
        """
        body = build_request(inputs, outputs=outputs, request_id=request_id)
        return decode_outputs(self._send("POST", _model_path(name, version) + "/infer",
                                         body).json())

    def embed(self, name: str, texts: Sequence[str], *, version: str | None = None,
              batch_size: int = 16):
        """Embeddings of texts from a text model: (len(texts), dim) float32, sent
        `batch_size` texts per request (a server refuses more rows than its batch limit)."""
        texts = list(texts)
        if not texts:
            raise ValueError("embed() needs at least one text")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        parts = [self.infer(name, {"text": texts[i:i + batch_size]}, version=version)
                 ["embedding"] for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts)

    def metrics(self) -> str:
        """The Prometheus text of `/metrics` (see `deploylab.serve.monitor` to read it)."""
        return self._send("GET", "/metrics").text


def _model_path(name: str, version: str | None) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "")
