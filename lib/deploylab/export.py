"""torch -> ONNX with a parity gate, ONNX Runtime graph optimization, sessions and providers.

`export_onnx(model, ExportConfig(...))` exports a kit model (the digits CNN, any
`torch.nn.Module` given an input shape) or a Hugging Face encoder (a loaded model, a
registry name, a local folder or a hub id) and returns the path of a file that has passed
the parity gate: the reference torch model and the exported graph ran on fresh inputs of
several shapes (other than the traced one, and padded batches) and agreed within tolerance.
Otherwise `ParityError` carries the report and no file is left behind: the graph is written
to a temporary file and moved into place only after the gate.

Pitfalls of this stack that the code handles, and where:
- transformers 5 models must be called with keyword arguments (their positional order is
  not a contract): `_keyword_encoder` wraps them in a module that passes them by name.
- transformers' default attention (SDPA) exports as many small ops that ONNX Runtime cannot
  fuse; `ExportConfig(attention="eager")` (the default) exports the textbook
  MatMul-Softmax-MatMul pattern that the transformer optimizer fuses into `Attention`,
  `SkipLayerNormalization`, `BiasGelu` and `EmbedLayerNormalization`.
- torch 2.13's default exporter (`dynamo=True`, torch.export) produces a graph on which
  ONNX Runtime's attention fusion does not match, and takes ~8x longer; the default here is
  the TorchScript exporter (`exporter="torchscript"`), deprecated in torch but the one whose
  graphs ONNX Runtime's fusions were written for. `exporter="dynamo"` is one switch away.

Example:
    >>> from deploylab import export
    >>> path = export.export_onnx("all-MiniLM-L6-v2", export.ExportConfig())
    >>> fast = export.optimize_onnx(path)                  # fused Attention, SkipLayerNorm...
    >>> sess = export.session(fast, threads=2)
    >>> export.providers()                                 # which execution providers exist
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DeploylabError
from .settings import cache_dir

__all__ = [
    "ENCODER_INPUTS",
    "ExportConfig",
    "ExportError",
    "ParityConfig",
    "ParityError",
    "ParityReport",
    "ProviderUnavailableError",
    "UnsupportedModelError",
    "check_parity",
    "export_onnx",
    "fusion_table",
    "op_counts",
    "openvino_available",
    "openvino_session",
    "optimize_onnx",
    "profile_nodes",
    "providers",
    "runtime_op_counts",
    "session",
]

# The inputs a BERT-like encoder takes, in the order the exported graph declares them.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORTERS = ("torchscript", "dynamo")
ATTENTIONS = ("eager", "sdpa")


class ExportError(DeploylabError):
    """An export could not be done as asked."""


class UnsupportedModelError(ExportError):
    """The object given is not a model this module knows how to export."""


class ParityError(ExportError):
    """The exported graph disagrees with the torch model; `.report` holds the figures."""

    def __init__(self, message: str, report: ParityReport):
        super().__init__(message)
        self.report = report


class ProviderUnavailableError(ExportError):
    """An execution provider was requested that this onnxruntime build or machine lacks."""


# ------------------------------------------------------------------------------ configs


@dataclass
class ParityConfig:
    """How the exported graph is checked against the torch model before it is accepted.

    Args:
        shapes (tuple of (batch, seq), default ((1, 8), (3, 37), (4, 128))): fresh input
            shapes for encoders; for other models only the batch size is used. Deliberately
            not the traced shape, so a graph that baked a size in fails here.
        padded (bool, default True): also check batches whose rows have different lengths
            (attention mask with padding), compared on real tokens only.
        atol (float, default 1e-3): largest allowed absolute difference of any output value.
        min_cosine (float, default 0.9999): smallest allowed cosine similarity of any row
            (one token's vector, or one image's logits) to the reference.
        seed (int, default 1234): seed of the random inputs.
    """

    shapes: tuple[tuple[int, int], ...] = ((1, 8), (3, 37), (4, 128))
    padded: bool = True
    atol: float = 1e-3
    min_cosine: float = 0.9999
    seed: int = 1234

    def __post_init__(self) -> None:
        self.shapes = tuple(tuple(int(v) for v in s) for s in self.shapes)
        if not self.shapes or any(len(s) != 2 or min(s) < 1 for s in self.shapes):
            raise ValueError(f"parity shapes must be (batch, seq) pairs of ints >= 1, got "
                             f"{self.shapes!r}")
        if self.atol <= 0 or not 0 < self.min_cosine <= 1:
            raise ValueError(f"atol must be > 0 and min_cosine in (0, 1], got {self.atol}, "
                             f"{self.min_cosine}")


@dataclass
class ExportConfig:
    """What to export and how.

    Args:
        path (str | PathLike | None, default None): output `.onnx` file; None caches it
            under `deploylab.cache_dir("onnx")` with a name built from the model and options.
        exporter (str, default "torchscript"): "torchscript" (`torch.onnx.export(...,
            dynamo=False)`, deprecated in torch 2.13 but what ORT's fusions expect) or
            "dynamo" (torch.export based, the torch default).
        attention (str | None, default "eager"): attention implementation of a Hugging Face
            encoder: "eager" (fusable by ONNX Runtime) or "sdpa" (transformers' default);
            None keeps whatever the model was loaded with.
        opset (int, default 17): ONNX opset (17 has LayerNormalization; dynamo needs >= 18
            and is raised to 18).
        dynamic (bool, default True): batch (and sequence, for encoders) axes are dynamic;
            False fixes them to the traced shape.
        sample_shape (tuple[int, int], default (2, 16)): (batch, seq) traced for encoders.
        input_shape (tuple[int, ...] | None, default None): one example input's shape for a
            plain torch module, batch first (the digits CNN: (1, 1, 8, 8), the default
            for it). Required for other plain modules.
        parity (ParityConfig | None, default ParityConfig()): the gate; None skips it (the
            returned path is then unchecked, and the report says so).
        overwrite (bool, default True): replace an existing file at `path`; False reuses it
            (a cache hit) without exporting again.
    """

    path: str | os.PathLike | None = None
    exporter: str = "torchscript"
    attention: str | None = "eager"
    opset: int = 17
    dynamic: bool = True
    sample_shape: tuple[int, int] = (2, 16)
    input_shape: tuple[int, ...] | None = None
    parity: ParityConfig | None = field(default_factory=ParityConfig)
    overwrite: bool = True

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if self.attention is not None and self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS} or None, got "
                             f"{self.attention!r}")
        if not isinstance(self.opset, int) or not 13 <= self.opset <= 23:
            raise ValueError(f"opset must be an int in 13..23, got {self.opset!r}")
        if self.exporter == "dynamo" and self.opset < 18:
            self.opset = 18
        if len(self.sample_shape) != 2 or min(self.sample_shape) < 1:
            raise ValueError(f"sample_shape must be (batch, seq) >= 1, got {self.sample_shape!r}")
        if self.input_shape is not None:
            self.input_shape = tuple(int(v) for v in self.input_shape)
            if not self.input_shape or min(self.input_shape) < 1:
                raise ValueError(f"input_shape must be positive ints, got {self.input_shape!r}")
        if self.path is not None and Path(self.path).suffix != ".onnx":
            raise ValueError(f"path must end in .onnx, got {self.path!r}")

    @classmethod
    def fast(cls, **kw) -> ExportConfig:
        """Preset: eager attention and the TorchScript exporter, so ORT can fuse everything."""
        return cls(**{"attention": "eager", "exporter": "torchscript", **kw})

    @classmethod
    def unfused(cls, **kw) -> ExportConfig:
        """Preset: transformers' default SDPA attention, as most people first export it."""
        return cls(**{"attention": "sdpa", **kw})


# ------------------------------------------------------------------------------- models


def _torch():
    import torch

    return torch


def _keyword_encoder(model, names: Sequence[str]):
    """Wrap a transformers encoder so the exporter calls it with keyword arguments and gets
    one output, `last_hidden_state` (B, T, H). transformers 5 forwards take many optional
    arguments whose positions are not a contract (positional export fails or binds the
    wrong argument), so the positional inputs of the graph are passed on by name."""
    torch = _torch()

    class KeywordEncoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            out = self.inner(**dict(zip(names, inputs, strict=True)))
            return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    return KeywordEncoder(model).eval()


@dataclass
class _Prepared:
    """A model ready to export: the module called positionally, how to make inputs."""

    module: object
    kind: str  # "encoder" or "module"
    input_names: tuple[str, ...]
    output_name: str
    name: str
    vocab_size: int = 0
    input_shape: tuple[int, ...] = ()
    attention: str | None = None
    meta: dict = field(default_factory=dict)


def _is_encoder(model) -> bool:
    cfg = getattr(model, "config", None)
    return cfg is not None and hasattr(cfg, "vocab_size") and hasattr(model, "forward")


def _prepare(model, config: ExportConfig) -> _Prepared:
    torch = _torch()
    if isinstance(model, (str, os.PathLike)):
        from . import assets

        _, model = assets.load_encoder(model, attn_implementation=config.attention)
    elif isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], torch.nn.Module):
        model = model[1]  # (tokenizer, model) as load_encoder returns it
    if not isinstance(model, torch.nn.Module):
        raise UnsupportedModelError(
            f"cannot export a {type(model).__name__}: pass a torch.nn.Module (with "
            "ExportConfig(input_shape=...) unless it is a kit model), a Hugging Face encoder, "
            "or a registry name / local folder / hub id of one")
    model.eval()
    if _is_encoder(model):
        current = getattr(model.config, "_attn_implementation", None)
        if config.attention and current != config.attention:
            if not hasattr(model, "set_attn_implementation"):
                raise ExportError(f"this model cannot switch attention to {config.attention!r};"
                                  " load it with attn_implementation=... or pass attention=None")
            model.set_attn_implementation(config.attention)
        import inspect

        params = inspect.signature(model.forward).parameters
        names = tuple(n for n in ENCODER_INPUTS if n in params)
        if "input_ids" not in names:
            raise UnsupportedModelError(f"{type(model).__name__} takes no input_ids; only "
                                        "token encoders (BERT-like) are supported by name")
        cfg = model.config
        name = getattr(cfg, "_name_or_path", "") or type(model).__name__
        # kept in the file's metadata so optimize_onnx() knows the attention shape
        meta = {"model_type": str(getattr(cfg, "model_type", "bert")),
                "num_heads": str(getattr(cfg, "num_attention_heads", 0)),
                "hidden_size": str(getattr(cfg, "hidden_size", 0))}
        return _Prepared(_keyword_encoder(model, names), "encoder", names, "last_hidden_state",
                         Path(str(name)).name, int(cfg.vocab_size),
                         attention=getattr(cfg, "_attn_implementation", None), meta=meta)
    from .cnn import IMAGE_SHAPE, DigitsCNN

    shape = config.input_shape
    if shape is None and isinstance(model, DigitsCNN):
        shape = (1, *IMAGE_SHAPE)
    if shape is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a kit model or a Hugging Face encoder, so its input "
            "shape is unknown: pass ExportConfig(input_shape=(1, ...)) with batch first")
    return _Prepared(model, "module", ("input",), "output", type(model).__name__,
                     input_shape=shape)


