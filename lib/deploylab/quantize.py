"""Quantization: one verb, one config object per technique, a handler per backend.

`quantize(model, config)` returns a `Quantized` result that knows its file (or module), its
size next to the float model's, and how to run; `evaluate(results, ...)` times several
results interleaved and measures their fidelity, so every result carries size, speed and
quality. Configs:

- `DynamicInt8Config`: int8 weights, activations quantized on the fly per batch (ONNX
  Runtime `quantize_dynamic`, or torchao `Int8DynamicActivationInt8WeightConfig`).
- `StaticInt8Config`: int8 weights and activations with ranges fixed by a calibration set
  (ONNX Runtime, QDQ format, per-channel weights, MinMax / Entropy / Percentile).
- `WeightOnlyConfig`: 8- or 4-bit weights in blocks, float compute (ONNX Runtime
  `MatMulNBits`, or torchao).
- `MixedPrecisionConfig`: a base int8 config that keeps the layers a per-layer sensitivity
  scan (`sensitivity_scan`) found most sensitive in float.
- `QATConfig`: quantization-aware fine-tuning of the kit's digits CNN with fake-quantized
  weights and activations (torch's core `fake_quantize_*` ops, not the deprecated
  `torch.ao.quantization` workflow), exported as a QDQ ONNX graph that runs in int8.

A new technique is a new config dataclass plus a handler registered with `@register`.
The tensor-level helpers (`quantize_tensor`, `quant_error`) show what quantization does to
numbers and drive the chapter's explorer widget.

Example:
    >>> from deploylab import quantize as q
    >>> fp32 = export.export_onnx("all-MiniLM-L6-v2")
    >>> int8 = q.quantize(fp32, q.DynamicInt8Config())          # Quantized, .path, .size_mb
    >>> q.evaluate({"fp32": q.reference(fp32), "int8": int8}, feeds)   # p50, cosine, size
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._files import atomic_path
from .errors import DeploylabError

__all__ = [
    "BackendUnsupportedError",
    "CalibrationError",
    "CalibrationReader",
    "DynamicInt8Config",
    "MixedPrecisionConfig",
    "QATConfig",
    "Quantized",
    "QuantizeError",
    "Sensitivity",
    "StaticInt8Config",
    "WeightOnlyConfig",
    "digits_calibration",
    "encoder_feeds",
    "evaluate",
    "has_vnni",
    "activation_matmuls",
    "linear_to_onnx_nodes",
    "prepare_qat",
    "quant_error",
    "quantize",
    "quantize_tensor",
    "reference",
    "register",
    "sensitivity_scan",
]

BACKENDS = ("ort", "torchao", "torch")


class QuantizeError(DeploylabError):
    """A quantization could not be done as asked."""


class BackendUnsupportedError(QuantizeError):
    """The chosen backend cannot do what the config asks (the message names one that can)."""


class CalibrationError(QuantizeError):
    """The calibration data is empty or does not fit the model's inputs."""


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX).

    Without them x86 int8 kernels multiply through 16-bit pair sums that can saturate, so
    weights are kept to 7 bits ("reduce_range") there.
    """
    from .measure import cpu_flags

    return bool(set(cpu_flags()) & {"avx512_vnni", "avx_vnni", "amx_int8"})


# ------------------------------------------------------------------------------ configs


def _check_backend(backend: str, allowed: Sequence[str], what: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend not in allowed:
        raise BackendUnsupportedError(
            f"{what} is not available on backend {backend!r}; use backend="
            f"{allowed[0]!r} (supported: {', '.join(allowed)})")


@dataclass
class DynamicInt8Config:
    """int8 weights; activations quantized per batch at run time (no calibration needed).

    Args:
        backend (str, default "ort"): "ort" (ONNX Runtime) or "torchao".
        per_channel (bool, default True): one scale per output channel of each weight;
            per-tensor scales lose ~0.13 of cosine on MiniLM (outlier channels).
        reduce_range (bool | None, default None): 7-bit weights; None picks True on CPUs
            without VNNI (their 16-bit pair sums would saturate otherwise).
        exclude (tuple[str, ...], default ()): ONNX node names (ort) or module names
            (torchao) kept in float.
        op_types (tuple[str, ...], default ("MatMul", "Gemm", "Attention", "Gather")): ORT
            op types; "Gather" stores embedding tables in int8 too (MiniLM's word embeddings
            are half its size).
        path (str | PathLike | None, default None): output file (ort); None writes beside
            the float model with a name built from the options.
    """

    backend: str = "ort"
    per_channel: bool = True
    reduce_range: bool | None = None
    exclude: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Attention", "Gather")
    path: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        _check_backend(self.backend, ("ort", "torchao"), "dynamic int8")
        self.exclude = tuple(self.exclude)

    @classmethod
    def avx2(cls, **kw) -> DynamicInt8Config:
        """Preset for CPUs without VNNI: per-channel, 7-bit weights."""
        return cls(**{"per_channel": True, "reduce_range": True, **kw})

    @classmethod
    def avx512_vnni(cls, **kw) -> DynamicInt8Config:
        """Preset for CPUs with VNNI/AMX: per-channel, full 8-bit weights."""
        return cls(**{"per_channel": True, "reduce_range": False, **kw})

    @classmethod
    def for_this_cpu(cls, **kw) -> DynamicInt8Config:
        """`avx512_vnni()` where this CPU has VNNI or AMX, else `avx2()`."""
        return cls.avx512_vnni(**kw) if has_vnni() else cls.avx2(**kw)


@dataclass
class StaticInt8Config:
    """int8 weights and activations, activation ranges fixed from a calibration set.

    Args:
        calibration (Iterable[dict[str, np.ndarray]] | CalibrationReader): input feeds
            (name -> array) the ranges are observed on; a few dozen real batches suffice.
        method (str, default "minmax"): "minmax" (full observed range), "entropy" (KL
            divergence; clips rare outliers), "percentile" (clips the top 0.01%).
        per_channel (bool, default True): per-output-channel weight scales.
        activation_type (str, default "uint8"): "uint8" (asymmetric; what x86 u8s8 kernels
            want) or "int8".
        reduce_range (bool | None, default None): 7-bit weights; None: True without VNNI.
        exclude (tuple[str, ...], default ()): ONNX node names kept in float.
        max_samples (int, default 64): calibration feeds used at most.
        op_types (tuple[str, ...] | None, default None): ORT op types to quantize; None
            quantizes every supported op (right for CNNs); transformers keep far more
            fidelity with ("MatMul",) only, since LayerNorm/Softmax/Add ranges are wide.
        backend (str, default "ort"): only "ort" (QDQ graphs that ORT fuses into
            QLinearConv/QLinearMatMul); torch has no maintained CPU static path outside the
            deprecated torch.ao workflow.
        path (str | PathLike | None, default None): output file.
    """

    calibration: object = None
    method: str = "minmax"
    per_channel: bool = True
    activation_type: str = "uint8"
    reduce_range: bool | None = None
    exclude: tuple[str, ...] = ()
    max_samples: int = 64
    op_types: tuple[str, ...] | None = None
    backend: str = "ort"
    path: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        _check_backend(self.backend, ("ort",), "static int8")
        if self.method not in ("minmax", "entropy", "percentile"):
            raise ValueError(f"method must be 'minmax', 'entropy' or 'percentile', got "
                             f"{self.method!r}")
        if self.activation_type not in ("uint8", "int8"):
            raise ValueError(f"activation_type must be 'uint8' or 'int8', got "
                             f"{self.activation_type!r}")
        if self.calibration is None:
            raise CalibrationError("StaticInt8Config needs calibration=...: a list of input "
                                   "feeds, e.g. digits_calibration(data) or encoder_feeds(...)")
        if not isinstance(self.max_samples, int) or self.max_samples < 1:
            raise ValueError(f"max_samples must be an int >= 1, got {self.max_samples!r}")
        self.exclude = tuple(self.exclude)


@dataclass
class WeightOnlyConfig:
    """Weights stored in 8 or 4 bits in blocks along the input dimension; compute stays float
    (the weights are dequantized on the fly), so it saves memory and bandwidth, not math.

    Args:
        bits (int, default 4): 4 or 8.
        block_size (int, default 32): weights sharing one scale (a power of two >= 16).
        symmetric (bool, default True): zero point fixed at 0.
        accuracy_level (int | None, default None): ORT MatMulNBits compute type: None/0
            float, 4 = int8 compute of the activations (faster, a little less exact).
        backend (str, default "ort"): "ort" (MatMulNBits) or "torchao".
        path (str | PathLike | None, default None): output file (ort).
    """

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = None
    backend: str = "ort"
    path: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        _check_backend(self.backend, ("ort", "torchao"), "weight-only quantization")
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits!r}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {self.block_size}")


@dataclass
class MixedPrecisionConfig:
    """A base int8 config that keeps the most sensitive layers in float.

    Args:
        base (DynamicInt8Config | StaticInt8Config, default DynamicInt8Config()): what the
            other layers get.
        keep_float (int, default 4): how many of the most sensitive layers stay float.
        sensitivity (Sensitivity | None, default None): a scan from `sensitivity_scan`;
            None runs one on `samples` (then the torch model must be given to `quantize`).
        samples (list[dict] | None, default None): input feeds for the scan.
        scan_mode (str, default "output"): `sensitivity_scan` mode when the scan runs here.
        path (str | PathLike | None, default None): output file.
    """

    base: object = field(default_factory=DynamicInt8Config)
    keep_float: int = 4
    sensitivity: Sensitivity | None = None
    samples: list | None = None
    scan_mode: str = "output"
    path: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, (DynamicInt8Config, StaticInt8Config)):
            raise TypeError("base must be a DynamicInt8Config or StaticInt8Config, not "
                            f"{type(self.base).__name__}")
        if self.base.backend != "ort":
            raise BackendUnsupportedError("mixed precision builds ONNX Runtime graphs with "
                                          "float layers excluded; use a base config with "
                                          "backend='ort'")
        if not isinstance(self.keep_float, int) or self.keep_float < 0:
            raise ValueError(f"keep_float must be an int >= 0, got {self.keep_float!r}")
        if self.sensitivity is None and not self.samples:
            raise CalibrationError("mixed precision needs sensitivity=sensitivity_scan(...) or "
                                   "samples=[feeds, ...] to run the scan on")

    @property
    def backend(self) -> str:
        return self.base.backend


@dataclass
class QATConfig:
    """Quantization-aware training of the kit's digits CNN: fake-quantize weights (per
    channel, symmetric) and activations (per tensor, affine) while fine-tuning, so the
    weights learn to sit where the int8 grid can represent them.

    Args:
        data (Digits): from `cnn.load_digits_split`, the fine-tuning and test data.
        bits (int, default 8): bit width simulated (2-8); 8 exports to an int8 QDQ graph.
        epochs (int, default 3): fine-tuning epochs.
        lr (float, default 1e-3): learning rate (smaller than training from scratch).
        export (bool, default True): export the result as ONNX QDQ (8 bits only).
        path (str | PathLike | None, default None): output file.
        backend (str, default "torch"): the fine-tuning runs in plain torch.
    """

    data: object = None
    bits: int = 8
    epochs: int = 3
    lr: float = 1e-3
    export: bool = True
    path: str | os.PathLike | None = None
    backend: str = "torch"

    def __post_init__(self) -> None:
        _check_backend(self.backend, ("torch",), "quantization-aware training")
        if self.data is None:
            raise CalibrationError("QATConfig needs data=cnn.load_digits_split(...) to "
                                   "fine-tune on")
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an int in 2..8, got {self.bits!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {self.epochs!r}")
        if self.export and self.bits != 8:
            self.export = False  # ONNX QDQ in this opset is 8-bit; lower widths stay simulated


# ----------------------------------------------------------------------------- results


@dataclass
class Quantized:
    """What `quantize` returns.

    Args:
        name (str): a short label ("ort-int8-dynamic").
        backend (str): "ort" or "torchao" (or "reference").
        path (Path | None): the quantized ONNX file (ort), written atomically.
        module (torch.nn.Module | None): the quantized module (torchao, QAT).
        size_bytes (int): bytes on disk (ort) or serialized state dict (torch).
        float_size_bytes (int | None): the same for the float model.
        kept_float (tuple[str, ...]): layers left in float on purpose.
        info (dict): backend details (bits, method, ...), and, after `evaluate`, figures.
    """

    name: str
    backend: str
    path: Path | None = None
    module: object = None
    size_bytes: int = 0
    float_size_bytes: int | None = None
    kept_float: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)
    kind: str = "encoder"

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    @property
    def size_ratio(self) -> float | None:
        """Size relative to the float model (0.26 means 26% of it)."""
        return self.size_bytes / self.float_size_bytes if self.float_size_bytes else None

    def runner(self, threads: int | None = None, *,
               spinning: bool = False) -> Callable[[dict], np.ndarray]:
        """A callable feeds (name -> array) -> first output as a float32 array; `spinning`
        lets an ONNX Runtime session's idle threads busy-wait (faster calls on cores of
        its own, see `export.session`)."""
        if self.path is not None:
            from .export import session

            sess = session(self.path, threads=threads, spinning=spinning)
            names = {i.name for i in sess.get_inputs()}
            return lambda feeds: sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
        return _torch_runner(self.module, self.kind, threads)


def _torch_runner(module, kind: str, threads: int | None) -> Callable[[dict], np.ndarray]:
    import torch

    if threads is not None:  # torch's pool is process-wide: set once, not per call
        torch.set_num_threads(threads)

    def run(feeds: dict) -> np.ndarray:
        with torch.inference_mode():
            if kind == "module":
                out = module(torch.from_numpy(next(iter(feeds.values()))))
            else:
                out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
                out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            return out.float().numpy()

    return run


def reference(model, *, name: str = "fp32") -> Quantized:
    """The float model wrapped as a result, so it is timed and measured like the others.

    Args:
        model: an ONNX path (runs on ONNX Runtime) or a torch module.
        name (str, default "fp32"): its label.
    """
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        size = p.stat().st_size
        return Quantized(name, "ort", path=p, size_bytes=size, float_size_bytes=size)
    size = _state_bytes(model)
    return Quantized(name, "torch", module=model, size_bytes=size, float_size_bytes=size,
                     kind=_kind(model))


def _kind(model) -> str:
    cfg = getattr(model, "config", None)
    return "encoder" if cfg is not None and hasattr(cfg, "vocab_size") else "module"


def _state_bytes(module) -> int:
    import torch

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


# ---------------------------------------------------------------------------- registry

_HANDLERS: dict[tuple[type, str], Callable] = {}


def register(config_type: type, backend: str):
    """Register `fn(model, config) -> Quantized` as the handler of a config type on a
    backend: a new technique is a config dataclass plus one registered handler."""
    def deco(fn):
        _HANDLERS[(config_type, backend)] = fn
        return fn
    return deco


def quantize(model, config) -> Quantized:
    """Quantize a model as the config says (the model itself is not changed).

    Args:
        model: for backend "ort": an ONNX file (str/Path), a torch module or encoder, or a
            registry name of one (exported first with `export.export_onnx`, parity-gated);
            for "torchao": a torch module or encoder (or a registry name).
        config: one of the config dataclasses of this module.

    Returns:
        Quantized: the file or module, its size and the float model's size.

    Raises:
        BackendUnsupportedError: the config's backend cannot do it (says which can).
        CalibrationError: empty or mismatched calibration data.
        FileNotFoundError: an ONNX path that does not exist.
    """
    backend = getattr(config, "backend", None)
    handler = _HANDLERS.get((type(config), backend))
    if handler is None:
        known = sorted({t.__name__ for t, _ in _HANDLERS})
        raise BackendUnsupportedError(
            f"no handler for {type(config).__name__} on backend {backend!r}; configs: "
            f"{', '.join(known)}")
    return handler(model, config)


# ------------------------------------------------------------------------ ONNX Runtime


def _onnx_source(model) -> tuple[Path, object]:
    """(fp32 ONNX path, torch model or None) for whatever the user passed."""
    from . import export

    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if p.suffix == ".onnx" or p.is_file():
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist; export the model first with "
                                        "deploylab.export.export_onnx(model)")
            return p.resolve(), None
        from . import assets

        _, torch_model = assets.load_encoder(model, attn_implementation="eager")
        return export.export_onnx(torch_model, export.ExportConfig(overwrite=False)), torch_model
    import torch

    if isinstance(model, torch.nn.Module):
        return export.export_onnx(model, export.ExportConfig(overwrite=False)), model
    raise export.UnsupportedModelError(
        f"cannot quantize a {type(model).__name__}: pass an ONNX file, a torch module or a "
        "registry name")


def _out_path(src: Path, config, tag: str) -> Path:
    if getattr(config, "path", None) is not None:
        out = Path(config.path).resolve()
        if out.suffix != ".onnx":
            raise ValueError(f"path must end in .onnx, got {out}")
        return out
    return src.with_name(f"{src.stem}.{tag}.onnx")


def _fresh(out: Path, src: Path) -> bool:
    """An output built from this very source already exists (same options, same name)."""
    return out.is_file() and out.stat().st_mtime_ns >= src.stat().st_mtime_ns


def _write(out: Path, src: Path, make: Callable[[Path], None]) -> Path:
    """Build `out` with make(tmp) unless an output of the same name (the name encodes the
    options) is already newer than its source: quantizing MiniLM takes seconds to minutes,
    and notebooks and benchmarks ask for the same files again."""
    if _fresh(out, src):
        return out
    with atomic_path(out) as tmp, _quiet():
        make(tmp)
    return out


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer logs advice on the root logger at WARNING; keep it out of
    notebooks (the advice, pre-processing, is what the export optimizer already did). The
    root logger leaves as it came: `matmul_nbits_quantizer` calls
    `logging.basicConfig(level=INFO)` on import, after which every library's INFO lines
    (httpx's requests, Ray's) would reach a notebook's stderr."""
    root = logging.getLogger()
    old, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)


