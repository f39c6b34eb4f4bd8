"""The completion model behind `deploylab.serve`: code in, the completed line and its timings
out (per-request completion; the server's dynamic batching groups concurrent requests).

A request carries `prompt` BYTES [1] (the code before the cursor, ending where the
suggestion should start) and `max_new_tokens` INT64 [1]; the response carries `completion`
BYTES [1] (up to the end of the line), `new_tokens` INT64 [1], `ttft_ms` and `total_ms`
FP32 [1]. An empty prompt or a `max_new_tokens` below 1 or above the pipeline's limit gets
a 400 naming the problem, and the server keeps serving. A prompt longer than the context
keeps its last tokens (what an editor wants from a long file) unless `truncate=False`, in
which case it is a 400 too.

Example:
    >>> from deploylab import serve
    >>> pipe = ComposePipeline(variant="speculative-int8")
    >>> client = serve.LocalClient(serve.ModelSpec("compose", "1", pipe, max_batch_size=1))
    >>> client.infer("compose", {"prompt": ["def add(a, b):\\n"], "max_new_tokens": [16]})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ...serve.pipeline import Pipeline
from ...serve.protocol import ProtocolError, TensorSpec
from .data import ComposeError

__all__ = ["ComposePipeline", "local_infer"]


@dataclass
class _Loaded:
    generate: object
    tokenizer: object
    newline: int
    context: int


@dataclass
class ComposePipeline(Pipeline):
    """The code-completion model as a servable pipeline (one prompt per request).

    Args:
        variant (str, default "speculative-int8"): one of `evaluate.ALL_VARIANTS`.
        sizes, settings: the pair to load (`train_pair`'s arguments; None: the full presets).
        max_new_tokens_limit (int, default 64): larger requests get 400.
        truncate (bool, default True): keep the last tokens of an over-long prompt.
    """

    inputs: ClassVar = (TensorSpec("prompt", "BYTES", (-1,)),
                        TensorSpec("max_new_tokens", "INT64", (-1,)))
    outputs: ClassVar = (TensorSpec("completion", "BYTES", (-1,)),
                         TensorSpec("new_tokens", "INT64", (-1,)),
                         TensorSpec("ttft_ms", "FP32", (-1,)),
                         TensorSpec("total_ms", "FP32", (-1,)))
    variant: str = "speculative-int8"
    sizes: object = None
    settings: object = None
    max_new_tokens_limit: int = 64
    truncate: bool = True
    loaded: _Loaded | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:  # models stay out of the pickle sent to replicas
        return {**self.__dict__, "loaded": None}

    def load(self, threads: int | None = None) -> None:
        import torch

        from .data import newline_id
        from .evaluate import build_variants
        from .model import train_pair

        if threads:
            torch.set_num_threads(threads)
        pair = train_pair(self.sizes, self.settings, progress=False)
        v = build_variants(pair, (self.variant,))[self.variant]
        if v.skipped:
            raise ComposeError(f"variant {self.variant!r} cannot run here: {v.skipped}")
        self.loaded = _Loaded(v.generate, pair.tokenizer, newline_id(pair.tokenizer),
                              int(pair.target.config.max_position_embeddings))

    def _check(self, req) -> tuple[str, int]:
        prompts = req.inputs["prompt"].reshape(-1)
        limits = req.inputs["max_new_tokens"].reshape(-1)
        if len(prompts) != 1 or len(limits) != 1:
            raise ProtocolError(f"send one prompt and one max_new_tokens per request (got "
                                f"{len(prompts)} and {len(limits)})", 400, "one_per_request")
        prompt = prompts[0].decode("utf-8", "replace") if isinstance(prompts[0], bytes) \
            else str(prompts[0])
        n = int(limits[0])
        if not prompt:
            raise ProtocolError("the prompt is empty: send the code before the cursor (at "
                                "least one character)", 400, "empty_prompt")
        if not 1 <= n <= self.max_new_tokens_limit:
            raise ProtocolError(f"max_new_tokens must be between 1 and "
                                f"{self.max_new_tokens_limit}, got {n}", 400,
                                "bad_max_new_tokens")
        return prompt, n

    def prepare(self, req):
        prompt, n = self._check(req)
        if self.loaded is None:
            self.load()
        from .generate import check_request

        ids = self.loaded.tokenizer.encode(prompt).ids
        try:
            (ids,) = check_request(ids, n, self.loaded.context, truncate=self.truncate)
        except ComposeError as e:
            raise ProtocolError(str(e), 400, "prompt_too_long") from None
        return {"ids": ids, "max_new_tokens": n}

    def rows(self, item) -> int:
        return 1

    def run(self, items: list) -> list[dict[str, np.ndarray]]:
        if self.loaded is None:
            self.load()
        out = []
        for item in items:
            g = self.loaded.generate(item["ids"], item["max_new_tokens"],
                                     stop=self.loaded.newline)
            ids = g.ids[0]
            text = self.loaded.tokenizer.decode(ids[:-1] if ids and ids[-1] ==
                                                self.loaded.newline else ids)
            completion = np.empty(1, dtype=object)
            completion[0] = text
            out.append({"completion": completion, "new_tokens": np.array([len(ids)], np.int64),
                        "ttft_ms": np.array([g.ttft_ms], np.float32),
                        "total_ms": np.array([g.total_ms], np.float32)})
        return out


def local_infer(pipeline: ComposePipeline, prompt: str, max_new_tokens: int = 32
                ) -> tuple[int, dict]:
    """What a replica would answer for one request, without a server: (200, outputs) or
    (4xx, {"error": message}); for notebooks in smoke mode and for tests."""
    from ...serve.protocol import InferRequest

    req = InferRequest(None, {"prompt": np.array([prompt], dtype=object),
                              "max_new_tokens": np.array([max_new_tokens], np.int64)}, [], 1)
    try:
        item = pipeline.prepare(req)
    except ProtocolError as e:
        return e.status, {"error": str(e)}
    return 200, pipeline.run([item])[0]
