"""Serving a whole pipeline, not just a model: a search engine (text in, ranked document ids
out), an OCR system (image bytes in, boxes and strings out), a keyword spotter.

Subclass `Pipeline`, declare its `inputs` and `outputs`, build the heavy objects in `load`
(it runs inside each replica, so the instance itself stays small and picklable), check each
request in `prepare` (raise `ProtocolError` for a 4xx that names the problem), and answer a
batch in `run`. Wrap it in a `ModelSpec` like any model: dynamic batching, versions, metrics
and the protocol's error handling come with it.

Example:
    >>> class Upper(Pipeline):
    ...     inputs = (TensorSpec("text", "BYTES", (-1,)),)
    ...     outputs = (TensorSpec("upper", "BYTES", (-1,)),)
    ...     def run(self, items):
    ...         return [{"upper": np.array([t.upper() for t in it["text"]], object)}
    ...                 for it in items]
    >>> spec = ModelSpec("upper", "1", Upper())
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

from .protocol import InferRequest, ProtocolError, TensorSpec

__all__ = ["Pipeline"]


class Pipeline:
    """Base class of a servable pipeline.

    Attributes:
        inputs (Sequence[TensorSpec]): what a request must carry (all required).
        outputs (Sequence[TensorSpec]): what a response carries.
        max_text_chars (int | None): longest BYTES string a request may hold for this
            pipeline (base64 images need far more than the server's default); None keeps
            the server's limit.
    """

    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()
    max_text_chars: int | None = None

    def load(self, threads: int | None = None) -> None:
        """Build sessions, tokenizers, indexes: called once in each replica before serving."""

    def prepare(self, req: InferRequest):
        """Per-request checks and work before batching (raise `ProtocolError` to refuse).

        Returns:
            The batch item handed to `run`; by default the request's input arrays.
        """
        return req.inputs

    @staticmethod
    def one_file(req: InferRequest, name: str, what: str) -> bytes:
        """The decoded bytes of the single base64 file in input `name` (an image, a recording);
        a request with several, or with text that is not base64, is refused with a 400."""
        files = req.inputs[name].reshape(-1)
        if len(files) != 1:
            raise ProtocolError(f"send one {what} per request (got {len(files)}); the "
                                f"response belongs to that one {what}", 400,
                                f"one_{what.split()[-1]}_per_request")
        try:
            return base64.b64decode(files[0], validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"input {name!r} must be base64-encoded {what} bytes", 400,
                                "not_base64") from None

    def rows(self, item) -> int:
        """Rows one prepared item counts towards the batch size (default: its first axis)."""
        first = next(iter(item.values())) if isinstance(item, dict) else item
        return len(first)

    def run(self, items: list) -> list[dict[str, np.ndarray]]:
        """Answer a batch of prepared items: one dict of output arrays per item."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(items)")