def _reduce(flag: bool | None) -> bool:
    return (not has_vnni()) if flag is None else bool(flag)


def _result(name, out: Path, src: Path, config, kept=(), **info) -> Quantized:
    return Quantized(name, "ort", path=out, size_bytes=out.stat().st_size,
                     float_size_bytes=src.stat().st_size, kept_float=tuple(kept),
                     info={"config": type(config).__name__, **info})


@register(DynamicInt8Config, "ort")
def _ort_dynamic(model, config: DynamicInt8Config) -> Quantized:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, _ = _onnx_source(model)
    rr = _reduce(config.reduce_range)
    tag = f"int8-dyn-{'pc' if config.per_channel else 'pt'}{'-rr' if rr else ''}"
    if config.exclude:
        tag += "-x" + hashlib.sha256("|".join(config.exclude).encode()).hexdigest()[:6]
    if tuple(config.op_types) != DynamicInt8Config.op_types:
        tag += "-" + "-".join(config.op_types)
    out = _out_path(src, config, tag)

    def make(tmp):
        quantize_dynamic(src, tmp, weight_type=QuantType.QInt8, per_channel=config.per_channel,
                         reduce_range=rr, nodes_to_exclude=list(config.exclude),
                         op_types_to_quantize=list(config.op_types),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

    _write(out, src, make)
    return _result("ort-int8-dynamic", out, src, config, config.exclude,
                   per_channel=config.per_channel, reduce_range=rr)


class CalibrationReader:
    """Feeds for ONNX Runtime's calibrator, from any iterable of `{input name: array}`.

    Args:
        feeds (Iterable[dict[str, np.ndarray]]): calibration batches.
        max_samples (int | None, default None): stop after this many.
        input_names (Sequence[str] | None, default None): the model's inputs; feeds are
            checked against them (a clear error instead of ORT's deep one).
    """

    def __init__(self, feeds: Iterable[dict], max_samples: int | None = None,
                 input_names: Sequence[str] | None = None):
        items = []
        for i, f in enumerate(feeds):
            if max_samples is not None and i >= max_samples:
                break
            if not isinstance(f, Mapping):
                raise CalibrationError(f"calibration item {i} is a {type(f).__name__}, not a "
                                       "dict of input name -> array")
            items.append({k: np.asarray(v) for k, v in f.items()})
        if not items:
            raise CalibrationError("the calibration set is empty: pass at least one batch of "
                                   "real inputs (a few dozen is typical)")
        if input_names is not None:
            missing = set(input_names) - set(items[0])
            if missing:
                raise CalibrationError(f"calibration feeds lack inputs {sorted(missing)}; the "
                                       f"model takes {list(input_names)}")
            items = [{k: v for k, v in f.items() if k in set(input_names)} for f in items]
        self.items = items
        self._pos = 0

    def __len__(self) -> int:
        return len(self.items)

    def get_next(self) -> dict | None:
        if self._pos >= len(self.items):
            return None
        self._pos += 1
        return self.items[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0


def _ort_reader(reader: CalibrationReader):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def get_next(self):
            return reader.get_next()

        def rewind(self):
            reader.rewind()

    reader.rewind()
    return Reader()


def activation_matmuls(path: str | os.PathLike) -> list[str]:
    """MatMul nodes multiplying two activations (attention scores Q.K^T and probs.V): no
    weights to save, and static per-tensor ranges fit them badly; exclude them from static
    quantization of transformers."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    consts = {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in m.graph.node if n.op_type == "MatMul"
            and not any(i in inits or i in consts for i in n.input)]


def _input_names(path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


@register(StaticInt8Config, "ort")
def _ort_static(model, config: StaticInt8Config) -> Quantized:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, _ = _onnx_source(model)
    cal = config.calibration
    if not isinstance(cal, CalibrationReader):
        cal = CalibrationReader(cal, config.max_samples, _input_names(src))
    shapes = {tuple(v.shape) for f in cal.items for v in f.values()}
    if config.method != "minmax" and len({s[1:] for s in shapes}) > 1:
        raise CalibrationError(
            f"{config.method} calibration builds histograms over batches of one shape, but "
            f"the calibration feeds have shapes {sorted(shapes)[:4]}; pad them to one length "
            "(encoder_feeds(..., pad_to_max=True)) or use method='minmax'")
    rr = _reduce(config.reduce_range)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    act = QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8
    tag = (f"int8-static-{config.method}-{'pc' if config.per_channel else 'pt'}-"
           f"{config.activation_type}{'-rr' if rr else ''}")
    digest = hashlib.sha256("|".join(config.exclude).encode())
    for f in cal.items:  # the same calibration data gives the same file name
        for v in f.values():
            digest.update(np.ascontiguousarray(v).tobytes())
    tag += f"-{'-'.join(config.op_types or ['all'])}-{digest.hexdigest()[:8]}"
    out = _out_path(src, config, tag)

    def make(tmp):
        with _chdir_tmp():
            quantize_static(src, tmp, _ort_reader(cal), quant_format=QuantFormat.QDQ,
                            per_channel=config.per_channel, reduce_range=rr, activation_type=act,
                            weight_type=QuantType.QInt8, calibrate_method=methods[config.method],
                            nodes_to_exclude=list(config.exclude),
                            op_types_to_quantize=list(config.op_types) if config.op_types else None,
                            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT,
                                           # u8 activations x s8 weights is what x86 runs fastest
                                           "ActivationSymmetric": False,
                                           "WeightSymmetric": True})

    _write(out, src, make)
    return _result("ort-int8-static", out, src, config, config.exclude, method=config.method,
                   per_channel=config.per_channel, reduce_range=rr,
                   calibration_samples=len(cal))


@contextlib.contextmanager
def _chdir_tmp():
    """ORT's calibrator writes scratch files (augmented_model.onnx) into the current folder;
    run it in a temporary one so nothing lands beside the user's notebooks."""
    import tempfile

    old = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="deploylab-calib-") as d:
        os.chdir(d)
        try:
            yield
        finally:
            os.chdir(old)


@register(WeightOnlyConfig, "ort")
def _ort_weight_only(model, config: WeightOnlyConfig) -> Quantized:
    import onnx

    with _quiet():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    src, _ = _onnx_source(model)
    tag = f"w{config.bits}-b{config.block_size}{'-sym' if config.symmetric else ''}"
    if config.accuracy_level:
        tag += f"-acc{config.accuracy_level}"
    out = _out_path(src, config, tag)

    def make(tmp):
        q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=config.bits,
                                 block_size=config.block_size, is_symmetric=config.symmetric,
                                 accuracy_level=config.accuracy_level)
        q.process()
        onnx.save(q.model.model, str(tmp))

    _write(out, src, make)
    return _result(f"ort-int{config.bits}-weight-only", out, src, config, bits=config.bits,
                   block_size=config.block_size)


