"""What the server serves: a `ModelSpec` per (name, version), and the runner each replica
builds from it (an ONNX Runtime session or a torch module, optionally behind a tokenizer).

A spec is plain data, so it travels to replicas on other processes or machines; the heavy
objects (sessions, tokenizers) are built inside each replica. Text models take BYTES and
tokenize on the server, then return mean-pooled, L2-normalized embeddings, the way
all-MiniLM-L6-v2 is meant to be used.

Example:
    >>> spec = ModelSpec("minilm", "2", "minilm-int8.onnx", tokenizer="all-MiniLM-L6-v2")
    >>> runner = spec.build()          # in a replica: session + tokenizer
    >>> runner.run([runner.prepare(request)])
"""

from __future__ import annotations

import copy
import itertools
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .pipeline import Pipeline
from .protocol import DATATYPES, InferRequest, ProtocolError, TensorSpec

__all__ = ["ModelSpec", "Runner", "check_batching", "check_count", "padded_feeds",
           "text_input_spec", "version_order"]

_ORT_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
              "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
              "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL",
              "tensor(string)": "BYTES"}


def padded_feeds(ids: list[list[int]], pad_id: int = 0) -> dict[str, np.ndarray]:
    """A BERT-style encoder's inputs for token-id lists of different lengths: ids padded to
    the longest, the attention mask, and zero token types; each (batch, tokens) int64."""
    width = max(len(i) for i in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for r, row in enumerate(ids):
        input_ids[r, :len(row)] = row
        mask[r, :len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids)}


def text_input_spec(name: str = "text") -> TensorSpec:
    """The input of a text model: one string per row."""
    return TensorSpec(name, "BYTES", (-1,))


def check_count(name: str, value) -> None:
    """Refuse (ValueError) anything but an int >= 1; numpy's integers pass, bools do not.
    The serving layer's one check of a count (batch size, replicas, workers, limits)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def check_batching(max_batch_size=None, batch_wait_timeout_s=None) -> None:
    """Refuse batching a server cannot run with (ValueError); None is not checked. The one
    check for a spec and for a running server's `configure`."""
    if max_batch_size is not None:
        check_count("max_batch_size", max_batch_size)
    if batch_wait_timeout_s is not None and not 0 <= float(batch_wait_timeout_s) <= 10:
        raise ValueError("batch_wait_timeout_s must be in [0, 10] seconds, got "
                         f"{batch_wait_timeout_s!r}")


