"""The search case study's data: the corpus, labelled and hand-written queries, and the
ranking metrics (recall@k, MRR@10)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import DeploylabError

__all__ = ["MAX_QUERY_CHARS", "Corpus", "QuerySet", "SearchError", "check_query", "corpus",
           "handwritten_queries", "labelled_queries", "paraphrase", "rank_metrics"]

MAX_QUERY_CHARS = 1000  # a search box takes a phrase or a signature, not a document


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
    from ... import assets

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
    from ... import assets
    from ...tasks import SPLITS, _query, split_of

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
    from ...settings import project_root

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