def _inputs(prep: _Prepared, batch: int, seq: int, rng: np.random.Generator,
            padded: bool = False) -> dict[str, np.ndarray]:
    """Fresh random inputs: token ids with an attention mask (rows of different lengths
    when `padded`), or images of the module's input shape with `batch` rows."""
    if prep.kind == "module":
        return {"input": rng.standard_normal((batch, *prep.input_shape[1:])).astype(np.float32)}
    ids = rng.integers(1000, max(1001, prep.vocab_size - 1), (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    if padded:
        lengths = np.linspace(seq, max(1, seq // 4), batch).astype(int)
        for row, n in enumerate(lengths):
            mask[row, n:] = 0
            ids[row, n:] = 0  # the pad token of BERT vocabularies
    ids[:, 0] = 101  # [CLS]
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {k: feeds[k] for k in prep.input_names}


# -------------------------------------------------------------------------------- parity


@dataclass
class ParityReport:
    """The parity gate's findings, one row per checked input.

    Args:
        rows (list[dict]): shape, padded, max_abs_error, cosine_min, ok.
        config (ParityConfig): the tolerances used.
    """

    rows: list[dict]
    config: ParityConfig

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)

    @property
    def max_abs_error(self) -> float:
        return max(r["max_abs_error"] for r in self.rows)

    @property
    def cosine_min(self) -> float:
        return min(r["cosine_min"] for r in self.rows)

    def table(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def __str__(self) -> str:
        lines = [f"parity {'ok' if self.ok else 'FAILED'} (atol {self.config.atol:g}, "
                 f"min cosine {self.config.min_cosine:g}):"]
        for r in self.rows:
            lines.append(f"  {r['shape']:>12} padded={r['padded']!s:5} max|err|="
                         f"{r['max_abs_error']:.3g} cosine_min={r['cosine_min']:.6f} "
                         f"{'ok' if r['ok'] else 'MISMATCH'}")
        return "\n".join(lines)


def _compare(ref: np.ndarray, got: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    from .measure import cosine

    if ref.shape != got.shape:
        return float("inf"), -1.0
    if mask is not None:  # (B, T, H) -> real tokens only (N, H)
        ref, got = ref[mask.astype(bool)], got[mask.astype(bool)]
    ref2, got2 = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    if not np.isfinite(got2).all():
        return float("inf"), -1.0
    return float(np.abs(ref2 - got2).max()), float(cosine(ref2, got2).min())


def _check(prep: _Prepared, onnx_path: Path, parity: ParityConfig) -> ParityReport:
    torch = _torch()
    sess = session(onnx_path, threads=None)
    rng = np.random.default_rng(parity.seed)
    cases = [(b, s, False) for b, s in parity.shapes]
    if parity.padded and prep.kind == "encoder":
        cases += [(max(2, b), s, True) for b, s in parity.shapes if s >= 4]
    rows = []
    for batch, seq, padded in cases:
        feeds = _inputs(prep, batch, seq, rng, padded)
        with torch.inference_mode():
            ref = prep.module(*[torch.from_numpy(v) for v in feeds.values()]).float().numpy()
        try:
            got = sess.run(None, feeds)[0]
        except Exception as e:  # a graph that cannot even run this shape fails the gate
            got, note = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        else:
            note = ""
        mask = feeds.get("attention_mask") if prep.kind == "encoder" else None
        err, cos = _compare(ref, got, mask) if got is not None else (float("inf"), -1.0)
        shape = f"{batch}x{seq}" if prep.kind == "encoder" else f"{batch}x" + "x".join(
            map(str, prep.input_shape[1:]))
        rows.append({"shape": shape, "padded": padded, "max_abs_error": err, "cosine_min": cos,
                     "ok": err <= parity.atol and cos >= parity.min_cosine, "error": note})
    return ParityReport(rows, parity)


def check_parity(model, onnx_path: str | os.PathLike, parity: ParityConfig | None = None, *,
                 input_shape: tuple[int, ...] | None = None) -> ParityReport:
    """Run a torch model and an ONNX file on the same fresh inputs and compare them.

    Args:
        model: the reference (anything `export_onnx` takes).
        onnx_path (str | PathLike): the exported graph.
        parity (ParityConfig | None, default None): tolerances and shapes; defaults if None.
        input_shape (tuple | None): a plain module's input shape (see `ExportConfig`).

    Returns:
        ParityReport: `.ok`, per-shape rows, `str()` for printing.
    """
    path = _existing(onnx_path)
    prep = _prepare(model, ExportConfig(attention=None, input_shape=input_shape))
    return _check(prep, path, parity or ParityConfig())


# -------------------------------------------------------------------------------- export


def _weights_digest(module) -> str:
    """sha256 of every parameter and buffer, so a cached export is reused only for the very
    same weights (a fine-tuned, pruned or differently trained model of the same class and
    name gets its own file)."""
    digest = hashlib.sha256()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(_torch().uint8).numpy().tobytes())
    return digest.hexdigest()


def _default_path(prep: _Prepared, config: ExportConfig) -> Path:
    key = (f"{prep.name}|{prep.attention}|{config.exporter}|{config.opset}|{config.dynamic}|"
           f"{_weights_digest(prep.module)}")
    tag = hashlib.sha256(key.encode()).hexdigest()[:8]
    attn = f"-{prep.attention}" if prep.attention else ""
    return cache_dir("onnx") / f"{prep.name}{attn}-{config.exporter}-{tag}.onnx"


def _export_to(prep: _Prepared, config: ExportConfig, tmp: Path) -> list[str]:
    """Export to `tmp`; returns the tracer's warnings (values it had to freeze), which are
    the usual suspects when the parity gate then fails."""
    torch = _torch()
    rng = np.random.default_rng(0)
    batch, seq = config.sample_shape
    sample = _inputs(prep, batch, seq, rng, padded=prep.kind == "encoder" and batch > 1)
    args = tuple(torch.from_numpy(v) for v in sample.values())
    axes = {0: "batch", 1: "sequence"} if prep.kind == "encoder" else {0: "batch"}
    names, out = list(prep.input_names), prep.output_name
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        # Recorded, not shown: the TorchScript exporter announces its own deprecation (the
        # choice is deliberate, see the module docstring), and tracer warnings are reported
        # with the parity gate's verdict, where they explain a mismatch.
        warnings.simplefilter("always")
        if config.exporter == "torchscript":
            torch.onnx.export(
                prep.module, args, str(tmp), dynamo=False, input_names=names,
                output_names=[out], opset_version=config.opset, do_constant_folding=True,
                dynamic_axes={n: axes for n in [*names, out]} if config.dynamic else None)
        else:
            # by position: torch.export matches dict keys to forward()'s argument names,
            # which need not be the ONNX input names; the encoder wrapper's forward(*inputs)
            # is one (variadic) argument, so its shapes nest one level deeper
            shapes = tuple(dict(axes) for _ in names) if config.dynamic else None
            if shapes is not None and _variadic(prep.module):
                shapes = (shapes,)
            with contextlib.redirect_stdout(None):  # progress lines of the dynamo exporter
                torch.onnx.export(prep.module, args, str(tmp), dynamo=True, input_names=names,
                                  output_names=[out], opset_version=config.opset,
                                  dynamic_shapes=shapes, external_data=False)
    if prep.meta:
        _add_metadata(tmp, prep.meta)
    traced = [f"{w.filename.rsplit('/', 1)[-1]}:{w.lineno}: {str(w.message).splitlines()[0]}"
              for w in caught if w.category.__name__ == "TracerWarning"]
    return list(dict.fromkeys(traced))


def _variadic(module) -> bool:
    """Whether forward() takes only *args (the encoder wrapper)."""
    params = inspect.signature(module.forward).parameters.values()
    return [p.kind for p in params] == [inspect.Parameter.VAR_POSITIONAL]


def _add_metadata(file: Path, meta: dict) -> None:
    import onnx

    model = onnx.load(str(file))
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"deploylab.{k}", v
    onnx.save(model, str(file))


def _metadata(file: Path) -> dict:
    import onnx

    model = onnx.load(str(file), load_external_data=False)
    return {p.key.removeprefix("deploylab."): p.value for p in model.metadata_props}


def export_onnx(model, config: ExportConfig | None = None) -> Path:
    """Export a model to ONNX, check it with the parity gate, and return its path.

    Args:
        model: a `torch.nn.Module` (the digits CNN; others need `config.input_shape`), a
            Hugging Face encoder, a `(tokenizer, model)` pair, or a registry name, local
            folder or hub id of an encoder (loaded with `assets.load_encoder`).
        config (ExportConfig | None, default None): options; `ExportConfig()` if None.

    Returns:
        Path: the checked `.onnx` file. `export_onnx.last_report` (a `ParityReport`, or None
        when the gate was off) says what the gate measured.

    Raises:
        UnsupportedModelError: the model is of a kind this cannot export.
        ParityError: the exported graph differs from the model beyond tolerance; nothing is
            written (the error's `.report` has the figures).
        AssetError: a name or path that does not resolve to a model.
    """
    config = config or ExportConfig()
    if not isinstance(config, ExportConfig):
        raise TypeError(f"config must be an ExportConfig, not {type(config).__name__}")
    prep = _prepare(model, config)
    out = Path(config.path) if config.path is not None else _default_path(prep, config)
    export_onnx.last_report = None
    if out.is_file() and not config.overwrite:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.onnx")
    try:
        traced = _export_to(prep, config, tmp)
        if config.parity is not None:
            report = _check(prep, tmp, config.parity)
            export_onnx.last_report = report
            if not report.ok:
                raise ParityError(
                    f"the exported graph differs from the torch model, so {out.name} was not "
                    f"written.\n{report}\n{_tracer_note(traced)}"
                    "What to do: look for code in forward() that depends on a shape or "
                    "value at trace time (Python if/int()/.item() on tensors, numpy calls), "
                    "fix it or export with the shapes you serve "
                    "(dynamic=False); try exporter='dynamo'; loosen ParityConfig only for a "
                    "known, intended difference.", report)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


export_onnx.last_report = None


def _tracer_note(traced: list[str]) -> str:
    if not traced:
        return ""
    return "The tracer froze these values (suspects):\n" + "\n".join(
        f"  {t}" for t in traced[:5]) + "\n"


# -------------------------------------------------------------------------- optimization


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; export a model first with "
                                "export_onnx(model, ExportConfig(path=...))")
    return p


def op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Operator types of an ONNX graph and how often each occurs (most frequent first)."""
    import onnx

    model = onnx.load(str(_existing(path)), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def optimize_onnx(path: str | os.PathLike, *, level: str = "transformer", out: str | os.PathLike |
                  None = None, model_type: str = "bert", num_heads: int = 0,
                  hidden_size: int = 0) -> Path:
    """Rewrite an ONNX graph into fewer, fused operators and save it beside the input.

    Args:
        path (str | PathLike): the exported graph.
        level (str, default "transformer"): "transformer" runs onnxruntime.transformers'
            optimizer (fuses Attention, SkipLayerNormalization, BiasGelu,
            EmbedLayerNormalization in BERT-like graphs); "basic" / "extended" save what
            ONNX Runtime itself does at session start (constant folding, redundant nodes;
            extended adds its own fusions). "all" is not offered: its layout changes are
            specific to this CPU and do not belong in a file.
        out (str | PathLike | None, default None): output file; None writes
            `NAME.opt-LEVEL.onnx` beside the input.
        model_type (str, default "bert"): the transformer optimizer's model family.
        num_heads, hidden_size (int, default 0): attention shape; 0 takes it from the
            metadata `export_onnx` wrote, else lets the optimizer try to detect it.

    Returns:
        Path: the optimized file (written atomically).
    """
    src = _existing(path)
    if level not in ("transformer", "basic", "extended"):
        raise ValueError(f"level must be 'transformer', 'basic' or 'extended', got {level!r}")
    dest = Path(out) if out is not None else src.with_name(f"{src.stem}.opt-{level}.onnx")
    tmp = dest.with_name(f".{dest.stem}.tmp{os.getpid()}.onnx")
    try:
        if level == "transformer":
            import logging

            from onnxruntime.transformers import optimizer

            quiet = logging.getLogger("onnxruntime.transformers")
            old = quiet.level
            quiet.setLevel(logging.ERROR)
            meta = _metadata(src)
            num_heads = num_heads or int(meta.get("num_heads", 0))
            hidden_size = hidden_size or int(meta.get("hidden_size", 0))
            try:
                opt = optimizer.optimize_model(str(src), model_type=model_type,
                                               num_heads=num_heads, hidden_size=hidden_size,
                                               opt_level=0, use_gpu=False)
                opt.save_model_to_file(str(tmp))
            finally:
                quiet.setLevel(old)
        else:
            _runtime_optimized(src, tmp, level)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _runtime_optimized(src: Path, dest: Path, level: str) -> None:
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.optimized_model_filepath = str(dest)
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # its note that level "all" files are CPU-specific: known
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def runtime_op_counts(path: str | os.PathLike, level: str = "all") -> dict[str, int]:
    """Operator counts of the graph ONNX Runtime actually runs after its own optimizations
    at session start (level "basic", "extended" or "all")."""
    import tempfile

    src = _existing(path)
    with tempfile.TemporaryDirectory() as d:
        dest = Path(d) / "runtime.onnx"
        _runtime_optimized(src, dest, level)
        return op_counts(dest)


def profile_nodes(path: str | os.PathLike, feed: dict, *, runs: int = 200, warmup: int = 20,
                  threads: int = 1, optimization: str = "all"):
    """Where a graph spends its time: ONNX Runtime's own profiler, per node of the graph it
    runs (after its fusions), averaged over `runs` calls after `warmup` untimed ones.

    Args:
        path (str | PathLike): the ONNX file.
        feed (dict): input name -> array, as for `session.run`.
        runs / warmup (int): profiled and untimed calls.
        threads (int, default 1): intra-op threads.
        optimization (str, default "all"): as for `session`.

    Returns:
        pandas.DataFrame: one row per node (node, op, us per call, share of the nodes'
        total), slowest first.
    """
    import json
    import tempfile

    import onnxruntime as ort
    import pandas as pd

    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an int >= 1, got {runs!r}")
    opts = _session_options(threads, False, optimization)
    with tempfile.TemporaryDirectory() as d:
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(d) / "profile")
        prof = ort.InferenceSession(str(_existing(path)), opts,
                                    providers=["CPUExecutionProvider"])
        for _ in range(warmup):  # the profile keeps warm-up calls too: counted out below
            prof.run(None, feed)
        for _ in range(runs):
            prof.run(None, feed)
        events = json.loads(Path(prof.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = (e["name"][:-len("_kernel_time")], e["args"]["op_name"])
            per_node.setdefault(key, []).append(e["dur"])
    rows = [{"node": n, "op": op, "us_per_call": sum(d[-runs:]) / runs}
            for (n, op), d in per_node.items()]
    table = pd.DataFrame(rows).sort_values("us_per_call", ascending=False, ignore_index=True)
    table["share"] = table["us_per_call"] / table["us_per_call"].sum()
    return table


def fusion_table(graphs: dict[str, str | os.PathLike | dict]):
    """Operator counts of several graphs side by side (e.g. exported vs optimized).

    Args:
        graphs (dict[str, path | dict]): column name -> ONNX file or an `op_counts` dict.

    Returns:
        pandas.DataFrame: one row per operator type, one column per graph, plus a "total"
        row; missing counts are 0.
    """
    import pandas as pd

    cols = {k: (v if isinstance(v, dict) else op_counts(v)) for k, v in graphs.items()}
    table = pd.DataFrame(cols).fillna(0).astype(int)
    table = table.sort_values(list(cols)[-1], ascending=False)
    table.loc["total"] = table.sum()
    return table


# ------------------------------------------------------------------------------ sessions

# Execution providers worth knowing about, and what makes each one available.
_PROVIDER_NOTES = {
    "CPUExecutionProvider": "always present",
    "CUDAExecutionProvider": "needs an NVIDIA GPU and `pip install onnxruntime-gpu`",
    "TensorrtExecutionProvider": "needs an NVIDIA GPU, TensorRT and onnxruntime-gpu",
    "OpenVINOExecutionProvider": "needs `pip install onnxruntime-openvino` (Intel CPU/GPU/NPU); "
                                 "the standalone OpenVINO runtime is covered by "
                                 "openvino_available()",
    "DmlExecutionProvider": "Windows DirectML build (onnxruntime-directml)",
    "CoreMLExecutionProvider": "macOS builds of onnxruntime",
}


def providers() -> list[dict]:
    """Execution providers of this onnxruntime build and whether they can run here.

    Returns:
        list[dict]: name, available (bool), note (what it needs when it is not available,
        or that a GPU is missing although the build has it).
    """
    import onnxruntime as ort

    built = ort.get_available_providers()
    gpu = _cuda_device()
    rows = []
    for name, note in _PROVIDER_NOTES.items():
        ok = name in built
        if ok and name in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and not gpu:
            ok, note = False, "in this onnxruntime build, but no NVIDIA GPU is visible"
        rows.append({"name": name, "available": ok, "note": "ready" if ok else note})
    rows += [{"name": n, "available": True, "note": "ready"} for n in built
             if n not in _PROVIDER_NOTES and n != "AzureExecutionProvider"]
    return rows


def _cuda_device() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def session(path: str | os.PathLike, *, threads: int | None = None,
            providers: Sequence[str] | None = None, spinning: bool | str = False,
            optimization: str = "all", inter_threads: int = 1):
    """An ONNX Runtime session with explicit threading, for honest timings.

    Args:
        path (str | PathLike): the ONNX file.
        threads (int | None, default None): intra-op threads; None uses torch's current
            count (so torch and ORT compare on equal terms).
        providers (Sequence[str] | None, default None): execution providers in order of
            preference; None is the CPU provider. One that is not available here raises
            `ProviderUnavailableError` (see `providers()`), never a silent CPU fallback.
        spinning (bool, default False): let idle worker threads busy-wait for the next op
            (ORT's own default). On MiniLM at batch 1 it cuts int8 latency ~15-20%, but the
            threads keep spinning ~50 ms after each call and burn the cores another engine
            (torch, a second session, a web server) needs: time spinning sessions in blocks
            (`measure.compare(block=...)`), and leave it off where a process shares cores.
            "in-call": spin while a call runs, park the threads when it returns (ORT's
            `session.force_spinning_stop`): the in-call gain without burning the cores after
            it, what a pipeline of sessions run one after another wants (OCR's detector and
            recognizer: 1.2x per image here, each no longer slowed by the other's spinning).
        optimization (str, default "all"): ORT's graph optimization level at load time:
            "none", "basic", "extended" or "all".
        inter_threads (int, default 1): threads running independent branches in parallel.

    Returns:
        onnxruntime.InferenceSession
    """
    import onnxruntime as ort

    src = _existing(path)
    wanted = list(providers or ["CPUExecutionProvider"])
    ready = {r["name"] for r in globals()["providers"]() if r["available"]}
    missing = [p for p in wanted if p not in ready]
    if missing:
        raise ProviderUnavailableError(
            f"execution provider(s) {missing} are not available here (available: "
            f"{sorted(ready)}); see deploylab.export.providers() for what each one needs")
    opts = _session_options(threads, spinning, optimization, inter_threads)
    return ort.InferenceSession(str(src), opts, providers=wanted)


def _session_options(threads: int | None, spinning: bool | str, optimization: str,
                     inter_threads: int = 1):
    import onnxruntime as ort

    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {list(levels)}, got {optimization!r}")
    if spinning not in (False, True, "in-call"):
        raise ValueError(f"spinning must be False, True or 'in-call', got {spinning!r}")
    if threads is None:
        threads = _torch().get_num_threads()
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[optimization]
    opts.log_severity_level = 3  # warnings about unused initializers are noise here
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    if spinning == "in-call":
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def openvino_available() -> bool:
    """Whether the standalone OpenVINO runtime (`pip install openvino`) imports here."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _import_openvino():
    """Import openvino without its usage telemetry.

    `import openvino` loads its model converter, which (with no consent file in
    ~/intel/openvino_telemetry) sends a usage event to Google Analytics from a forked
    process. The converter falls back to its own no-op stub when `openvino_telemetry`
    cannot be imported, so that import is blocked for this process: the kit runs offline
    and sends nothing. (`opt_in_out --opt_out` makes the same choice machine-wide.)
    """
    import sys

    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None: the import fails cleanly
    import openvino

    return openvino


def openvino_session(path: str | os.PathLike, *, threads: int | None = None,
                     hint: str = "LATENCY", precision: str = "f32"):
    """An ONNX file compiled by OpenVINO's CPU runtime, callable like a session's `run`.

    Reads the ONNX file directly, and OpenVINO's usage telemetry is switched off for this
    process before openvino is imported (see `_import_openvino`).

    Args:
        path (str | PathLike): the ONNX file.
        threads (int | None, default None): inference threads; None uses torch's count.
        hint (str, default "LATENCY"): OpenVINO performance hint ("LATENCY" or
            "THROUGHPUT").
        precision (str, default "f32"): the CPU plugin's inference precision. OpenVINO
            silently runs in bf16 on CPUs with native bf16 (avx512_bf16, AMX) unless told;
            "f32" keeps an fp32 model fp32, "bf16" asks for the fast path.

    Returns:
        Callable[[dict[str, np.ndarray]], list[np.ndarray]]: feeds -> outputs.

    Raises:
        ProviderUnavailableError: when openvino is not installed.
    """
    src = _existing(path)
    if not openvino_available():
        raise ProviderUnavailableError("OpenVINO is not installed; `pip install openvino` adds "
                                       "its CPU runtime")
    ov = _import_openvino()

    threads = threads or _torch().get_num_threads()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(src)), "CPU",
                                  {"PERFORMANCE_HINT": hint,
                                   "INFERENCE_NUM_THREADS": int(threads),
                                   "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(feeds)
        return [result[o] for o in compiled.outputs]

    return run
