"""The search engine (encoder + index + corpus), its saved form, and the pipeline that serves
it through `deploylab.serve`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...serve.pipeline import Pipeline
from ...serve.protocol import InferRequest, ProtocolError, TensorSpec
from .data import MAX_QUERY_CHARS, Corpus, QuerySet, SearchError, check_query, corpus, rank_metrics
from .encoders import MODEL, TUNE_STEPS, Encoder, build_encoder, embed_corpus
from .indexes import _index_options, load_index

__all__ = ["Hit", "SearchEngine", "SearchPipeline", "blas_threads", "prefetch"]


def blas_threads(n: int | None = 1) -> None:
    """Set numpy's BLAS (OpenBLAS) to `n` threads for the whole process (threadpoolctl).

    An index lookup is one small matrix product per query: one thread does it in a fraction
    of a millisecond. More threads do not help it, and they hurt everything else: OpenBLAS's
    idle workers busy-wait for a long while after each call, so on a 2-core machine they take
    the cores from the encoder's next call (torch's stalled 3x, with a p90 of 5x, when
    interleaved with lookups here). None leaves the setting alone.
    """
    if n is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(n), user_api="blas")


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
        blas (int | None, default 1): numpy's BLAS threads, set for the process
            (`blas_threads`: why one is right for lookups); None leaves them alone.
    """

    def __init__(self, encoder: Encoder, index, docs: Corpus, *,
                 vectors: np.ndarray | None = None, progress: bool = False,
                 blas: int | None = 1):
        if not len(docs):
            raise SearchError("the corpus is empty: nothing to search")
        blas_threads(blas)
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


def prefetch() -> list[Path]:
    """Build what the case study and `deploylab bench search` load: every encoder (the
    distilled and the tuned student included) and the corpus's vectors under each.

    Returns:
        list[Path]: the cached embedding files.
    """
    from ... import assets
    from ...settings import cache_dir

    teacher, docs = assets.load_encoder(MODEL), corpus()
    kinds = [("fp32", TUNE_STEPS), ("int8", TUNE_STEPS), ("student-fp32", TUNE_STEPS),
             ("student-int8", TUNE_STEPS), ("student-int8", 0)]
    files = []
    for kind, tune in kinds:
        enc = build_encoder(kind, teacher=teacher, tune_steps=tune)
        embed_corpus(enc, docs, progress=True)
        files.append(cache_dir("search", "embeddings") / f"{enc.key}-{docs.key}.npy")
    return files


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

        blas_threads(1)  # see blas_threads(): a replica's lookups need one
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