# ----------------------------------------------------------------------------- torchao


def _torch_source(model):
    import torch

    if isinstance(model, (str, os.PathLike)):
        if Path(model).suffix == ".onnx":
            raise BackendUnsupportedError(
                f"torchao quantizes torch modules, not ONNX files ({model}); pass the torch "
                "model, or use backend='ort' for an ONNX file")
        from . import assets

        _, model = assets.load_encoder(model)
    if not isinstance(model, torch.nn.Module):
        from .export import UnsupportedModelError

        raise UnsupportedModelError(f"cannot quantize a {type(model).__name__} with torchao: "
                                    "pass a torch module or a registry name")
    return model


@contextlib.contextmanager
def _torchao_quiet():
    """torchao logs that its optional CUDA kernels do not load on a CPU-only torch."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torchao.utils", "root")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import torchao  # noqa: F401

        yield
    finally:
        for lg, lv in zip(loggers, old, strict=True):
            lg.setLevel(lv)


def _torchao_apply(model, ao_config, name: str, config, filter_fn=None, **info) -> Quantized:
    import torch

    source = _torch_source(model)
    with _torchao_quiet():
        from torchao.quantization import quantize_

        qmodel = copy.deepcopy(source).eval()
        try:
            with torch.no_grad():
                quantize_(qmodel, ao_config, filter_fn=filter_fn)
        except Exception as e:  # torchao kernels that need a GPU or another CPU
            raise BackendUnsupportedError(
                f"torchao could not apply {type(ao_config).__name__} here ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160]}); use backend='ort'") from e
    return Quantized(name, "torchao", module=qmodel, size_bytes=_state_bytes(qmodel),
                     float_size_bytes=_state_bytes(source), kind=_kind(source),
                     kept_float=tuple(getattr(config, "exclude", ())),
                     info={"config": type(config).__name__, "torchao": type(ao_config).__name__,
                           **info})


def _not_excluded(exclude: tuple[str, ...]):
    import torch

    def keep(module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and fqn not in exclude
    return keep


@register(DynamicInt8Config, "torchao")
def _torchao_dynamic(model, config: DynamicInt8Config) -> Quantized:
    with _torchao_quiet():
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return _torchao_apply(model, Int8DynamicActivationInt8WeightConfig(), "torchao-int8-dynamic",
                          config, _not_excluded(config.exclude))


@register(WeightOnlyConfig, "torchao")
def _torchao_weight_only(model, config: WeightOnlyConfig) -> Quantized:
    with _torchao_quiet():
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if config.bits == 8:
        ao = Int8WeightOnlyConfig()
    else:
        ao = Int4WeightOnlyConfig(group_size=max(32, config.block_size))
    return _torchao_apply(model, ao, f"torchao-int{config.bits}-weight-only", config,
                          bits=config.bits)


# ------------------------------------------------------------------- tensors and errors


def quantize_tensor(x, bits: int = 8, *, symmetric: bool = True, granularity: str = "tensor",
                    axis: int = 0, block_size: int = 32) -> dict:
    """Quantize a float array to `bits`-bit integers and back, showing every piece.

    Args:
        x (np.ndarray | torch.Tensor): the values (a weight matrix, activations).
        bits (int, default 8): 2..16.
        symmetric (bool, default True): zero point 0 and range [-max|x|, max|x|] (weights);
            False: affine over [min, max] with a zero point (activations after ReLU).
        granularity (str, default "tensor"): "tensor" (one scale), "channel" (one per
            slice along `axis`) or "block" (one per `block_size` values along the last axis).
        axis (int, default 0): the channel axis.
        block_size (int, default 32): values per block.

    Returns:
        dict: q (integers), scale, zero_point, dequantized (float32), error (x - dequantized).
    """
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits!r}")
    if granularity not in ("tensor", "channel", "block"):
        raise ValueError(f"granularity must be 'tensor', 'channel' or 'block', got "
                         f"{granularity!r}")
    arr = x.detach().float().numpy() if hasattr(x, "detach") else np.asarray(x, np.float32)
    shape = arr.shape
    if granularity == "block":
        flat = arr.reshape(-1)
        pad = (-len(flat)) % block_size
        work = np.concatenate([flat, np.zeros(pad, arr.dtype)]).reshape(-1, block_size)
        reduce_axes = (1,)
    elif granularity == "channel":
        work = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
        reduce_axes = (1,)
    else:
        work, reduce_axes = arr.reshape(1, -1), (1,)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(work).max(axis=reduce_axes, keepdims=True) / qmax
        scale = np.where(scale > 0, scale, 1.0)
        zero = np.zeros_like(scale)
        q = np.clip(np.round(work / scale), -qmax - 1, qmax)
    else:
        qmax = 2 ** bits - 1
        lo = np.minimum(work.min(axis=reduce_axes, keepdims=True), 0)
        hi = np.maximum(work.max(axis=reduce_axes, keepdims=True), 0)
        scale = np.where(hi > lo, (hi - lo) / qmax, 1.0)
        zero = np.round(-lo / scale)
        q = np.clip(np.round(work / scale) + zero, 0, qmax)
    deq = ((q - zero) * scale).astype(np.float32)
    if granularity == "block":
        deq = deq.reshape(-1)[:arr.size].reshape(shape)
    elif granularity == "channel":
        deq = np.moveaxis(deq.reshape(np.moveaxis(arr, axis, 0).shape), 0, axis)
    else:
        deq = deq.reshape(shape)
    return {"q": q.astype(np.int32), "scale": scale.reshape(-1), "zero_point":
            zero.reshape(-1).astype(np.int32), "dequantized": deq, "error": arr - deq}


def quant_error(x, bits: int = 8, **kw) -> dict:
    """Summary of what quantizing `x` costs: relative RMS error, worst error, SQNR (dB) and
    the number of distinct scales. Keyword arguments as in `quantize_tensor`."""
    r = quantize_tensor(x, bits, **kw)
    arr = np.asarray(r["dequantized"] + r["error"], np.float64)
    err = r["error"].astype(np.float64)
    signal = float(np.sqrt(np.mean(arr ** 2))) or 1.0
    noise = float(np.sqrt(np.mean(err ** 2)))
    return {"bits": bits, "rel_rms_error": noise / signal, "max_abs_error": float(
        np.abs(err).max()), "sqnr_db": 20 * np.log10(signal / noise) if noise > 0 else
        float("inf"), "scales": int(r["scale"].size)}


# --------------------------------------------------------------------------- sensitivity


@dataclass
class Sensitivity:
    """A per-layer sensitivity scan: the fidelity of the model's output when only that layer
    is quantized (all others float). Lower cosine = more sensitive.

    Args:
        rows (list[dict]): layer (module name), kind, cosine_mean, cosine_min, rel_error;
            sorted most sensitive (lowest cosine_mean) first.
        bits (int): the bit width simulated.
    """

    rows: list[dict]
    bits: int = 8

    def most_sensitive(self, k: int) -> list[str]:
        return [r["layer"] for r in self.rows[:k]]

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def _fake_quant_dynamic(x, bits: int, reduce_range: bool):
    """Per-tensor affine uint8 rounding of activations, as ORT's DynamicQuantizeLinear."""
    import torch

    qmax = 2 ** (bits - 1 if reduce_range else bits) - 1
    lo, hi = torch.clamp(x.min(), max=0), torch.clamp(x.max(), min=0)
    scale = torch.clamp((hi - lo) / qmax, min=1e-12)
    zero = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, qmax) - zero) * scale


