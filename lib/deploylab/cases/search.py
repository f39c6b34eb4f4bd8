"""Semantic search over the Python documentation: the NLP case study's pipeline.

A query ("parse a json string", or `json.loads(s)`) is tokenized, embedded by a sentence
encoder, and looked up in an index of the standard library's docstrings. Each stage has its
deployment knob, and every combination is measured the same way:

    corpus()           every documented public object of the stdlib, stable ids
    labelled_queries() held-out queries with known answers (derived from real text);
    handwritten_queries()  a small set written for this project (data/search_queries.jsonl)
    build_encoder()    torch fp32, ONNX Runtime int8, a distilled student, ...
    make_index()       exact fp32, int8 codes, binary codes with float rescoring, HNSW (faiss)
    SearchEngine       encoder + index + corpus: search(), evaluate(), save() for serving
    SearchPipeline     a saved engine behind `deploylab.serve` (text in, ids and scores out)

Example:
    >>> from deploylab.cases import search
    >>> docs = search.corpus()
    >>> enc = search.build_encoder("int8")
    >>> engine = search.SearchEngine(enc, search.make_index("exact"), docs)
    >>> engine.search("read a csv file")[0].id
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeploylabError
from ..serve.pipeline import Pipeline
from ..serve.protocol import InferRequest, ProtocolError, TensorSpec

__all__ = ["ENCODERS", "INDEXES", "MAX_QUERY_CHARS", "Corpus", "Encoder", "Hit", "QuerySet",
           "SearchEngine", "SearchError", "SearchPipeline", "build_encoder", "check_query",
           "corpus", "handwritten_queries", "labelled_queries", "make_index", "rank_metrics"]

MODEL = "all-MiniLM-L6-v2"
MAX_QUERY_CHARS = 1000  # a search box takes a phrase or a signature, not a document
ENCODERS = ("fp32", "int8", "student-fp32", "student-int8")
INDEXES = ("exact", "int8", "binary", "hnsw")
STUDENT_LAYERS = (3, 4, 5)  # the teacher's top layers keep the most (chapter 05)
STUDENT_STEPS = 100  # the kit's shared student (chapter 05, bench distill, prefetch)
TUNE_STEPS = 100  # then contrastive steps on the train split's (query, docstring) pairs


class SearchError(DeploylabError):
    """A query, corpus, encoder or index that cannot be used as asked."""


# ----------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Corpus:
    """The searchable documents: `texts[i]` documents the object `ids[i]`."""

    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def key(self) -> str:
        """A digest of ids and texts: cached embeddings are reused only for this corpus."""
        h = hashlib.sha256()
        for i, t in zip(self.ids, self.texts, strict=True):
            h.update(f"{i}\0{t}\0".encode())
        return h.hexdigest()[:16]


def corpus(size: int | None = None, *, keep: Iterable[str] = (), seed: int = 0) -> Corpus:
    """Docstrings of the whole standard library (modules, classes, functions, methods).

    Deduplicated by text and sorted by id (`assets.stdlib_docstrings`), so the same Python
    gives the same corpus on every machine.

    Args:
        size (int | None, default None): None keeps everything (about 6,200 documents on
            Python 3.11); a number keeps a seeded sample of that many, always including the
            ids in `keep` (the answers of the queries you will score).
        keep (Iterable[str], default ()): ids that must stay in a sampled corpus.
        seed (int, default 0): sampling seed.

    Returns:
        Corpus
    """
    from .. import assets

    records = assets.stdlib_docstrings()
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SearchError(f"corpus size must be a positive int or None, got {size!r}")
        keep = set(keep)
        must = [r for r in records if r["id"] in keep]
        if len(must) > size:
            raise SearchError(f"corpus size {size} cannot hold the {len(must)} answers of "
                              "the queries; ask for a larger corpus or fewer queries")
        others = [r for r in records if r["id"] not in keep]
        extra = random.Random(seed).sample(others, min(len(others), size - len(must)))
        records = sorted(must + extra, key=lambda r: r["id"])
    return Corpus([r["id"] for r in records], [r["doc"] for r in records])


# ---------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class QuerySet:
    """Queries and, for each, the ids that count as a right answer."""

    queries: list[str]
    answers: list[tuple[str, ...]]
    kind: str

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def answer_ids(self) -> set[str]:
        return {a for ans in self.answers for a in ans}


_LEADS = {  # a first sentence's verb -> what a searcher types instead
    "return": "get", "returns": "get", "get": "get", "create": "make", "creates": "make",
    "construct": "make", "constructs": "make", "build": "make", "convert": "turn",
    "converts": "turn", "compute": "calculate", "computes": "calculate", "remove": "delete",
    "removes": "delete", "test": "check", "tests": "check", "check": "check",
    "determine": "find out", "set": "change", "sets": "change", "read": "load",
    "reads": "load", "write": "save", "writes": "save"}
_STOP = {"a", "an", "the", "this", "that", "of", "specified", "given", "current", "object",
         "instance", "to", "it", "its", "is", "be"}


def _first_sentence(doc: str) -> str:
    para = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s", para, maxsplit=1)[0]


def paraphrase(sentence: str) -> str:
    """What a searcher would type for a docstring's first sentence: lower case, the
    leading verb replaced ("Return" -> "get"), markup, articles and filler words dropped.

    >>> paraphrase("Return the number of items in the deque.")
    'get number items in deque'
    """
    words = re.sub(r"[`*'\"():,.;!?]", " ", sentence).lower().split()
    if words and words[0] in _LEADS:
        words[0] = _LEADS[words[0]]
    return " ".join(w for i, w in enumerate(words) if i == 0 or w not in _STOP)


def labelled_queries(n: int | None = 300, *, kind: str = "signature", split: str = "test",
                     seed: int = 0) -> QuerySet:
    """Queries derived from real text, with their answer known, on a held-out split.

    The split is `tasks.split_of` (a hash of each id): the student encoder is distilled on
    the train split only, so test queries were never seen in training.

    Args:
        n (int | None, default 300): queries (seeded sample); None takes all.
        kind (str, default "signature"): "signature" (qualified name and arguments, what a
            programmer types: `json.dumps(obj, *, skipkeys=False, ...)`) or "description"
            (the docstring's first sentence paraphrased by rule: "get number items in
            deque"; the answer still holds the original sentence, so this kind is easier).
        split (str, default "test"): "test" (held out) or "train".
        seed (int, default 0): sampling seed.

    Returns:
        QuerySet: one answer id per query.
    """
    from .. import assets
    from ..tasks import SPLITS, _query, split_of

    if kind not in ("signature", "description"):
        raise SearchError(f"kind must be 'signature' or 'description', got {kind!r}")
    if split not in SPLITS:
        raise SearchError(f"split must be one of {SPLITS}, got {split!r}")
    recs = [r for r in assets.stdlib_docstrings()
            if r["kind"] != "module" and split_of(r["id"]) == split]
    pairs = []
    for r in recs:
        q = _query(r) if kind == "signature" else paraphrase(_first_sentence(r["doc"]))
        if len(q.split()) >= (1 if kind == "signature" else 3):
            pairs.append((q, r["id"]))
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SearchError(f"n must be a positive int or None, got {n!r}")
        pairs = sorted(random.Random(seed).sample(pairs, min(n, len(pairs))),
                       key=lambda p: p[1])
    return QuerySet([q for q, _ in pairs], [(a,) for _, a in pairs], kind)


def handwritten_queries(path: str | os.PathLike | None = None) -> QuerySet:
    """The hand-written query set (data/search_queries.jsonl): natural questions a Python
    programmer asks, each with the ids of the docstrings that answer it.

    Args:
        path (str | PathLike | None, default None): another JSONL file of
            {"query": str, "answers": [id, ...]} lines; None is the project's own.

    Returns:
        QuerySet
    """
    from ..settings import project_root

    file = Path(path) if path is not None else project_root() / "data" / "search_queries.jsonl"
    if not file.is_file():
        raise SearchError(f"{file} does not exist; it ships in the repository's data/ folder "
                          "(run from a checkout of deploylab, or pass path=)")
    queries, answers = [], []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q, a = row["query"], row["answers"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SearchError(f"{file}:{n}: expected {{\"query\": ..., \"answers\": [...]}}, "
                              f"got {line[:60]!r} ({e})") from None
        if not isinstance(q, str) or not a or not all(isinstance(x, str) for x in a):
            raise SearchError(f"{file}:{n}: query must be text and answers a non-empty list "
                              "of ids")
        queries.append(q)
        answers.append(tuple(a))
    return QuerySet(queries, answers, "handwritten")


# ---------------------------------------------------------------------------- metrics


def rank_metrics(ranked: Sequence[Sequence[str]], answers: Sequence[Sequence[str]],
                 ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k and MRR@10 of ranked result lists.

    Args:
        ranked (Sequence[Sequence[str]]): for each query, result ids best first.
        answers (Sequence[Sequence[str]]): for each query, the ids that count as right.
        ks (Sequence[int], default (1, 5, 10)): recall cut-offs.

    Returns:
        dict: "recall@k" (fraction of queries with a right id in the top k) and "mrr@10"
        (mean of 1/rank of the first right id, 0 when it is not in the top 10).
    """
    if len(ranked) != len(answers) or not ranked:
        raise SearchError(f"need one answer list per query and at least one query; got "
                          f"{len(ranked)} result lists and {len(answers)} answer lists")
    ranks = []
    for res, ans in zip(ranked, answers, strict=True):
        ans = set(ans)
        ranks.append(next((i + 1 for i, r in enumerate(res) if r in ans), None))
    out = {f"recall@{k}": sum(r is not None and r <= k for r in ranks) / len(ranks)
           for k in ks}
    out["mrr@10"] = sum(1 / r for r in ranks if r is not None and r <= 10) / len(ranks)
    return out


# --------------------------------------------------------------------------- encoders


def check_query(query) -> str:
    """The query, stripped, or a SearchError saying what is wrong with it."""
    if not isinstance(query, str):
        raise SearchError(f"a query must be text (str), got {type(query).__name__}; "
                          "decode bytes first")
    text = query.strip()
    if not text:
        raise SearchError("the query is empty: type a few words or a function signature")
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(f"a query of {len(text):,} characters is over the limit of "
                          f"{MAX_QUERY_CHARS:,}: search with a phrase, not a document")
    return text


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
            from .. import export

            self.session = export.session(self.onnx, threads=threads)
            self._names = {i.name for i in self.session.get_inputs()}

    @property
    def backend(self) -> str:
        return "onnxruntime" if self.session is not None else "torch"

    @property
    def key(self) -> str:
        """Identity of the weights and settings (cache key of document embeddings)."""
        from ..assets import sha256_file
        from ..export import _weights_digest

        digest = sha256_file(self.onnx) if self.onnx else _weights_digest(self.model)
        return hashlib.sha256(f"{digest}|{self.max_length}".encode()).hexdigest()[:16]

    def size_bytes(self) -> int:
        """The encoder's weights on disk (ONNX file) or in memory (torch parameters)."""
        from .. import measure

        return measure.size_on_disk(self.onnx) if self.onnx else measure.param_bytes(self.model)

    def _feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        ids = [e.ids for e in self._fast.encode_batch(texts)]
        width = max(len(i) for i in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for r, row in enumerate(ids):
            input_ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "token_type_ids": np.zeros_like(input_ids)}

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
    from .. import export
    from .. import quantize as q
    from ..export import _weights_digest

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
            preset = (q.DynamicInt8Config.avx512_vnni if q.has_vnni()
                      else q.DynamicInt8Config.avx2)
            built = q.quantize(fused, preset(path=Path(tmp) / "int8.onnx")).path
        shutil.move(built, target)  # same file system: the finished file appears at once
    return target


def _student(teacher_pair, smoke: bool, steps: int | None, tune_steps: int):
    """The kit's distilled student, then (tune_steps > 0) tuned to search on the train
    split's (query, docstring) pairs with in-batch negatives; cached as safetensors."""
    from .. import _compress_fit as fit
    from .. import distill
    from ..export import _weights_digest
    from ..prune import encoder_training_data
    from ..settings import cache_dir

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
    from .. import assets
    from ..settings import cache_dir

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
        from ..serve import zoo

        return Encoder(kind, tok, max_length=max_length, onnx=zoo.minilm_onnx("int8"),
                       threads=threads)
    if base.endswith("int8") or onnx:
        path = _onnx_int8(net, cache_dir("search", "onnx"), tag,
                          "none" if onnx else "dynamic-int8")
        return Encoder(kind, tok, max_length=max_length, onnx=path, threads=threads)
    return Encoder(kind, tok, max_length=max_length, model=net, threads=threads)


def embed_corpus(encoder: Encoder, docs: Corpus, *, progress: bool = False) -> np.ndarray:
    """The corpus's document vectors under `encoder`, cached by encoder and corpus."""
    from ..settings import cache_dir

    file = cache_dir("search", "embeddings") / f"{encoder.key}-{docs.key}.npy"
    if file.is_file():
        return np.load(file)
    # longest first: batches of similar length pad less (same vectors, faster)
    order = sorted(range(len(docs)), key=lambda i: -len(docs.texts[i]))
    vecs = encoder.encode([docs.texts[i] for i in order], progress=progress)
    vectors = np.empty_like(vecs)
    vectors[order] = vecs
    tmp = file.with_name(f".{file.name}.tmp{os.getpid()}")
    try:  # a reader never sees a half-written cache file
        with open(tmp, "wb") as f:
            np.save(f, vectors)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
    return vectors


# ---------------------------------------------------------------------------- indexes


class ExactIndex:
    """Every document vector in float32; a query is one matrix-vector product."""

    kind = "exact"

    def __init__(self, **_):
        self.vectors = np.zeros((0, 0), np.float32)

    def add(self, vectors: np.ndarray) -> ExactIndex:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, dim)
        return self

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _top_k(queries @ self.vectors.T, k)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors}


