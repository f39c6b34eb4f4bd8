"""PP-OCRv4 on the kit's own ONNX Runtime sessions: detection, crops, recognition.

The two models ship inside `rapidocr-onnxruntime` (asset `ppocr-v4`); the pipeline around
them is written here so that every optimization applies to it:

- detection (DB, "differentiable binarization"): the image, BGR as PaddleOCR was trained, is
  resized so its sides are multiples of 32 (`det_limit="min"`, `det_side=736`: the short
  side at least 736 px, the package's default; `"max"`: the long side at most `det_side`,
  the speed/accuracy knob), normalized to [-1, 1], and the model returns a text
  probability map (1, 1, H, W). The package's own `DBPostProcess` turns it into boxes
  (threshold 0.3, contours, minimum-area rectangles, boxes scoring < 0.5 dropped,
  "unclipped" outwards by 1.6x area/perimeter, since the model predicts shrunk text kernels).
- crops: each box is cut out with a perspective warp to an upright rectangle.
- recognition (SVTR-LCNet + CTC): crops are resized to height 48 and padded to at least
  320 px wide (PaddleOCR's rule); with `rec_batch > 1` crops are sorted by aspect ratio and
  each batch is padded only to its widest member ("batched by width"). The model returns
  per-step class probabilities (B, T, 6625); greedy CTC decoding takes the argmax per step,
  collapses repeats and drops blanks, with the character dictionary stored in the model's
  metadata. Lines scoring below 0.5 are dropped (the package's default).

Optimizations (`optimize_graph`, `quantize_models`): the shipped graphs (from paddle2onnx)
keep every "learnable affine" scale and shift and every hard-swish as separate elementwise
ops, which ONNX Runtime does not fuse; a graph pass folds the affine ops into the adjacent
convolutions and writes each hard-swish as HardSigmoid x Mul. Static int8 (QDQ, per-channel
weights, calibrated on generated images of another seed) quantizes the convolutions and the
weight matmuls of both models.

Example:
    >>> eng = OcrEngine(OcrConfig(det_limit="max", det_side=640, rec_batch=8))
    >>> result = eng(image)          # boxes (N, 4, 2), texts, scores, timings
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ... import assets
from ..._files import atomic_path
from ...settings import cache_dir
from .data import OcrError, Sample, load_image

__all__ = [
    "DET_FILE",
    "REC_FILE",
    "VARIANTS",
    "fp16_graph",
    "gpu_status",
    "model_size_mb",
    "variant_configs",
    "OcrConfig",
    "OcrEngine",
    "OcrResult",
    "calibration_feeds",
    "crop_quad",
    "ctc_decode",
    "det_input",
    "model_paths",
    "optimize_graph",
    "pad_quad",
    "prefetch",
    "quantize_models",
    "rec_inputs",
]

DET_FILE = "ch_PP-OCRv4_det_infer.onnx"
REC_FILE = "ch_PP-OCRv4_rec_infer.onnx"
REC_HEIGHT, REC_MIN_WIDTH = 48, 320


def model_paths() -> tuple[Path, Path]:
    """(detection, recognition) ONNX files as shipped, checked by sha256."""
    folder = assets.path("ppocr-v4")
    assets.verify("ppocr-v4")
    return folder / DET_FILE, folder / REC_FILE


@dataclass
class OcrConfig:
    """How the pipeline runs.

    Args:
        det_model, rec_model (str | PathLike | None, default None): ONNX files; None: the
            shipped PP-OCRv4 models.
        det_side (int, default 736): detection resolution (pixels, rounded to 32).
        det_limit (str, default "min"): "min": resize so the short side is at least
            `det_side` (the package's default, upsampling small images); "max": so the long
            side is at most `det_side` (never upsampling). Either way the long side
            stays within 4000 px (`MAX_DET_SIDE`, PaddleOCR's limit).
        rec_batch (int, default 1): most crops per recognizer call; > 1 sorts them by width
            and batches crops of similar width (see `rec_inputs`).
        rec_tolerance (float, default 0.15): how much wider than the narrowest crop of a
            batch another crop may be.
        threads (int | None, default None): intra-op threads of both sessions; None with
            `default_session` lets ONNX Runtime choose (one per core), else 2.
        optimization (str, default "all"): ORT graph optimization level at load time.
        spinning (bool | str, default False): idle ORT threads busy-wait. True: ORT's own
            default (the shipped baseline's), which keeps spinning after each call, so the
            detector's threads spin on the cores the recognizer then needs and back;
            "in-call": spin only while a call runs (see `deploylab.export.session`), the
            fastest here; False: never, the gentlest beside a server.
        default_session (bool, default False): plain `ort.InferenceSession(path)` with all
            of ONNX Runtime's defaults (the baseline), instead of `deploylab.export.session`.
        providers (tuple[str, ...] | None, default None): execution providers (CUDA,
            TensorRT when present); None: CPU.
        det_thresh, box_thresh, unclip_ratio, text_score (float): DB and filter settings,
            the package's defaults (0.3, 0.5, 1.6, 0.5).
    """

    det_model: str | os.PathLike | None = None
    rec_model: str | os.PathLike | None = None
    det_side: int = 736
    det_limit: str = "min"
    rec_batch: int = 1
    rec_tolerance: float = 0.15
    threads: int | None = None
    optimization: str = "all"
    spinning: bool | str = False
    default_session: bool = False
    providers: tuple[str, ...] | None = None
    det_thresh: float = 0.3
    box_thresh: float = 0.5
    unclip_ratio: float = 1.6
    text_score: float = 0.5

    def __post_init__(self) -> None:
        if self.det_limit not in ("min", "max"):
            raise ValueError(f"det_limit must be 'min' or 'max', got {self.det_limit!r}")
        if not isinstance(self.det_side, int) or not 32 <= self.det_side <= 4096:
            raise ValueError(f"det_side must be an int in 32..4096, got {self.det_side!r}")
        if not isinstance(self.rec_batch, int) or self.rec_batch < 1:
            raise ValueError(f"rec_batch must be an int >= 1, got {self.rec_batch!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be None or an int >= 1, got {self.threads!r}")

    @classmethod
    def shipped(cls, **kw) -> OcrConfig:
        """Preset: the models and settings as the package ships them, one crop per call."""
        return cls(**{"default_session": True, **kw})

    @classmethod
    def fast(cls, det_side: int = 640, rec_batch: int = 8, **kw) -> OcrConfig:
        """Preset: native-resolution detection (long side <= 640), batched crops, 2 threads."""
        return cls(**{"det_side": det_side, "det_limit": "max", "rec_batch": rec_batch,
                      "threads": 2, **kw})


@dataclass
class OcrResult:
    """What the pipeline read in one image.

    Args:
        boxes (np.ndarray): (N, 4, 2) float32 corners, clockwise from the top left.
        texts (list[str]): one per box.
        scores (np.ndarray): (N,) float32 mean character confidence.
        timings (dict): det_ms, rec_ms, total_ms, crops.
    """

    boxes: np.ndarray
    texts: list[str]
    scores: np.ndarray
    timings: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- pieces


MAX_DET_SIDE = 4000  # PaddleOCR's max_side_limit: the detector's longest input side


def det_input(image_bgr: np.ndarray, side: int, limit: str) -> np.ndarray:
    """The detector's input (1, 3, H, W) float32 for a BGR image, sides multiples of 32,
    the longer at most MAX_DET_SIDE."""
    import cv2

    h, w = image_bgr.shape[:2]
    if limit == "max":
        ratio = min(1.0, side / max(h, w))
    else:
        ratio = max(1.0, side / min(h, w))
    # "min" upsamples a thin strip by its own thinness: 1 x 2000 px asked for 12 GiB
    ratio = min(ratio, MAX_DET_SIDE / max(h, w))
    rh = max(32, int(round(h * ratio / 32) * 32))
    rw = max(32, int(round(w * ratio / 32) * 32))
    x = cv2.resize(image_bgr, (rw, rh)).astype(np.float32)
    x = (x / 255.0 - 0.5) / 0.5
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def _order_clockwise(pts: np.ndarray) -> np.ndarray:
    xs = pts[np.argsort(pts[:, 0])]
    left, right = xs[:2][np.argsort(xs[:2, 1])], xs[2:][np.argsort(xs[2:, 1])]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def _sorted_boxes(boxes: list[np.ndarray]) -> list[np.ndarray]:
    """Top to bottom, then left to right within 10 px of height (PaddleOCR's order)."""
    out = sorted(boxes, key=lambda b: (b[0][1], b[0][0]))
    for i in range(len(out) - 1):
        for j in range(i, -1, -1):
            if abs(out[j + 1][0][1] - out[j][0][1]) < 10 and out[j + 1][0][0] < out[j][0][0]:
                out[j], out[j + 1] = out[j + 1], out[j]
            else:
                break
    return out


def crop_quad(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The quadrilateral cut out and warped to an upright rectangle (tall ones turned)."""
    import cv2

    q = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    w = int(max(np.linalg.norm(q[0] - q[1]), np.linalg.norm(q[2] - q[3])))
    h = int(max(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2])))
    w, h = max(w, 1), max(h, 1)
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(q, dst)
    out = cv2.warpPerspective(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_CUBIC)
    return np.rot90(out) if h / w >= 1.5 else out


def pad_quad(quad, frac: float = 0.3) -> np.ndarray:
    """A quadrilateral grown outwards by `frac` of its height on every side: true line boxes
    are tight (cap height to descender), the detector's are looser, and the recognizer reads
    a crop with some margin more reliably."""
    q = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    u, v = q[1] - q[0], q[3] - q[0]
    u, v = u / max(np.linalg.norm(u), 1e-6), v / max(np.linalg.norm(v), 1e-6)
    d = frac * float(np.linalg.norm(q[3] - q[0]))
    return np.array([q[0] - d * (u + v), q[1] + d * (u - v), q[2] + d * (u + v),
                     q[3] - d * (u - v)], dtype=np.float32)


def _resize_crop(crop: np.ndarray, width: int) -> np.ndarray:
    """(3, 48, width) float32: resized to height 48 keeping the aspect ratio, padded."""
    import cv2

    h, w = crop.shape[:2]
    rw = min(width, math.ceil(REC_HEIGHT * w / h))
    x = cv2.resize(crop, (max(1, rw), REC_HEIGHT)).astype(np.float32)
    x = (x.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, REC_HEIGHT, width), dtype=np.float32)
    out[:, :, :rw] = x
    return out


def rec_inputs(crops: Sequence[np.ndarray], batch: int, tolerance: float = 0.15
               ) -> list[tuple[list[int], np.ndarray]]:
    """Recognizer batches: [(crop indices, (B, 3, 48, W) float32)], W the widest crop of the
    batch at height 48 (at least 320, PaddleOCR's rule).

    With batch > 1 the crops are sorted by aspect ratio and a batch closes when it is full
    or when the next crop is more than `tolerance` wider than its narrowest member: padding
    a narrow crop to a wide batch costs compute and accuracy (the recognizer reads the grey
    padding as more text now and then)."""
    ratios = [c.shape[1] / max(c.shape[0], 1) for c in crops]
    widths = [max(REC_MIN_WIDTH, math.ceil(REC_HEIGHT * r)) for r in ratios]
    order = [int(i) for i in np.argsort(widths, kind="stable")] if batch > 1 else list(
        range(len(crops)))
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch and widths[i] <= widths[groups[-1][0]] * (
                1 + tolerance):
            groups[-1].append(i)
        else:
            groups.append([i])
    return [(idx, np.stack([_resize_crop(crops[i], max(widths[j] for j in idx))
                            for i in idx])) for idx in groups]


def ctc_decode(probs: np.ndarray, charset: Sequence[str]) -> list[tuple[str, float]]:
    """Greedy CTC decoding of (B, T, C) probabilities: argmax per step, repeats collapsed,
    blanks (class 0) dropped; the score is the mean probability of the kept steps."""
    idx, best = probs.argmax(axis=2), probs.max(axis=2)
    out = []
    for row, p in zip(idx, best, strict=True):
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        out.append(("".join(charset[i] for i in row[keep]),
                    float(p[keep].mean()) if keep.any() else 0.0))
    return out


@lru_cache(maxsize=4)
def _charset(path: str) -> tuple[str, ...]:
    """CTC classes: blank, the dictionary in the model's metadata, then space."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    if "character" not in meta:
        raise OcrError(f"{path} carries no character dictionary in its metadata; use a "
                       "PP-OCR model converted by rapidocr (or the shipped one)")
    return ("blank", *meta["character"].splitlines(), " ")


def _db_postprocess(config: OcrConfig):
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess

    return DBPostProcess(thresh=config.det_thresh, box_thresh=config.box_thresh,
                         max_candidates=1000, unclip_ratio=config.unclip_ratio,
                         score_mode="fast", use_dilation=True)


# ----------------------------------------------------------------------------- engine


def _make_session(path: Path, config: OcrConfig):
    import onnxruntime as ort

    from ... import export

    if config.default_session and config.providers is None and config.threads is None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return export.session(path, threads=config.threads or 2, optimization=config.optimization,
                          providers=list(config.providers) if config.providers else None,
                          spinning=config.spinning)


class OcrEngine:
    """Detection + recognition on ONNX Runtime sessions built from an `OcrConfig`.

    Args:
        config (OcrConfig, default OcrConfig()): models, resolution, batching, sessions.

    Example:
        >>> eng = OcrEngine(OcrConfig.fast())
        >>> eng("page.png").texts
    """

    def __init__(self, config: OcrConfig | None = None):
        self.config = config or OcrConfig()
        det, rec = model_paths()
        self.det_path = Path(self.config.det_model or det)
        self.rec_path = Path(self.config.rec_model or rec)
        self.det = _make_session(self.det_path, self.config)
        self.rec = _make_session(self.rec_path, self.config)
        self.charset = _charset(str(rec))  # the shipped file's dictionary
        self.post = _db_postprocess(self.config)

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Text boxes in an RGB image: (N, 4, 2) float32 corners and (N,) DB scores."""
        bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
        x = det_input(bgr, self.config.det_side, self.config.det_limit)
        prob = self.det.run(None, {"x": x})[0]
        boxes, scores = self.post(prob, bgr.shape[:2])
        h, w = bgr.shape[:2]
        kept, kept_scores = [], []
        for box, score in zip(boxes, scores, strict=True):
            q = _order_clockwise(np.asarray(box, dtype=np.float32))
            q[:, 0] = np.clip(q[:, 0], 0, w - 1)
            q[:, 1] = np.clip(q[:, 1], 0, h - 1)
            if np.linalg.norm(q[0] - q[1]) > 3 and np.linalg.norm(q[0] - q[3]) > 3:
                kept.append(q)
                kept_scores.append(score)
        if not kept:
            return np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
        order = {id(b): s for b, s in zip(kept, kept_scores, strict=True)}
        kept = _sorted_boxes(kept)
        return np.stack(kept), np.array([order[id(b)] for b in kept], np.float32)

    def recognize(self, crops: Sequence[np.ndarray], batch: int | None = None
                  ) -> list[tuple[str, float]]:
        """Text and confidence of each crop (RGB, any size), in the order given."""
        out: list = [("", 0.0)] * len(crops)
        for idx, x in rec_inputs([np.ascontiguousarray(c[:, :, ::-1]) for c in crops],
                                 batch or self.config.rec_batch, self.config.rec_tolerance):
            probs = self.rec.run(None, {"x": x})[0]
            for i, res in zip(idx, ctc_decode(probs, self.charset), strict=True):
                out[i] = res
        return out

    def __call__(self, image) -> OcrResult:
        """Read the text in one image (anything `load_image` accepts)."""
        img = load_image(image)  # the same checks for arrays as for bytes (cheap: no copy)
        t0 = time.perf_counter()
        boxes, _ = self.detect(img)
        t1 = time.perf_counter()
        rec = self.recognize([crop_quad(img, b) for b in boxes]) if len(boxes) else []
        t2 = time.perf_counter()
        keep = [i for i, (_, s) in enumerate(rec) if s >= self.config.text_score]
        return OcrResult(boxes[keep] if keep else np.zeros((0, 4, 2), np.float32),
                         [rec[i][0] for i in keep],
                         np.array([rec[i][1] for i in keep], np.float32),
                         {"det_ms": (t1 - t0) * 1e3, "rec_ms": (t2 - t1) * 1e3,
                          "total_ms": (t2 - t0) * 1e3, "crops": len(boxes)})


# ----------------------------------------------------------------------- graph pass


def _scalar(inits: dict, name: str) -> float | None:
    from onnx import numpy_helper

    if name not in inits:
        return None
    a = numpy_helper.to_array(inits[name])
    return float(a.reshape(-1)[0]) if a.size == 1 else None


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _affine_after(node, cons, inits):
    """(mul, add, scale, shift) when node's only consumer is Mul(scalar) whose only consumer
    is Add(scalar); else None."""
    nxt = cons.get(node.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type != "Mul":
        return None
    mul = nxt[0]
    other = [i for i in mul.input if i != node.output[0]]
    scale = _scalar(inits, other[0]) if len(other) == 1 else None
    after = cons.get(mul.output[0], [])
    if scale is None or len(after) != 1 or after[0].op_type != "Add":
        return None
    add = after[0]
    other = [i for i in add.input if i != mul.output[0]]
    shift = _scalar(inits, other[0]) if len(other) == 1 else None
    return None if shift is None else (mul, add, scale, shift)


def _fold_conv_affine(graph, inits) -> int:
    """Conv -> Mul(s) -> Add(b) becomes one Conv with weights s*W and bias s*bias + b."""
    from onnx import numpy_helper

    cons, folded, drop = _consumers(graph), 0, set()
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        found = _affine_after(conv, cons, inits)
        if found is None or len(conv.input) < 2 or conv.input[1] not in inits:
            continue
        mul, add, s, b = found
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float32)
        bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float32)
                if len(conv.input) > 2 and conv.input[2] in inits
                else np.zeros(w.shape[0], np.float32))
        wname, bname = conv.input[1] + "_affine", conv.name + "_affine_bias"
        graph.initializer.extend([numpy_helper.from_array(w * s, wname),
                                  numpy_helper.from_array(bias * s + b, bname)])
        del conv.input[1:]
        conv.input.extend([wname, bname])
        conv.output[0] = add.output[0]
        drop |= {id(mul), id(add)}
        folded += 1
    _remove(graph, drop)
    return folded


def _hardswish(graph, inits) -> int:
    """x -> Add(3) -> Clip(0, 6) -> Mul(x, .) -> Div(6) becomes Mul(x, HardSigmoid(x))."""
    from onnx import helper

    cons, fused, drop, new = _consumers(graph), 0, set(), []
    for add in [n for n in graph.node if n.op_type == "Add"]:
        x = next((i for i in add.input if _scalar(inits, i) is None), None)
        three = [i for i in add.input if i != x]
        if x is None or len(three) != 1 or _scalar(inits, three[0]) != 3.0:
            continue
        clip = cons.get(add.output[0], [])
        if len(clip) != 1 or clip[0].op_type != "Clip" or len(clip[0].input) < 3 or (
                _scalar(inits, clip[0].input[1]), _scalar(inits, clip[0].input[2])) != (0.0, 6.0):
            continue
        mul = cons.get(clip[0].output[0], [])
        if len(mul) != 1 or mul[0].op_type != "Mul" or set(mul[0].input) != {x, clip[0].output[0]}:
            continue
        div = cons.get(mul[0].output[0], [])
        if len(div) != 1 or div[0].op_type != "Div" or _scalar(inits, div[0].input[1]) != 6.0:
            continue
        gate = add.output[0] + "_hsig"
        new.append((add, [helper.make_node("HardSigmoid", [x], [gate], alpha=1 / 6, beta=0.5,
                                           name=add.name + "_hsig"),
                          helper.make_node("Mul", [x, gate], [div[0].output[0]],
                                           name=add.name + "_hswish")]))
        drop |= {id(add), id(clip[0]), id(mul[0]), id(div[0])}
        fused += 1
    _replace(graph, drop, new)
    return fused


def _remove(graph, drop: set) -> None:
    keep = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(keep)


def _replace(graph, drop: set, new: list) -> None:
    """Drop nodes; insert replacement nodes where their anchor node stood."""
    anchors = {id(a): nodes for a, nodes in new}
    out = []
    for n in graph.node:
        if id(n) in anchors:
            out.extend(anchors[id(n)])
        if id(n) not in drop:
            out.append(n)
    del graph.node[:]
    graph.node.extend(out)


def optimize_graph(src: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """The fused fp32 graph: ONNX Runtime's basic level saved to a file (constants folded,
    BatchNorm into Conv), then the two PP-OCR patterns ORT leaves alone folded by hand, and
    the opset raised to 13 (which per-channel quantization needs).

    Args:
        src (str | PathLike): a shipped PP-OCR ONNX file.
        dest (str | PathLike | None, default None): output; None caches it under
            `cache_dir("ocr", "models")`.

    Returns:
        Path: the optimized file (written atomically; reused when newer than `src`).
    """
    import onnx

    from ... import export

    src = Path(src)
    out = Path(dest) if dest else cache_dir("ocr", "models") / f"{src.stem}.fused.onnx"
    if out.is_file() and out.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        return out
    with atomic_path(out) as tmp:
        export.optimize_onnx(src, level="basic", out=tmp)
        model = onnx.load(str(tmp))
        inits = {i.name: i for i in model.graph.initializer}
        folds = _fold_conv_affine(model.graph, inits)
        swish = _hardswish(model.graph, inits)
        used = {i for n in model.graph.node for i in n.input}
        keep = [i for i in model.graph.initializer if i.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        meta = {p.key: p.value for p in model.metadata_props}
        meta.update({"deploylab_folded_affine": str(folds), "deploylab_hardswish": str(swish)})
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, meta)
        if model.opset_import[0].version < 13:  # per-channel Q/DQ (axis) needs opset 13
            from onnx import version_converter

            model = version_converter.convert_version(model, 13)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return out


# ---------------------------------------------------------------------- quantization


def calibration_feeds(samples: Sequence[Sample], config: OcrConfig, *,
                      max_crops: int = 48) -> tuple[list[dict], list[dict]]:
    """Calibration inputs from generated images (use another seed than the evaluation's):
    detector inputs at the config's resolution, and the true line crops as recognizer
    inputs one crop per feed (their natural widths).

    Returns:
        tuple[list[dict], list[dict]]: (detector feeds, recognizer feeds), `{"x": array}`.
    """
    det, rec = [], []
    for s in samples:
        bgr = np.ascontiguousarray(s.image[:, :, ::-1])
        det.append({"x": det_input(bgr, config.det_side, config.det_limit)})
        for line in s.lines:
            if len(rec) < max_crops:
                crop = crop_quad(bgr, pad_quad(line.quad))
                rec.append({"x": rec_inputs([crop], 1)[0][1]})
    if not det or not rec:
        raise OcrError("no calibration images (or no text lines in them)")
    return det, rec


def quantize_models(det_fp32: str | os.PathLike, rec_fp32: str | os.PathLike,
                    calibration: tuple[list[dict], list[dict]], *,
                    which: Sequence[str] = ("det", "rec")) -> dict[str, Path]:
    """Static int8 (QDQ, per-channel weights, uint8 activations, MinMax ranges) of the
    detector and/or recognizer, through `deploylab.quantize`.

    Only Conv and MatMul nodes with weights are quantized (the rest stays float between
    Q/DQ pairs); the attention products of the recognizer's SVTR blocks (activation x
    activation) and its final classifier over 6625 characters stay float: their ranges vary
    per line and the classifier's logits decide every character.

    Args:
        det_fp32, rec_fp32 (str | PathLike): the float graphs (ideally `optimize_graph`'s).
        calibration (tuple[list[dict], list[dict]]): from `calibration_feeds`.
        which (Sequence[str], default ("det", "rec")): the models to quantize.

    Returns:
        dict[str, Path]: "det" and/or "rec" -> int8 file (cached by calibration digest).
    """
    from ... import quantize as q

    out = {}
    folder = cache_dir("ocr", "models")
    for name, src, feeds in (("det", det_fp32, calibration[0]), ("rec", rec_fp32,
                                                                   calibration[1])):
        if name not in which:
            continue
        exclude = tuple(q.activation_matmuls(src)) + (_last_matmul(src) if name == "rec"
                                                       else ())
        import hashlib

        digest = hashlib.sha256()
        for f in feeds:
            digest.update(np.ascontiguousarray(f["x"][..., :8]).tobytes())
            digest.update(str(f["x"].shape).encode())
        path = folder / f"{Path(src).stem}.int8-{digest.hexdigest()[:10]}.onnx"
        cfg = q.StaticInt8Config(calibration=feeds, op_types=("Conv", "MatMul"),
                                 exclude=exclude, max_samples=len(feeds), path=path)
        out[name] = q.quantize(src, cfg).path
    return out


def _last_matmul(path) -> tuple[str, ...]:
    import onnx

    nodes = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node
             if n.op_type in ("MatMul", "Gemm")]
    return tuple(nodes[-1:])


# -------------------------------------------------------------------------- variants

VARIANTS = ("fp32", "fp32-optimized", "int8", "int8-batched")


def variant_configs(calibration_samples: Sequence[Sample], *, det_side: int = 736,
                    det_limit: str = "min", rec_batch: int = 4,
                    quantize: Sequence[str] = ("det", "rec"), threads: int = 2,
                    spinning: bool | str = "in-call") -> dict[str, OcrConfig]:
    """The four pipelines the case study compares, as configs.

    - `fp32`: the shipped models in a default `ort.InferenceSession`, one crop per call;
    - `fp32-optimized`: the fused graphs (`optimize_graph`), explicit threads whose idle
      workers spin only while a call runs (`spinning`, see `OcrConfig`: ORT's default
      spins on after each call, so the detector's threads and the recognizer's take each
      other's cores; False never spins, for cores shared with other work);
    - `int8`: static int8 of the models named in `quantize` (calibrated on
      `calibration_samples`), the others fused fp32;
    - `int8-batched`: the same, crops batched by width (`rec_batch`).

    Every variant detects at the same resolution (`det_side`, `det_limit`), so they differ
    only in what their names say.

    Returns:
        dict[str, OcrConfig]: in the order of `VARIANTS`.
    """
    det, rec = model_paths()
    fdet, frec = optimize_graph(det), optimize_graph(rec)
    res = {"det_side": det_side, "det_limit": det_limit}
    q = {}
    if quantize:
        feeds = calibration_feeds(calibration_samples, OcrConfig(**res))
        q = quantize_models(fdet, frec, feeds, which=tuple(quantize))
    int8 = {"det_model": q.get("det", fdet), "rec_model": q.get("rec", frec)}
    own = {"threads": threads, "spinning": spinning, **res}
    return {"fp32": OcrConfig.shipped(**res),
            "fp32-optimized": OcrConfig(det_model=fdet, rec_model=frec, **own),
            "int8": OcrConfig(**int8, **own),
            "int8-batched": OcrConfig(rec_batch=rec_batch, **int8, **own)}


def model_size_mb(config: OcrConfig) -> float:
    """Megabytes on disk of a config's two model files."""
    det, rec = model_paths()
    return sum(Path(p or d).stat().st_size for p, d in ((config.det_model, det),
                                                        (config.rec_model, rec))) / 1e6


def gpu_status() -> dict[str, str]:
    """Whether CUDA / TensorRT (and so fp16) can run here: provider -> "ready" or why not."""
    from ... import export

    rows = {r["name"]: r for r in export.providers()}
    return {name: rows.get(name, {"note": "not in this onnxruntime build"})["note"]
            if not rows.get(name, {}).get("available") else "ready"
            for name in ("CUDAExecutionProvider", "TensorrtExecutionProvider")}


def fp16_graph(src: str | os.PathLike) -> Path:
    """The float graph with weights and activations in float16 (for the CUDA/TensorRT
    providers; CPUs without native fp16 run it slower than fp32). Inputs and outputs stay
    float32 so the pipeline does not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = Path(src)
    out = cache_dir("ocr", "models") / f"{src.stem}.fp16.onnx"
    if not (out.is_file() and out.stat().st_mtime_ns >= src.stat().st_mtime_ns):
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        with atomic_path(out) as tmp:
            onnx.save(model, str(tmp))
    return out


def prefetch() -> list[Path]:
    """Warm the cache the notebook and the benchmark use: the benchmark images (40 at medium,
    16 at every strength, 16 calibration images of seed 1), the fused graphs and the int8
    models calibrated as `deploylab bench ocr` and the notebook's defaults calibrate them.

    Returns:
        list[Path]: the model files.
    """
    from .data import STRENGTHS, make_benchmark

    make_benchmark(40, seed=0, strength="medium")
    for level in STRENGTHS:
        make_benchmark(16, seed=0, strength=level)
    configs = variant_configs(make_benchmark(16, seed=1, strength="medium"))
    return sorted({Path(p) for c in configs.values() for p in (c.det_model, c.rec_model) if p})