def _quantized_weight(w, bits: int, per_channel: bool, reduce_range: bool):
    import torch

    r = quantize_tensor(w, bits - 1 if reduce_range else bits, symmetric=True,
                        granularity="channel" if per_channel else "tensor", axis=0)
    return torch.from_numpy(r["dequantized"]).to(w.dtype)


def sensitivity_scan(model, samples: Sequence[dict], *, bits: int = 8, per_channel: bool = True,
                     reduce_range: bool | None = None, layers: Sequence[str] | None = None,
                     mode: str = "output", progress: bool = False) -> Sensitivity:
    """Quantize one layer at a time (weights per channel, activations per tensor on the fly,
    as dynamic int8 does) and measure how far the output moves.

    Simulated in torch, where rebuilding an ONNX graph per layer would take minutes.
    mode "output" runs the whole model once per layer and compares its final output (what
    users see; one forward pass per layer); mode "local" runs the model once, records each
    layer's input, and compares each layer's own output (one matmul per layer: much faster,
    blind to how errors grow or shrink downstream). The ranking is what matters.

    Args:
        model (torch.nn.Module): the float model (an encoder or the digits CNN).
        samples (Sequence[dict]): input feeds (name -> np.ndarray), e.g. `encoder_feeds`.
        bits (int, default 8): bit width simulated.
        per_channel (bool, default True): weight scales per output channel.
        reduce_range (bool | None, default None): 7-bit weights; None: True without VNNI.
        layers (Sequence[str] | None, default None): module names to scan; None: every
            Linear and Conv2d.
        mode (str, default "output"): "output" or "local" (see above).
        progress (bool, default False): a tqdm bar.

    Returns:
        Sensitivity: layers sorted most sensitive first.
    """
    import torch

    from .measure import cosine

    if not samples:
        raise CalibrationError("sensitivity_scan needs at least one sample feed")
    if mode not in ("output", "local"):
        raise ValueError(f"mode must be 'output' or 'local', got {mode!r}")
    rr = _reduce(reduce_range)
    kind = _kind(model)
    run = _torch_runner(model, kind, None)
    masks = [f.get("attention_mask") for f in samples]

    def outputs():
        outs = []
        for f, m in zip(samples, masks, strict=True):
            o = run(f)
            outs.append(o[m.astype(bool)] if m is not None and o.ndim == 3 else
                        o.reshape(o.shape[0], -1))
        return np.concatenate(outs)

    named = {n: m for n, m in model.named_modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    names = list(layers) if layers is not None else list(named)
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"no Linear/Conv2d layers named {unknown[:3]}; choose from "
                         f"{list(named)[:5]}...")
    if mode == "local":
        return _local_scan(model, run, samples, {n: named[n] for n in names}, bits,
                           per_channel, rr)
    ref = outputs()
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="sensitivity scan", unit="layer")
    rows = []
    for name in it:
        mod = named[name]
        saved = mod.weight.data.clone()
        mod.weight.data = _quantized_weight(saved, bits, per_channel, rr)
        hook = mod.register_forward_pre_hook(
            lambda _m, args: (_fake_quant_dynamic(args[0], bits, False), *args[1:]))
        try:
            out = outputs()
        finally:
            hook.remove()
            mod.weight.data = saved
        c = cosine(ref, out)
        rel = float(np.linalg.norm(ref - out) / max(np.linalg.norm(ref), 1e-12))
        rows.append({"layer": name, "kind": type(mod).__name__, "cosine_mean": float(c.mean()),
                     "cosine_min": float(c.min()), "rel_error": rel})
    rows.sort(key=lambda r: r["cosine_mean"])
    return Sensitivity(rows, bits)