class Int8Index:
    """Vectors as int8 codes with one scale per dimension (4x smaller than float32); the
    float query is scaled instead of the documents being decoded."""

    kind = "int8"

    def __init__(self, **_):
        self.codes, self.scale = np.zeros((0, 0), np.int8), np.ones(0, np.float32)

    def add(self, vectors: np.ndarray) -> Int8Index:
        v = np.asarray(vectors, np.float32)
        self.scale = (np.abs(v).max(axis=0) / 127.0).clip(1e-12).astype(np.float32)  # (dim,)
        self.codes = np.clip(np.rint(v / self.scale), -127, 127).astype(np.int8)
        return self

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, np.float32) * self.scale  # (m, dim)
        scores = np.empty((len(q), len(self.codes)), np.float32)
        for a in range(0, len(self.codes), 8192):  # decode in blocks: memory stays small
            scores[:, a:a + 8192] = q @ self.codes[a:a + 8192].astype(np.float32).T
        return _top_k(scores, k)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self.codes, "scale": self.scale}


class BinaryIndex:
    """One bit per dimension (32x smaller than float32): candidates by Hamming distance to
    the query's bits, then rescored with the float query against their +-1 codes.

    Before taking signs, vectors are centred on the corpus mean and turned by a random
    rotation (regenerated from its seed, so it costs no storage): each bit then splits the
    documents about evenly and carries a similar share of the information; on MiniLM this
    keeps about 6% more recall@10 than signs of the raw vectors.

    Args:
        rescore (int, default 10): candidates kept per result (k=10 rescores 100).
        rotate (bool, default True): centre and rotate before binarizing.
        seed (int, default 0): seed of the rotation.
    """

    kind = "binary"

    def __init__(self, rescore: int = 10, rotate: bool = True, seed: int = 0, **_):
        if not isinstance(rescore, int) or rescore < 1:
            raise SearchError(f"rescore must be an int >= 1, got {rescore!r}")
        self.rescore, self.rotate, self.seed = rescore, bool(rotate), int(seed)
        self.bits, self.mean, self.dim = np.zeros((0, 0), np.uint8), np.zeros(0, np.float32), 0
        self._rot = None

    def _turn(self, v: np.ndarray) -> np.ndarray:
        if not self.rotate:
            return v
        if self._rot is None or len(self._rot) != self.dim:  # made once, from the seed
            rng = np.random.default_rng(self.seed)
            q = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))[0]
            self._rot = q.astype(np.float32)
        return (v - self.mean) @ self._rot  # (n, dim): centred, then rotated

    def add(self, vectors: np.ndarray) -> BinaryIndex:
        v = np.asarray(vectors, np.float32)
        self.dim = v.shape[1]
        self.mean = v.mean(axis=0) if self.rotate else np.zeros(self.dim, np.float32)
        self.bits = np.packbits(self._turn(v) > 0, axis=1)  # (N, dim / 8)
        return self

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes + (self.mean.nbytes if self.rotate else 0)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._turn(np.asarray(queries, np.float32))
        qbits = np.packbits(q > 0, axis=1)  # (m, dim / 8)
        pool = min(len(self.bits), k * self.rescore)
        scores, idx = [], []
        for row, bits in zip(q, qbits, strict=True):
            hamming = np.bitwise_count(self.bits ^ bits).sum(axis=1, dtype=np.int32)
            cand = np.argpartition(hamming, pool - 1)[:pool] if pool < len(hamming) else \
                np.arange(len(hamming))
            signs = np.unpackbits(self.bits[cand], axis=1, count=self.dim).astype(np.float32)
            s = (signs * 2 - 1) @ row  # float query . +-1 codes (asymmetric rescoring)
            best = np.argsort(-s)[:k]
            scores.append(s[best])
            idx.append(cand[best])
        return np.stack(scores), np.stack(idx)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"bits": self.bits, "mean": self.mean, "dim": np.array(self.dim)}


