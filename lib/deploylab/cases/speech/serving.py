"""The streaming keyword spotter behind `deploylab.serve`: WAV bytes in, commands with times out.

A request carries one base64-encoded WAV file (16 kHz, mono, 16-bit PCM, 0.5 s to 10 min) as
a BYTES tensor `audio` of shape [1]; the response carries `words` BYTES [N], `time_s` FP32
[N] (where in the audio each command was heard), `start_s`/`end_s` FP32 [N] (the span of
windows that agreed) and `scores` FP32 [N]. Bad audio is refused in `prepare` with a 4xx
naming the problem (400 for empty, not-WAV, stereo, wrong sample rate or width, too short;
413 for too long), so the server keeps serving.

Example:
    >>> from deploylab import serve
    >>> pipe = SpeechPipeline(paths["student-int8"], ds.labels)
    >>> client = serve.LocalClient(serve.ModelSpec("kws", "1", pipe, max_batch_size=1))
    >>> client.infer("kws", {"audio": [encode_request(wav_bytes)]})["words"]
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...serve.pipeline import Pipeline
from ...serve.protocol import ProtocolError, TensorSpec
from .audio import MAX_SECONDS, AudioError, AudioTooLongError, load_wav

__all__ = ["SpeechPipeline", "encode_request", "local_infer"]


def encode_request(wav: bytes | np.ndarray) -> str:
    """Base64 text of WAV bytes for a request (a float array is encoded as WAV first)."""
    if isinstance(wav, np.ndarray):
        from .audio import encode_wav

        wav = encode_wav(wav)
    return base64.b64encode(bytes(wav)).decode("ascii")


class SpeechPipeline(Pipeline):
    """VAD-gated keyword spotting as a servable pipeline (one recording per request).

    Args:
        model (str | Path): the spotter's ONNX file (must exist on every replica).
        labels (Sequence[str]): its class names.
        max_seconds (float, default 600): longer recordings get 413.
        **spotter: `StreamingSpotter` options (threshold, hop_s, vad, ...).
    """

    inputs: ClassVar = (TensorSpec("audio", "BYTES", (-1,)),)
    outputs: ClassVar = (TensorSpec("words", "BYTES", (-1,)), TensorSpec("time_s", "FP32", (-1,)),
                         TensorSpec("start_s", "FP32", (-1,)), TensorSpec("end_s", "FP32", (-1,)),
                         TensorSpec("scores", "FP32", (-1,)))
    max_text_chars = 28 << 20  # base64 of a 10-minute 16 kHz WAV (19 MB)

    def __init__(self, model: str | Path, labels, *, max_seconds: float = MAX_SECONDS,
                 **spotter):
        self.model, self.labels, self.options = str(model), tuple(labels), dict(spotter)
        self.max_seconds = float(max_seconds)
        self.spotter = None

    def __getstate__(self) -> dict:  # sessions stay out of the pickle sent to replicas
        return {**self.__dict__, "spotter": None}

    def load(self, threads: int | None = None) -> None:
        from .streaming import StreamingSpotter

        self.spotter = StreamingSpotter(self.model, self.labels,
                                        **{"threads": threads or 1, **self.options})

    def prepare(self, req):
        data = self.one_file(req, "audio", "recording")
        try:
            return load_wav(data, max_seconds=self.max_seconds)
        except AudioTooLongError as e:
            raise ProtocolError(str(e), 413, e.reason) from None
        except AudioError as e:
            raise ProtocolError(str(e), 400, e.reason) from None

    def rows(self, item) -> int:
        return 1

    def run(self, items: list) -> list[dict[str, np.ndarray]]:
        if self.spotter is None:
            self.load()
        out = []
        for audio in items:
            dets = self.spotter.process(audio).detections
            words = np.empty(len(dets), dtype=object)
            words[:] = [d.word for d in dets]
            out.append({"words": words,
                        **{k: np.array([getattr(d, k) for d in dets], np.float32)
                           for k in ("time_s", "start_s", "end_s")},
                        "scores": np.array([d.score for d in dets], np.float32)})
        return out


def local_infer(pipeline: SpeechPipeline, clips: list[str]) -> tuple[int, dict]:
    """What a replica would answer for one request's `audio` data, without a server:
    (200, outputs) or (4xx, {"error": message})."""
    from ...serve.protocol import InferRequest

    req = InferRequest(None, {"audio": np.array(list(clips), dtype=object)}, [], len(clips))
    try:
        item = pipeline.prepare(req)
    except ProtocolError as e:
        return e.status, {"error": str(e)}
    return 200, pipeline.run([item])[0]