def _local_scan(model, run, samples, named: dict, bits: int, per_channel: bool,
                rr: bool) -> Sensitivity:
    import torch

    from .measure import cosine

    inputs: dict[str, list] = {n: [] for n in named}
    hooks = [m.register_forward_pre_hook(
        lambda _m, args, n=n: inputs[n].append(args[0].detach().clone()))
        for n, m in named.items()]
    try:
        for f in samples:
            run(f)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    with torch.inference_mode():
        for name, mod in named.items():
            wq = _quantized_weight(mod.weight.data, bits, per_channel, rr)
            ys, yqs = [], []
            for x in inputs[name]:
                xq = _fake_quant_dynamic(x, bits, False)
                if isinstance(mod, torch.nn.Conv2d):
                    ys.append(mod(x))
                    yqs.append(mod._conv_forward(xq, wq, mod.bias))
                else:
                    ys.append(mod(x))
                    yqs.append(torch.nn.functional.linear(xq, wq, mod.bias))
            y = torch.cat([t.reshape(-1, t.shape[-1]) for t in ys]).float().numpy()
            yq = torch.cat([t.reshape(-1, t.shape[-1]) for t in yqs]).float().numpy()
            c = cosine(y, yq)
            rows.append({"layer": name, "kind": type(mod).__name__,
                         "cosine_mean": float(c.mean()), "cosine_min": float(c.min()),
                         "rel_error": float(np.linalg.norm(y - yq) /
                                            max(np.linalg.norm(y), 1e-12))})
    rows.sort(key=lambda r: r["cosine_mean"])
    return Sensitivity(rows, bits)


