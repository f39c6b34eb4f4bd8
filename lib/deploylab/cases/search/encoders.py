"""Encoders of the search case study: texts -> unit vectors over torch or ONNX Runtime, the
teacher, its int8 export, the distilled and task-tuned student, and cached corpus vectors."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import Corpus, SearchError

__all__ = ["ENCODERS", "MODEL", "Encoder", "build_encoder", "embed_corpus"]

MODEL = "all-MiniLM-L6-v2"
ENCODERS = ("fp32", "int8", "student-fp32", "student-int8")
STUDENT_LAYERS = (3, 4, 5)  # the teacher's top layers keep the most (chapter 05)
STUDENT_STEPS = 100  # the kit's shared student (chapter 05, bench distill, prefetch)
TUNE_STEPS = 100  # then contrastive steps on the train split's (query, docstring) pairs


class Encoder:
    """Texts -> unit vectors, with the fast (Rust) tokenizer shared by every backend, so
    speed differences come from the model, not from tokenization.

    Args:
        name (str): label in tables.
        tokenizer: a transformers tokenizer (its Rust backend is used).
        max_length (int, default 128): tokens kept per text (longer ones are truncated).
        model: a torch encoder (returns `last_hidden_state`), or None with `onnx`.
        onnx (str | PathLike | None): an ONNX encoder whose first output is the last hidden
            state.
        threads (int, default 2): intra-op threads.
    """

    def __init__(self, name: str, tokenizer, *, max_length: int = 128, model=None,
                 onnx: str | os.PathLike | None = None, threads: int = 2):
        if (model is None) == (onnx is None):
            raise SearchError("an Encoder needs exactly one of model= (torch) or onnx= (path)")
        if not isinstance(max_length, int) or not 2 <= max_length <= 512:
            raise SearchError(f"max_length must be an int from 2 to 512, got {max_length!r}")
        self.name, self.tokenizer, self.max_length = name, tokenizer, max_length
        self.threads = threads
        self.model, self.onnx, self.session = model, None if onnx is None else Path(onnx), None
        self._fast = tokenizer.backend_tokenizer.__class__.from_str(
            tokenizer.backend_tokenizer.to_str())
        self._fast.no_padding()
        self._fast.enable_truncation(max_length)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        if self.onnx is not None:
            from ... import export

            self.session = export.session(self.onnx, threads=threads)
            self._names = {i.name for i in self.session.get_inputs()}

    @property
    def backend(self) -> str:
        return "onnxruntime" if self.session is not None else "torch"

    @property
    def key(self) -> str:
        """Identity of the weights and settings (cache key of document embeddings)."""
        from ...assets import sha256_file
        from ...export import _weights_digest

        digest = sha256_file(self.onnx) if self.onnx else _weights_digest(self.model)
        return hashlib.sha256(f"{digest}|{self.max_length}".encode()).hexdigest()[:16]

    def size_bytes(self) -> int:
        """The encoder's weights on disk (ONNX file) or in memory (torch parameters)."""
        from ... import measure

        return measure.size_on_disk(self.onnx) if self.onnx else measure.param_bytes(self.model)

    def _feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        from ...serve.models import padded_feeds

        return padded_feeds([e.ids for e in self._fast.encode_batch(texts)], self.pad_id)

    def _hidden(self, feeds: dict) -> np.ndarray:
        if self.session is not None:
            return self.session.run(None, {k: v for k, v in feeds.items() if k in self._names})[0]
        import torch

        torch.set_num_threads(self.threads)  # process-wide pool: set per call for fairness
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return out.last_hidden_state.float().numpy()

    def encode(self, texts: Sequence[str], *, batch_size: int = 32,
               progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors: mean over real tokens, L2-normalized."""
        if isinstance(texts, str):
            raise SearchError("encode() takes a list of texts; wrap a single one in a list")
        texts = list(texts)
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"embedding ({self.name})", unit="batch")
        chunks = []
        for i in starts:
            feeds = self._feeds(texts[i:i + batch_size])
            hidden = self._hidden(feeds)  # (B, T, dim)
            m = feeds["attention_mask"][..., None].astype(np.float32)
            v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            chunks.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
        if not chunks:
            raise SearchError("nothing to encode: the list of texts is empty")
        return np.concatenate(chunks).astype(np.float32)


def _onnx_int8(model, folder: Path, tag: str, quantization: str) -> Path:
    """Export (parity-gated), fuse, quantize; cached by the weights' digest."""
    from ... import export
    from ... import quantize as q
    from ...export import _weights_digest

    target = folder / f"{tag}-{_weights_digest(model)[:12]}-{quantization}.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        raw = export.export_onnx(model, export.ExportConfig(path=Path(tmp) / "raw.onnx"))
        fused = export.optimize_onnx(raw, num_heads=model.config.num_attention_heads,
                                     hidden_size=model.config.hidden_size,
                                     out=Path(tmp) / "fused.onnx")
        if quantization == "none":
            built = fused
        else:
            config = q.DynamicInt8Config.for_this_cpu(path=Path(tmp) / "int8.onnx")
            built = q.quantize(fused, config).path
        shutil.move(built, target)  # same file system: the finished file appears at once
    return target


def _student(teacher_pair, smoke: bool, steps: int | None, tune_steps: int):
    """The kit's distilled student, then (tune_steps > 0) tuned to search on the train
    split's (query, docstring) pairs with in-batch negatives; cached as safetensors."""
    from ... import _compress_fit as fit
    from ... import distill
    from ...export import _weights_digest
    from ...prune import encoder_training_data
    from ...settings import cache_dir

    config = (distill.EncoderDistillConfig.quick() if smoke else
              distill.EncoderDistillConfig(steps=steps or STUDENT_STEPS))
    tok, student, _, info = distill.minilm_student(STUDENT_LAYERS, config, teacher=teacher_pair)
    if not tune_steps:
        return student.eval(), info
    tune_steps = min(tune_steps, 4) if smoke else tune_steps
    key = hashlib.sha256(f"{_weights_digest(student)}|{tune_steps}|v1".encode()).hexdigest()
    folder = cache_dir("search", "students") / f"tuned-{key[:16]}"
    if (folder / "training.json").is_file():
        tuned, meta = distill.load_checkpoint(folder)
        return tuned, {**info, "tuning": meta}
    _, pairs = encoder_training_data()
    history = fit.fit_encoder(student, tok, steps=tune_steps, batch_size=32, lr=5e-5,
                              max_length=64, pairs=pairs, progress=not smoke,
                              desc="tuning on train pairs")
    distill.save_checkpoint(student, folder, history=history, extra={"pairs": len(pairs)})
    return student.eval(), {**info, "tuning": {"history": history}}


def build_encoder(kind: str = "fp32", *, model: str | os.PathLike = MODEL,
                  max_length: int = 128, threads: int = 2, smoke: bool = False,
                  student_steps: int | None = None, tune_steps: int = TUNE_STEPS,
                  teacher=None) -> Encoder:
    """One of the case study's encoders, built once and cached under `cache_dir("search")`.

    Args:
        kind (str, default "fp32"): "fp32" (the model in torch: the baseline), "int8"
            (ONNX Runtime, fused, dynamic int8 with this CPU's preset), "student-fp32" (a
            3-layer student distilled from the model on the train split; torch),
            "student-int8" (that student in ONNX Runtime int8); the student is then tuned
            to search on the train split's labelled pairs (`tune_steps`), or
            "<encoder>-onnx" for the same graph in float ("fp32-onnx", "student-fp32-onnx").
        model (str | PathLike, default "all-MiniLM-L6-v2"): the teacher: a registered name,
            a local folder, or a hub id when online (`assets.load_encoder`).
        max_length (int, default 128): tokens per text.
        threads (int, default 2): intra-op threads of torch and ONNX Runtime.
        smoke (bool, default False): a 4-step student, for runs in seconds.
        student_steps (int | None, default None): distillation steps; None is 100, the
            student chapter 05 and `deploylab prefetch` train (cached once for all).
        tune_steps (int, default 100): contrastive steps on the train split's (query,
            docstring) pairs after distillation (0: the distilled student as it is). Test
            queries are never seen; the baseline is the model as shipped, untuned.
        teacher (tuple | None, default None): an already loaded (tokenizer, model) pair.

    Returns:
        Encoder
    """
    from ... import assets
    from ...settings import cache_dir

    onnx = kind.endswith("-onnx")
    base = kind.removesuffix("-onnx")
    if base not in ENCODERS or (onnx and base.endswith("int8")):
        raise SearchError(f"unknown encoder {kind!r}; choose from {', '.join(ENCODERS)} "
                          "(or fp32-onnx, student-fp32-onnx)")
    tok, teacher_model = teacher or assets.load_encoder(model)
    net = teacher_model
    if base.startswith("student"):
        net, _ = _student((tok, teacher_model), smoke, student_steps, tune_steps)
    tag = f"student{tune_steps}" if base.startswith("student") else "model"
    if base == "int8" and str(model) == MODEL:  # the serving chapters' file: built once
        from ...serve import zoo

        return Encoder(kind, tok, max_length=max_length, onnx=zoo.minilm_onnx("int8"),
                       threads=threads)
    if base.endswith("int8") or onnx:
        path = _onnx_int8(net, cache_dir("search", "onnx"), tag,
                          "none" if onnx else "dynamic-int8")
        return Encoder(kind, tok, max_length=max_length, onnx=path, threads=threads)
    return Encoder(kind, tok, max_length=max_length, model=net, threads=threads)


def embed_corpus(encoder: Encoder, docs: Corpus, *, progress: bool = False) -> np.ndarray:
    """The corpus's document vectors under `encoder`, cached by encoder and corpus."""
    from ..._files import atomic_path
    from ...settings import cache_dir

    file = cache_dir("search", "embeddings") / f"{encoder.key}-{docs.key}.npy"
    if file.is_file():
        return np.load(file)
    # longest first: batches of similar length pad less (same vectors, faster)
    order = sorted(range(len(docs)), key=lambda i: -len(docs.texts[i]))
    vecs = encoder.encode([docs.texts[i] for i in order], progress=progress)
    vectors = np.empty_like(vecs)
    vectors[order] = vecs
    with atomic_path(file) as tmp:  # a reader never sees a half-written cache file
        np.save(tmp, vectors)
    return vectors
