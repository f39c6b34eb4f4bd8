"""Labelled tasks built from real text every Python ships: the standard library's docstrings.

Compression and fine-tuning are judged by task quality, not only by fidelity to the
original model, so the kit needs labels. It makes them from the docstring corpus
(`assets.stdlib_docstrings()`), deterministically and offline:

- `docstring_retrieval`: given a function's qualified name and signature
  ("json.dumps(obj, *, skipkeys=False, ...)"), find its docstring among all the docstrings
  of the split. Metrics: recall@k and MRR (`retrieval_metrics`, `evaluate_retrieval`).
- `docstring_topics`: which package a docstring documents (asyncio, email, logging, ...):
  a balanced text classification task with a train and a test split.

Records go to the train or the test split by a hash of their id, so every task agrees on
the split: train on "train", evaluate on "test", and nothing leaks.

Example:
    >>> from deploylab import tasks
    >>> task = tasks.docstring_retrieval(n_queries=200)
    >>> task.queries[0], task.documents[task.answers[0]][:40]
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DeploylabError

__all__ = ["ClassificationTask", "RetrievalTask", "TaskError", "docstring_retrieval",
           "docstring_topics", "evaluate_retrieval", "retrieval_metrics", "split_of"]

SPLITS = ("train", "test")
_DOC_CHARS = 600  # a docstring's first paragraphs carry its meaning; 128 tokens hold ~600 chars


class TaskError(DeploylabError):
    """A task was asked for with impossible settings."""


@dataclass(frozen=True)
class RetrievalTask:
    """Queries, a pool of documents, and for each query the index of its document.

    Attributes:
        queries (list[str]): "module.name(signature)" texts.
        documents (list[str]): every docstring of the split (the candidates).
        answers (list[int]): `documents[answers[i]]` documents `queries[i]`.
        ids (list[str]): the documents' qualified names.
    """

    queries: list[str]
    documents: list[str]
    answers: list[int]
    ids: list[str]


@dataclass(frozen=True)
class ClassificationTask:
    """Texts with integer labels; `classes[label]` names the label."""

    texts: list[str]
    labels: list[int]
    classes: list[str]


def split_of(record_id: str, test_fraction: float = 0.2) -> str:
    """'train' or 'test', fixed by a hash of the id (the same on every machine)."""
    h = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def _records(split: str) -> list[dict]:
    from .assets import stdlib_docstrings

    if split not in SPLITS:
        raise TaskError(f"split must be one of {SPLITS}, got {split!r}")
    return [r for r in stdlib_docstrings() if split_of(r["id"]) == split]


def _query(rec: dict) -> str:
    """The name a programmer would type: qualified name plus the arguments, no `self`."""
    sig = rec["signature"]
    args = sig[len(rec["name"]):] if sig.startswith(rec["name"] + "(") else ""
    args = args.replace("(self, ", "(").replace("(self)", "()").replace("(cls, ", "(")
    return rec["id"] + args


def docstring_retrieval(n_queries: int | None = 500, *, split: str = "test",
                        seed: int = 0) -> RetrievalTask:
    """Name-and-signature -> docstring retrieval over one split of the stdlib corpus.

    Args:
        n_queries (int | None, default 500): queries sampled (seeded) from the split's
            functions, methods and classes; None takes them all.
        split (str, default "test"): "train" or "test"; the documents are the whole split.
        seed (int, default 0): sampling seed.

    Returns:
        RetrievalTask: about 1,200 documents in the test split on Python 3.11.
    """
    if n_queries is not None and (not isinstance(n_queries, int) or n_queries < 1):
        raise TaskError(f"n_queries must be a positive int or None, got {n_queries!r}")
    recs = _records(split)
    documents = [r["doc"][:_DOC_CHARS] for r in recs]
    candidates = [i for i, r in enumerate(recs) if r["kind"] != "module"]
    if n_queries is not None:
        if n_queries > len(candidates):
            raise TaskError(f"the {split} split has {len(candidates)} possible queries; "
                            f"ask for at most that many (or None for all)")
        candidates = sorted(random.Random(seed).sample(candidates, n_queries))
    return RetrievalTask([_query(recs[i]) for i in candidates], documents, candidates,
                         [r["id"] for r in recs])


def docstring_topics(n_classes: int = 8, *, split: str = "train", per_class: int | None = None,
                     seed: int = 0) -> ClassificationTask:
    """Which top-level package a docstring belongs to, over the most documented packages.

    The classes are chosen on the whole corpus (so train and test agree on them); each class
    is capped at `per_class` texts (seeded sample) to keep the task balanced.

    Args:
        n_classes (int, default 8): how many packages (2 to 20).
        split (str, default "train"): "train" or "test".
        per_class (int | None, default None): cap per class; None keeps the smallest class's
            count, so the split is exactly balanced.
        seed (int, default 0): sampling and shuffling seed.

    Returns:
        ClassificationTask: texts shuffled (seeded), labels 0..n_classes-1.
    """
    from .assets import stdlib_docstrings

    if not isinstance(n_classes, int) or not 2 <= n_classes <= 20:
        raise TaskError(f"n_classes must be an int from 2 to 20, got {n_classes!r}")
    counts = Counter(r["module"].split(".")[0] for r in stdlib_docstrings())
    classes = sorted(name for name, _ in counts.most_common(n_classes))
    by_class = defaultdict(list)
    for r in _records(split):
        top = r["module"].split(".")[0]
        if top in classes:
            by_class[top].append(r["doc"][:_DOC_CHARS])
    cap = per_class or min(len(v) for v in by_class.values())
    rng = random.Random(seed)
    pairs = [(text, label) for label, name in enumerate(classes)
             for text in rng.sample(by_class[name], min(cap, len(by_class[name])))]
    rng.shuffle(pairs)
    return ClassificationTask([t for t, _ in pairs], [y for _, y in pairs], classes)


def retrieval_metrics(query_vectors: np.ndarray, doc_vectors: np.ndarray,
                      answers: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k and mean reciprocal rank of dot-product retrieval.

    Args:
        query_vectors (np.ndarray): (queries, dim), unit vectors for cosine similarity.
        doc_vectors (np.ndarray): (documents, dim).
        answers (Sequence[int]): the right document's index for each query.
        ks (Sequence[int], default (1, 5, 10)): cut-offs for recall.

    Returns:
        dict: {"recall@1": ..., "recall@5": ..., "recall@10": ..., "mrr": ...}, fractions.
    """
    q, d = np.asarray(query_vectors, np.float32), np.asarray(doc_vectors, np.float32)
    answers = np.asarray(answers)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1] or len(answers) != len(q):
        raise TaskError(f"need (queries, dim) and (documents, dim) arrays and one answer per "
                        f"query; got {q.shape}, {d.shape}, {len(answers)} answers")
    scores = q @ d.T  # (queries, documents)
    right = scores[np.arange(len(q)), answers][:, None]
    rank = (scores > right).sum(axis=1) + 1  # 1 = the right document came first
    out = {f"recall@{k}": float((rank <= k).mean()) for k in ks}
    out["mrr"] = float((1.0 / rank).mean())
    return out


def evaluate_retrieval(encode: Callable[[list[str]], np.ndarray], task: RetrievalTask,
                       ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Embed the task's queries and documents with `encode` and score the retrieval.

    Args:
        encode (Callable[[list[str]], np.ndarray]): texts -> (n, dim) unit vectors; any
            backend (torch, ONNX Runtime, a pruned or distilled model).
        task (RetrievalTask): from `docstring_retrieval`.
        ks (Sequence[int], default (1, 5, 10)): recall cut-offs.

    Returns:
        dict: as `retrieval_metrics`.
    """
    return retrieval_metrics(encode(task.queries), encode(task.documents), task.answers, ks)