def linear_to_onnx_nodes(model, onnx_path: str | os.PathLike) -> dict[str, str]:
    """Map each Linear/Conv2d module of a torch model to the ONNX node that computes it,
    by matching weights (the exporter stores Linear weights transposed for MatMul).

    Returns:
        dict[str, str]: module name -> node name (modules not found are left out).
    """
    import onnx
    import torch
    from onnx import numpy_helper

    m = onnx.load(str(onnx_path))
    by_digest = {}
    for init in m.graph.initializer:
        if len(init.dims) >= 2:
            arr = numpy_helper.to_array(init)
            by_digest[hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest()] = init.name
    users: dict[str, str] = {}
    for node in m.graph.node:
        for i in node.input:
            users.setdefault(i, node.name)
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        w = mod.weight.detach().float().numpy()
        for cand in (w, w.T):
            key = hashlib.sha1(np.ascontiguousarray(cand).tobytes()).hexdigest()
            if key in by_digest and by_digest[key] in users:
                out[name] = users[by_digest[key]]
                break
    return out


@register(MixedPrecisionConfig, "ort")
def _ort_mixed(model, config: MixedPrecisionConfig) -> Quantized:
    src, torch_model = _onnx_source(model)
    scan = config.sensitivity
    if scan is None:
        if torch_model is None:
            raise BackendUnsupportedError(
                "mixed precision from an ONNX file needs a finished scan: pass "
                "MixedPrecisionConfig(sensitivity=sensitivity_scan(torch_model, samples)) or "
                "give quantize() the torch model")
        scan = sensitivity_scan(torch_model, config.samples,
                                reduce_range=config.base.reduce_range, mode=config.scan_mode)
    keep = scan.most_sensitive(config.keep_float)
    if torch_model is not None:
        mapping = linear_to_onnx_nodes(torch_model, src)
        nodes = [mapping[k] for k in keep if k in mapping]
    else:  # the scan's names are taken as ONNX node names, or matched as their scope
        nodes = _nodes_for(src, keep)
    base = copy.copy(config.base)
    base.exclude = tuple(dict.fromkeys((*base.exclude, *nodes)))
    base.path = config.path or _out_path(src, base, f"int8-mixed-k{config.keep_float}-"
                                         + hashlib.sha256("|".join(nodes).encode()).hexdigest()[:6])
    result = quantize(src, base)
    result.name, result.kept_float = "ort-int8-mixed", tuple(keep)
    result.info.update(kept_nodes=nodes, base=type(config.base).__name__)
    return result