def version_order(version: str) -> tuple:
    """Sort key of versions, so that the highest (what a request without a version gets)
    sorts last: numbers by value ("10" after "9"), then other names alphabetically."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


@dataclass
class ModelSpec:
    """One servable model version.

    Args:
        name (str): the name in URLs (`/v2/models/{name}`); letters, digits, `-`, `_`, `.`.
        version (str, default "1"): the version in URLs (`/versions/{version}`); a request
            without a version gets the highest one.
        model (str | Path | torch.nn.Module | Pipeline): an .onnx file, a torch module (for
            a text model: a transformers encoder; otherwise a module taking the inputs in
            order), or a `Pipeline` (its own inputs, outputs and code).
        tokenizer (str | Path | None, default None): makes this a text model: a registered
            asset name (`"all-MiniLM-L6-v2"`) or a folder with a tokenizer.
        inputs (Sequence[TensorSpec] | None, default None): input metadata; read from the
            ONNX file when None; required for a torch tensor model; text models take
            one BYTES input `text`.
        outputs (Sequence[TensorSpec] | None, default None): as `inputs`; a text model
            returns FP32 `embedding` of shape [-1, hidden].
        max_length (int, default 128): text models: most tokens per text; longer texts are
            refused (400), never silently truncated.
        max_batch_size (int, default 16): most rows one model call runs (dynamic batching
            collects requests up to this); also the most rows one request may carry.
        batch_wait_timeout_s (float, default 0.005): how long a batch waits to fill.
        platform (str): "onnxruntime", "pytorch" or "python" (a pipeline), from `model`.
    """

    name: str
    version: str = "1"
    model: Any = None
    tokenizer: str | Path | None = None
    inputs: Sequence[TensorSpec] | None = None
    outputs: Sequence[TensorSpec] | None = None
    max_length: int = 128
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.005
    platform: str = field(init=False, default="")

    def __post_init__(self) -> None:
        import re

        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", self.name):
            raise ValueError(f"model name must be letters, digits, '-', '_' or '.', got "
                             f"{self.name!r}")
        self.version = str(self.version)
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", self.version):
            raise ValueError(f"model version must be letters, digits, '-', '_' or '.', got "
                             f"{self.version!r}")
        if isinstance(self.model, (str, os.PathLike)):
            path = Path(self.model)
            if path.suffix != ".onnx" or not path.is_file():
                raise ValueError(f"model {self.name}: {path} is not an existing .onnx file")
            self.model = str(path.resolve())
            self.platform = "onnxruntime"
        elif isinstance(self.model, Pipeline):
            self.platform = "python"
            if not self.model.inputs or not self.model.outputs:
                raise ValueError(f"model {self.name}: the pipeline declares no inputs or "
                                 "outputs (TensorSpec lists)")
        elif _is_torch_module(self.model):
            self.platform = "pytorch"
            if self.tokenizer is None and (self.inputs is None or self.outputs is None):
                raise ValueError(f"model {self.name}: a torch tensor model needs `inputs` and "
                                 "`outputs` metadata (TensorSpec lists)")
        else:
            raise ValueError(f"model {self.name}: `model` must be an .onnx path, a torch "
                             f"module or a Pipeline, got {type(self.model).__name__}")
        check_batching(self.max_batch_size, self.batch_wait_timeout_s)
        self.max_batch_size = int(self.max_batch_size)  # numpy's integers become Python's
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {self.max_length!r}")
        self.inputs = None if self.inputs is None else list(self.inputs)
        self.outputs = None if self.outputs is None else list(self.outputs)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def build(self, threads: int | None = None) -> Runner:
        """The runner for this spec (loads the model; call inside the replica)."""
        return Runner(self, threads)


def _is_torch_module(obj) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        return False
    return isinstance(obj, torch.nn.Module)


def _ort_session(path: str, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    # Spinning threads would burn the cores that the proxy and the other replica need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _dim(d) -> int:
    return d if isinstance(d, int) and d > 0 else -1


class Runner:
    """A loaded model: its metadata, `prepare` (per request) and `run` (per batch)."""

    def __init__(self, spec: ModelSpec, threads: int | None = None):
        self.spec = spec
        self.session = self.module = self.tokenizer = self.pipeline = None
        self.max_text_chars = None
        if spec.platform == "python":
            # a copy holds the loaded sessions: the spec itself must stay picklable (Serve
            # pickles a replica's init arguments again after it started)
            self.pipeline = copy.copy(spec.model)
            self.pipeline.load(threads)
            self.inputs, self.outputs = list(self.pipeline.inputs), list(self.pipeline.outputs)
            self.max_text_chars = self.pipeline.max_text_chars
            return
        if threads:
            import torch

            torch.set_num_threads(threads)
        if spec.platform == "onnxruntime":
            self.session = _ort_session(spec.model, threads)
        else:
            self.module = spec.model.eval()
        if spec.tokenizer is not None:
            self._load_tokenizer(spec.tokenizer)
            self.inputs = [text_input_spec()]
            self.outputs = [TensorSpec("embedding", "FP32", (-1, self._hidden_size()))]
        else:
            self.inputs = spec.inputs or self._onnx_specs(self.session.get_inputs())
            self.outputs = spec.outputs or self._onnx_specs(self.session.get_outputs())

    # ---------------------------------------------------------------- metadata

    @staticmethod
    def _onnx_specs(nodes) -> list[TensorSpec]:
        specs = []
        for n in nodes:
            if n.type not in _ORT_TYPES:
                raise ValueError(f"ONNX tensor {n.name!r} has type {n.type}, which this "
                                 "server cannot carry")
            specs.append(TensorSpec(n.name, _ORT_TYPES[n.type],
                                    tuple(_dim(d) for d in n.shape) or (-1,)))
        return specs

    def _hidden_size(self) -> int:
        if self.module is not None and hasattr(self.module, "config"):
            return int(self.module.config.hidden_size)
        if self.session is not None:
            return _dim(self.session.get_outputs()[0].shape[-1])
        return -1

    def _load_tokenizer(self, name_or_path) -> None:
        from transformers import AutoTokenizer

        from .. import assets

        folder = Path(name_or_path)
        if not folder.is_dir():
            folder = assets.resolve_model(str(name_or_path))
        tok = AutoTokenizer.from_pretrained(folder)
        # The Rust tokenizer directly: a tenth of the per-call overhead of the wrapper.
        self.tokenizer = tok.backend_tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.pad_id = int(tok.pad_token_id or 0)

    def metadata(self) -> dict:
        """The protocol's model metadata (without the versions list, which the server adds)."""
        s = self.spec
        return {"name": s.name, "version": s.version, "platform": s.platform,
                "inputs": [t.as_dict() for t in self.inputs],
                "outputs": [t.as_dict() for t in self.outputs],
                "parameters": {"max_batch_size": s.max_batch_size,
                               "batch_wait_timeout_s": s.batch_wait_timeout_s,
                               **({"max_length": s.max_length} if self.tokenizer else {})}}

    # ---------------------------------------------------------------- requests

    def prepare(self, req: InferRequest):
        """Per-request work before batching: tokenize texts (refusing over-long ones).

        Returns:
            The batch item: a list of token-id lists for text models, else the arrays.
        """
        if self.pipeline is not None:
            return self.pipeline.prepare(req)
        if self.tokenizer is None:
            return req.inputs
        texts = req.inputs[self.inputs[0].name].reshape(-1).tolist()
        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        longest = max(len(i) for i in ids)
        if longest > self.spec.max_length:
            raise ProtocolError(f"a text of {longest} tokens is over this model's limit of "
                                f"{self.spec.max_length}; shorten or split it",
                                400, "text_too_long")
        return ids

    def rows(self, item) -> int:
        if self.pipeline is not None:
            return self.pipeline.rows(item)
        return len(item) if isinstance(item, list) else len(next(iter(item.values())))

    def run(self, items: list) -> list[dict[str, np.ndarray]]:
        """Run one batch of prepared items; one output dict per item."""
        if self.pipeline is not None:
            out = self.pipeline.run(items)
            if len(out) != len(items):
                raise RuntimeError(f"pipeline {self.spec.key} answered {len(out)} of "
                                   f"{len(items)} items")
            return out
        if self.tokenizer is not None:
            return self._split(self._embed([ids for item in items for ids in item]), items)
        # Tensor models: items whose non-batch dimensions agree run as one call.
        out: list = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(tuple(a.shape[1:] for a in item.values()), []).append(i)
        for idx in groups.values():
            arrays = {k: np.concatenate([items[i][k] for i in idx]) for k in items[idx[0]]}
            for i, res in zip(idx, self._split(self._forward(arrays), [items[i] for i in idx]),
                              strict=True):
                out[i] = res
        return out

    def infer(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """One request's inputs (name -> array or list, rows first, cast to the declared
        datatypes) run as a batch of its own: the replica's `prepare` and `run` without
        HTTP, to time the model as served.

        Example:
            >>> runner.infer({"text": ["how do I open a file?"]})["embedding"].shape
            (1, 384)
        """
        dtypes = {t.name: DATATYPES[t.datatype] for t in self.inputs}
        arrays = {k: np.asarray(v, dtype=dtypes.get(k)) for k, v in inputs.items()}
        rows = len(next(iter(arrays.values())))
        wanted = [o.name for o in self.outputs]
        return self.run([self.prepare(InferRequest(None, arrays, wanted, rows))])[0]

    def _split(self, outputs: dict[str, np.ndarray], items: list) -> list[dict]:
        bounds = np.cumsum([0] + [self.rows(it) for it in items])
        return [{k: v[a:b] for k, v in outputs.items()}
                for a, b in itertools.pairwise(bounds)]

    def _forward(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        if self.session is not None:
            from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

            try:
                return dict(zip(names, self.session.run(names, arrays), strict=True))
            except InvalidArgument as e:  # values the graph cannot take, e.g. an id past a
                # table's end: the request's fault, though its datatype and shape fit
                why = str(e).split("INVALID_ARGUMENT : ", 1)[-1]
                raise ProtocolError(f"model {self.spec.key} cannot take this input: {why}",
                                    400, "invalid_input") from None
        import torch

        with torch.inference_mode():
            res = self.module(*[torch.from_numpy(arrays[s.name]) for s in self.inputs])
        res = res if isinstance(res, (tuple, list)) else (res,)
        return {n: r.detach().cpu().numpy() for n, r in zip(names, res, strict=True)}

    def _embed(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        feeds = padded_feeds(ids, self.pad_id)
        mask = feeds["attention_mask"]
        if self.session is not None:
            wanted = {i.name for i in self.session.get_inputs()}
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
        else:
            import torch

            with torch.inference_mode():
                res = self.module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
            hidden = (res.last_hidden_state if hasattr(res, "last_hidden_state") else
                      res[0] if isinstance(res, (tuple, list)) else res).float().numpy()
        if hidden.ndim == 3:  # (B, T, H) token vectors: mean over real tokens
            m = mask[..., None].astype(np.float32)
            hidden = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norm = np.linalg.norm(hidden, axis=1, keepdims=True)
        return {self.outputs[0].name: (hidden / np.maximum(norm, 1e-12)).astype(np.float32)}