class HnswIndex:
    """An approximate nearest-neighbour graph (faiss IndexHNSWFlat, inner product): queries
    visit a few hundred vectors instead of all, which matters from ~100,000 documents on.

    Args:
        m (int, default 32): graph neighbours per node (more: better recall, more memory).
        ef_search (int, default 64): candidates explored per query (more: better recall,
            slower).
    """

    kind = "hnsw"

    def __init__(self, m: int = 32, ef_search: int = 64, **_):
        self.m, self.ef_search, self.index = m, ef_search, None

    def add(self, vectors: np.ndarray) -> HnswIndex:
        import faiss

        v = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = faiss.IndexHNSWFlat(v.shape[1], self.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 80
        self.index.add(v)
        self.index.hnsw.efSearch = self.ef_search
        return self

    @property
    def nbytes(self) -> int:
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def arrays(self) -> dict[str, np.ndarray]:
        import faiss

        return {"faiss": faiss.serialize_index(self.index)}


INDEX_TYPES = {c.kind: c for c in (ExactIndex, Int8Index, BinaryIndex, HnswIndex)}


def make_index(kind: str = "exact", **options):
    """An empty index of one kind ("exact", "int8", "binary", "hnsw"); call `.add(vectors)`.

    Args:
        kind (str, default "exact"): see INDEXES.
        **options: BinaryIndex(rescore=10), HnswIndex(m=32, ef_search=64).
    """
    if kind not in INDEX_TYPES:
        raise SearchError(f"unknown index {kind!r}; choose from {', '.join(INDEXES)}")
    return INDEX_TYPES[kind](**options)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


# ----------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    text: str


class SearchEngine:
    """Encoder + index over a corpus.

    Args:
        encoder (Encoder): embeds queries (and the corpus, unless `vectors` is given).
        index: from `make_index`; filled here with the corpus's vectors.
        docs (Corpus): what is searched.
        vectors (np.ndarray | None, default None): precomputed document vectors.
        progress (bool, default False): a progress bar while the corpus is embedded.
    """

    def __init__(self, encoder: Encoder, index, docs: Corpus, *,
                 vectors: np.ndarray | None = None, progress: bool = False):
        if not len(docs):
            raise SearchError("the corpus is empty: nothing to search")
        self.encoder, self.docs = encoder, docs
        self.vectors = embed_corpus(encoder, docs, progress=progress) if vectors is None \
            else vectors
        self.index = index.add(self.vectors)
        self.name = f"{encoder.name} + {index.kind}"
        self._where = {i: n for n, i in enumerate(docs.ids)}

    def search_batch(self, queries: Sequence[str], k: int = 10
                     ) -> tuple[list[list[str]], np.ndarray]:
        """Ranked ids (best first) and their scores for several queries at once."""
        if isinstance(queries, str):
            raise SearchError("search_batch() takes a list of queries; use search() for one")
        if not isinstance(k, int) or k < 1:
            raise SearchError(f"k must be an int >= 1, got {k!r}")
        texts = [check_query(q) for q in queries]
        scores, idx = self.index.search(self.encoder.encode(texts), k)
        return [[self.docs.ids[i] for i in row if i >= 0] for row in idx], scores

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The top `k` documents for one query, best first."""
        ids, scores = self.search_batch([query], k)
        return [Hit(i, float(s), self.docs.texts[self._where[i]])
                for i, s in zip(ids[0], scores[0], strict=False)]

    def evaluate(self, queries: QuerySet, *, batch_size: int = 64) -> dict:
        """recall@1/5/10 and MRR@10 on a labelled query set."""
        ranked: list[list[str]] = []
        for a in range(0, len(queries), batch_size):
            ranked += self.search_batch(queries.queries[a:a + batch_size], 10)[0]
        return rank_metrics(ranked, queries.answers)

    def query_call(self, queries: Sequence[str], k: int = 10):
        """A zero-argument callable answering the next query of `queries` (cycling): one
        end-to-end search per call (tokenize, embed, look up), for `measure.compare`."""
        texts, state = [check_query(q) for q in queries], {"i": 0}

        def call():
            q = texts[state["i"] % len(texts)]
            state["i"] += 1
            return self.index.search(self.encoder.encode([q]), k)

        return call

    def save(self, folder: str | os.PathLike) -> Path:
        """Write what serving needs (ONNX encoder, tokenizer, index, ids) to `folder`,
        atomically: the folder appears complete or not at all."""
        if self.encoder.onnx is None:
            raise SearchError("only ONNX Runtime encoders can be saved for serving; build "
                              "one with build_encoder('int8') or 'student-int8'")
        out = Path(folder)
        if out.exists():
            raise SearchError(f"{out} already exists; remove it or choose another folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            shutil.copyfile(self.encoder.onnx, tmp / "encoder.onnx")
            self.encoder.tokenizer.save_pretrained(tmp / "tokenizer")
            np.savez(tmp / "index.npz", **self.index.arrays())
            meta = {"index": self.index.kind, "max_length": self.encoder.max_length,
                    "encoder": self.encoder.name, "ids": self.docs.ids,
                    "options": _index_options(self.index)}
            (tmp / "engine.json").write_text(json.dumps(meta))
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out


def _index_options(index) -> dict:
    if index.kind == "binary":
        return {"rescore": index.rescore, "rotate": index.rotate, "seed": index.seed}
    if index.kind == "hnsw":
        return {"m": index.m, "ef_search": index.ef_search}
    return {}


def load_index(kind: str, arrays, options: dict):
    """Rebuild a saved index from `SearchEngine.save`'s arrays."""
    index = make_index(kind, **options)
    if kind == "exact":
        index.vectors = arrays["vectors"]
    elif kind == "int8":
        index.codes, index.scale = arrays["codes"], arrays["scale"]
    elif kind == "binary":
        index.bits, index.mean, index.dim = arrays["bits"], arrays["mean"], int(arrays["dim"])
    else:
        import faiss

        index.index = faiss.deserialize_index(arrays["faiss"])
        index.index.hnsw.efSearch = index.ef_search
    return index


# ---------------------------------------------------------------------------- serving


class SearchPipeline(Pipeline):
    """A saved engine (`SearchEngine.save`) behind `deploylab.serve`: BYTES queries in, the
    top-k document ids and scores out; the queries of a dynamic batch are embedded together.

    Args:
        folder (str | PathLike): the saved engine.
        k (int, default 10): results per query.
    """

    inputs = (TensorSpec("query", "BYTES", (-1,)),)

    def __init__(self, folder: str | os.PathLike, k: int = 10):
        self.folder, self.k = Path(folder).resolve(), int(k)
        if not (self.folder / "engine.json").is_file():
            raise SearchError(f"{self.folder} is not a saved search engine (no engine.json); "
                              "make one with SearchEngine.save(folder)")
        self.outputs = (TensorSpec("ids", "BYTES", (-1, self.k)),
                        TensorSpec("scores", "FP32", (-1, self.k)))
        self.max_text_chars = MAX_QUERY_CHARS

    def load(self, threads: int | None = None) -> None:
        from transformers import AutoTokenizer

        meta = json.loads((self.folder / "engine.json").read_text())
        self.ids = meta["ids"]
        tok = AutoTokenizer.from_pretrained(self.folder / "tokenizer")
        self.encoder = Encoder(meta["encoder"], tok, max_length=meta["max_length"],
                               onnx=self.folder / "encoder.onnx", threads=threads or 1)
        with np.load(self.folder / "index.npz") as arrays:
            self.index = load_index(meta["index"], dict(arrays), meta["options"])

    def prepare(self, req: InferRequest) -> list[str]:
        try:
            return [check_query(q) for q in req.inputs["query"].reshape(-1).tolist()]
        except SearchError as e:
            raise ProtocolError(str(e), 400, "bad_query") from None

    def run(self, items: list) -> list[dict[str, np.ndarray]]:
        texts = [q for item in items for q in item]
        scores, idx = self.index.search(self.encoder.encode(texts), self.k)
        ids = np.array([[self.ids[i] if i >= 0 else "" for i in row] for row in idx],
                       dtype=object)
        out, a = [], 0
        for item in items:
            out.append({"ids": ids[a:a + len(item)],
                        "scores": scores[a:a + len(item)].astype(np.float32)})
            a += len(item)
        return out