def _nodes_for(src: Path, layers: Sequence[str]) -> list[str]:
    """ONNX node names for module names, matched on the exporter's scope names
    (`/inner/encoder/layer.0/output/dense/MatMul` for `encoder.layer.0.output.dense`)."""
    import onnx

    names = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node]
    out = []
    for layer in layers:
        if layer in names:
            out.append(layer)
            continue
        scope = "/" + layer.replace(".", "/") + "/"
        out += [n for n in names if scope in n.replace(".", "/") + "/"
                and n.rsplit("/", 1)[-1].startswith(("MatMul", "Gemm", "Conv"))]
    return out


# --------------------------------------------------------------------------------- QAT


def _qat_modules():
    import torch

    class ActQuant(torch.nn.Module):
        """Per-tensor affine fake quantization of activations; the range is an EMA of the
        observed min/max while training, frozen in eval mode (then exported as Q/DQ)."""

        def __init__(self, bits: int):
            super().__init__()
            self.bits = bits
            self.register_buffer("lo", torch.tensor(0.0))
            self.register_buffer("hi", torch.tensor(0.0))
            self.register_buffer("seen", torch.tensor(False))

        def forward(self, x):
            if self.training:
                lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
                if not bool(self.seen):
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                    self.seen.fill_(True)
                else:
                    self.lo.mul_(0.9).add_(0.1 * lo)
                    self.hi.mul_(0.9).add_(0.1 * hi)
            qmax = 2 ** self.bits - 1
            scale = float(max((self.hi - self.lo).item() / qmax, 1e-8))
            zero = round(-self.lo.item() / scale)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, qmax)

    class WeightQuant(torch.nn.Module):
        """Wraps a Conv2d/Linear: symmetric per-output-channel fake quantization of its
        weight on every forward (the straight-through estimator passes gradients)."""

        def __init__(self, inner, bits: int):
            super().__init__()
            self.inner, self.bits = inner, bits

        def forward(self, x):
            w = self.inner.weight
            qmax = 2 ** (self.bits - 1) - 1
            scale = (w.detach().abs().amax(dim=tuple(range(1, w.ndim))) / qmax).clamp(min=1e-8)
            zero = torch.zeros_like(scale, dtype=torch.int32)
            wq = torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -qmax - 1, qmax)
            if isinstance(self.inner, torch.nn.Conv2d):
                return self.inner._conv_forward(x, wq, self.inner.bias)
            return torch.nn.functional.linear(x, wq, self.inner.bias)

    return ActQuant, WeightQuant


def prepare_qat(model, bits: int = 8):
    """A copy of a model with every Conv2d/Linear fake-quantized (weights per channel) and
    its input fake-quantized (activations per tensor). Train it like the float model."""
    import torch

    act_quant, weight_quant = _qat_modules()
    qmodel = copy.deepcopy(model)

    def swap(parent):
        for name, child in parent.named_children():
            if isinstance(child, (torch.nn.Conv2d, torch.nn.Linear)):
                setattr(parent, name, torch.nn.Sequential(act_quant(bits),
                                                          weight_quant(child, bits)))
            else:
                swap(child)

    swap(qmodel)
    return qmodel


def _calibrate_qat(qmodel, x) -> None:
    """One training-mode pass (no gradient step) so every activation range is observed."""
    import torch

    qmodel.train()
    with torch.no_grad():
        qmodel(x)
    qmodel.eval()


@register(QATConfig, "torch")
def _qat(model, config: QATConfig) -> Quantized:
    import torch

    from . import cnn, export

    if not isinstance(model, torch.nn.Module) or _kind(model) != "module":
        raise BackendUnsupportedError(
            "QAT here fine-tunes the kit's digits CNN (or another image classifier trained "
            "with cnn.train_cnn); for encoders use post-training configs")
    qmodel = prepare_qat(model, config.bits)
    _calibrate_qat(qmodel, config.data.x_train[:256])
    history = cnn.train_cnn(qmodel, config.data, config.epochs, lr=config.lr)
    acc = cnn.accuracy(qmodel, config.data)
    result = Quantized(f"qat-int{config.bits}", "torch", module=qmodel,
                       size_bytes=_state_bytes(model), float_size_bytes=_state_bytes(model),
                       kind="module", info={"config": "QATConfig", "bits": config.bits,
                                            "history": history, "simulated_accuracy": acc})
    if config.export:
        out = Path(config.path) if config.path else export.cache_dir("onnx") / (
            f"qat-int8-{hashlib.sha256(str(sorted(qmodel.state_dict())).encode()).hexdigest()[:8]}"
            ".onnx")
        shape = (1, *config.data.x_train.shape[1:])
        # The generic gate's random images are no fit here: int8 rounding in ORT differs
        # from fake quantization by a step now and then, harmless on real digits but
        # amplified by out-of-range noise. The gate for QAT is top-1 agreement on the
        # real test images (the file is written only after it passes).
        tmp = export.export_onnx(qmodel, export.ExportConfig(
            path=out.with_name(f".{out.stem}.unchecked.onnx"), input_shape=shape, parity=None))
        try:
            agree = _qat_agreement(qmodel, tmp, config.data)
            if agree < 0.98:
                raise export.ParityError(
                    f"the QAT graph agrees with the fake-quantized model on only {agree:.1%} "
                    "of the test images (needs 98%); nothing was written. Fine-tune longer "
                    "(epochs) so activation ranges settle, then export again.", None)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        result.path = out
        result.info["top1_agreement_onnx_vs_torch"] = agree
        result.size_bytes = _int8_payload(result.path)
        result.info["onnx_file_bytes"] = result.path.stat().st_size
    return result


