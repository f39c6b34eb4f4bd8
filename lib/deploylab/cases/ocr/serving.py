"""The OCR pipeline behind `deploylab.serve`: image bytes in, boxes and text out.

A request carries one base64-encoded image (PNG, JPEG, ...) as a BYTES tensor `image` of
shape [1]; the response carries `boxes` FP32 [N, 4, 2] (corners, clockwise from the top
left, in pixels of the image sent), `text` BYTES [N] and `scores` FP32 [N]. Bad images are
refused in `prepare` with a 4xx naming the problem (400 for empty, not-an-image and
unsupported modes; 413 for images over the pixel limit), so the server keeps serving.

Example:
    >>> from deploylab import serve
    >>> pipe = OcrPipeline(OcrConfig.fast())
    >>> with serve.start(serve.ModelSpec("ocr", "1", pipe, max_batch_size=1),
    ...                  max_body_bytes=8 << 20) as server:
    ...     out = server.client().infer("ocr", {"image": [encode_image(png_bytes)]})
"""

from __future__ import annotations

import base64
import io
from typing import ClassVar

import numpy as np

from ...serve.pipeline import Pipeline
from ...serve.protocol import ProtocolError, TensorSpec
from .data import MAX_PIXELS, ImageError, ImageTooLargeError, load_image
from .engine import OcrConfig, OcrEngine

__all__ = ["OcrPipeline", "encode_image", "local_infer"]


def encode_image(image) -> str:
    """Base64 text of an image for a request: bytes as they are, a uint8 array as PNG."""
    if isinstance(image, np.ndarray):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "PNG")
        image = buf.getvalue()
    return base64.b64encode(bytes(image)).decode("ascii")


class OcrPipeline(Pipeline):
    """PP-OCRv4 as a servable pipeline (one image per request).

    Args:
        config (OcrConfig | None, default None): the engine's config (None:
            `OcrConfig()`); model files must exist on every replica's machine.
        max_pixels (int, default 25e6): larger images get 413.
    """

    inputs: ClassVar = (TensorSpec("image", "BYTES", (-1,)),)
    outputs: ClassVar = (TensorSpec("boxes", "FP32", (-1, 4, 2)),
                         TensorSpec("text", "BYTES", (-1,)), TensorSpec("scores", "FP32", (-1,)))
    max_text_chars = 12 << 20  # base64 of a ~9 MB image; the body limit is the real bound

    def __init__(self, config: OcrConfig | None = None, *, max_pixels: int = MAX_PIXELS):
        self.config = config or OcrConfig()
        self.max_pixels = int(max_pixels)
        self.engine = None

    def __getstate__(self) -> dict:  # sessions stay out of the pickle sent to replicas
        return {**self.__dict__, "engine": None}

    def load(self, threads: int | None = None) -> None:
        from dataclasses import replace

        cfg = self.config
        if threads and not cfg.default_session:
            cfg = replace(cfg, threads=threads)
        self.engine = OcrEngine(cfg)

    def prepare(self, req):
        data = self.one_file(req, "image", "image")
        try:
            return load_image(data, max_pixels=self.max_pixels)
        except ImageTooLargeError as e:
            raise ProtocolError(str(e), 413, e.reason) from None
        except ImageError as e:
            raise ProtocolError(str(e), 400, e.reason) from None

    def rows(self, item) -> int:
        return 1

    def run(self, items: list) -> list[dict[str, np.ndarray]]:
        if self.engine is None:
            self.load()
        out = []
        for image in items:
            r = self.engine(image)
            text = np.empty(len(r.texts), dtype=object)
            text[:] = r.texts
            out.append({"boxes": r.boxes.astype(np.float32).reshape(-1, 4, 2), "text": text,
                        "scores": r.scores.astype(np.float32)})
        return out


def local_infer(pipeline: OcrPipeline, images: list[str]) -> tuple[int, dict]:
    """What a replica would answer for one request's `image` data, without starting a
    server: (200, outputs) or (4xx, {"error": message}). For notebooks in smoke mode and for
    tests; the HTTP path adds only the protocol's parsing and JSON.

    Args:
        pipeline (OcrPipeline): loaded on first use.
        images (list[str]): the request's base64 strings.
    """
    from ...serve.protocol import InferRequest

    req = InferRequest(None, {"image": np.array(list(images), dtype=object)}, [], len(images))
    try:
        item = pipeline.prepare(req)
    except ProtocolError as e:
        return e.status, {"error": str(e)}
    if pipeline.engine is None:
        pipeline.load()
    return 200, pipeline.run([item])[0]