def _qat_agreement(qmodel, path: Path, data) -> float:
    from . import cnn
    from .export import session

    sess = session(path)
    onnx_logits = cnn.predict(lambda x: sess.run(None, {"input": x})[0], data.x_test)
    torch_logits = cnn.predict(qmodel, data.x_test)
    return float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())


def _int8_payload(path: Path) -> int:
    """Bytes the deployed QDQ model needs: ORT folds each float weight and its Q/DQ pair
    into int8 at load time, so count the weights as int8 (the file itself keeps float)."""
    import onnx

    m = onnx.load(str(path))
    total = 0
    for init in m.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        total += n if len(init.dims) >= 2 else n * 4  # weights as int8; biases, scales fp32
    return total


# ------------------------------------------------------------------------- data & eval


def encoder_feeds(tokenizer, texts: Sequence[str], *, batch_size: int = 16,
                  max_length: int = 128, pad_to_max: bool = False) -> list[dict]:
    """Tokenized batches of texts as ONNX feeds (int64 arrays), for calibration, sensitivity
    scans and quality checks.

    Args:
        tokenizer: a transformers tokenizer.
        texts (Sequence[str]): the texts (real sentences: calibration needs real ranges).
        batch_size (int, default 16): texts per feed.
        max_length (int, default 128): tokens kept.
        pad_to_max (bool, default False): pad every batch to max_length (fixed shapes).

    Returns:
        list[dict[str, np.ndarray]]: input_ids, attention_mask, token_type_ids per batch.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    feeds = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), truncation=True, max_length=max_length,
                        padding="max_length" if pad_to_max else True, return_tensors="np")
        feeds.append({k: enc[k].astype(np.int64) for k in
                      ("input_ids", "attention_mask", "token_type_ids") if k in enc})
    return feeds


def digits_calibration(data, n: int = 256, batch_size: int = 32) -> list[dict]:
    """Calibration feeds for the digits CNN from its training images (never the test set).

    Returns:
        list[dict]: {"input": (batch, 1, 8, 8) float32} feeds.
    """
    x = data.x_train[:n].numpy()
    if len(x) == 0:
        raise CalibrationError("no training images to calibrate on")
    return [{"input": x[i:i + batch_size]} for i in range(0, len(x), batch_size)]


def _embeddings(run, feeds: Sequence[dict]) -> np.ndarray:
    """Mean-pooled, L2-normalized embeddings (the MiniLM recipe) or flat outputs."""
    outs = []
    for f in feeds:
        o = np.asarray(run(f), np.float32)
        m = f.get("attention_mask")
        if m is not None and o.ndim == 3:
            w = m[..., None].astype(np.float32)
            o = (o * w).sum(1) / np.clip(w.sum(1), 1e-9, None)
            o = o / np.clip(np.linalg.norm(o, axis=1, keepdims=True), 1e-12, None)
        outs.append(o.reshape(o.shape[0], -1))
    return np.concatenate(outs)


def evaluate(results: Mapping[str, Quantized], quality_feeds: Sequence[dict],
             timing_feed: dict, *, reference: str | None = None, threads: int | None = None,
             repeats: int = 20, warmup: int = 3, max_time_s: float | None = None):
    """Size, speed and quality of several results side by side.

    Quality is the cosine of each result's (mean-pooled, for encoders) outputs to the
    reference's over `quality_feeds`; speed is the latency of `timing_feed`, all results
    timed interleaved in one `measure.compare` run.

    Args:
        results (Mapping[str, Quantized]): name -> result (use `reference(...)` for floats).
        quality_feeds (Sequence[dict]): feeds whose outputs are compared.
        timing_feed (dict): the one feed timed (e.g. batch 1, 128 tokens).
        reference (str | None, default None): the result everything is compared with; the
            first if None.
        threads (int | None, default None): threads of every runner; None: torch's count.
        repeats, warmup, max_time_s: as in `measure.compare`.

    Returns:
        pandas.DataFrame: one row per result: size_mb, size_ratio, latency p50/p90,
        speedup vs the reference, cosine_mean, cosine_min. Each result's `.info` also gets
        these figures.
    """
    import pandas as pd

    from .measure import compare, cosine

    if not results:
        raise ValueError("evaluate() needs at least one result")
    reference = reference or next(iter(results))
    if reference not in results:
        raise ValueError(f"reference {reference!r} is not one of {list(results)}")
    runners = {k: r.runner(threads) for k, r in results.items()}
    embs = {k: _embeddings(run, quality_feeds) for k, run in runners.items()}
    batch = len(next(iter(timing_feed.values())))
    timings = compare({k: (lambda run=run: run(timing_feed)) for k, run in runners.items()},
                      warmup=warmup, repeats=repeats, max_time_s=max_time_s, batch_size=batch)
    base = timings[reference].p50
    rows = []
    for k, r in results.items():
        c = cosine(embs[reference], embs[k])
        t = timings[k]
        fig = {"name": k, "backend": r.backend, "size_mb": r.size_mb,
               "size_ratio": r.size_ratio, "latency_ms_p50": t.p50, "latency_ms_p90": t.p90,
               "speedup": base / t.p50, "cosine_mean": float(c.mean()),
               "cosine_min": float(c.min())}
        r.info.update({k2: v for k2, v in fig.items() if k2 != "name"})
        rows.append(fig)
    return pd.DataFrame(rows).set_index("name")
