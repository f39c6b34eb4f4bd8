"""Judging a compressed sentence encoder by task quality: the stdlib name->docstring
retrieval task (full, or a small seeded subset for smoke runs and curves), encoders over
torch and ONNX Runtime, batch-1 inputs of an exact length, and target bookkeeping.
The pruning and distillation chapters and their benchmark suites share these.

Example:
    >>> from deploylab.cases import retrieval_eval as rev
    >>> task = rev.retrieval_task(n_queries=100, n_docs=400)
    >>> rev.quality(rev.torch_encoder(model, tokenizer), task)["value"]   # MRR
"""

from __future__ import annotations

import random

import numpy as np

from .. import measure, tasks

__all__ = ["SEQ", "THREADS", "batch1", "fidelity", "ort_encoder", "quality", "retrieval_task",
           "target", "torch_encoder"]

N_QUERIES = 300  # test-split queries of the retrieval task (the documents: the whole split)
SEQ = 128  # tokens per timed input, and the truncation of evaluated texts
THREADS = 2


def retrieval_task(smoke: bool = False, *, n_queries: int = N_QUERIES,
                   n_docs: int | None = None) -> tasks.RetrievalTask:
    """The stdlib name->docstring retrieval task on the test split.

    Args:
        smoke (bool, default False): 16 queries over 64 documents, for runs in seconds.
        n_queries (int, default 300): queries (seeded sample).
        n_docs (int | None, default None): None keeps every document of the split (~1,200)
            as candidates; a number keeps the queries' answers plus seeded distractors up to
            that many (an easier, cheaper task for curves; compare only like with like).

    Returns:
        tasks.RetrievalTask
    """
    if smoke:
        n_queries, n_docs = 16, 64
    full = tasks.docstring_retrieval(n_queries, split="test")
    if n_docs is None or n_docs >= len(full.documents):
        return full
    answers = set(full.answers)
    others = [i for i in range(len(full.documents)) if i not in answers]
    extra = random.Random(0).sample(others, max(0, n_docs - len(answers)))
    docs = sorted(answers | set(extra))
    where = {d: k for k, d in enumerate(docs)}
    return tasks.RetrievalTask(full.queries, [full.documents[d] for d in docs],
                               [where[a] for a in full.answers], [full.ids[d] for d in docs])


def torch_encoder(model, tokenizer):
    """texts -> (n, dim) unit vectors with a torch encoder."""
    from ..cases.sentence_encoder import encode

    return lambda texts: encode(model, tokenizer, texts, batch_size=32, max_length=SEQ)


def ort_encoder(sess, tokenizer, batch_size: int = 32):
    """texts -> (n, dim) unit vectors with an ONNX Runtime session of an encoder whose first
    output is the last hidden state (mean-pooled over real tokens, L2-normalized)."""
    names = [i.name for i in sess.get_inputs()]

    def encode(texts):
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                              max_length=SEQ, return_tensors="np")
            feeds = {n: batch[n].astype(np.int64) if n in batch
                     else np.zeros_like(batch["input_ids"], dtype=np.int64) for n in names}
            hidden = sess.run(None, feeds)[0]  # (B, T, dim)
            mask = batch["attention_mask"][..., None].astype(np.float32)
            v = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        return np.concatenate(out).astype(np.float32)

    return encode


def quality(encode, task) -> dict:
    """{"metric": "mrr", "value": MRR, "recall@1": ..., ...} on the retrieval task."""
    m = tasks.evaluate_retrieval(encode, task)
    return {"metric": "mrr", "value": m["mrr"], **{k: v for k, v in m.items() if k != "mrr"},
            "task": "stdlib name->docstring retrieval, test split",
            "queries": len(task.queries), "documents": len(task.documents)}


def batch1(tokenizer, seq: int = SEQ, fmt: str = "pt") -> dict:
    """One real docstring padded/truncated to exactly `seq` tokens: every call does the same
    work."""
    text = " ".join(tasks.docstring_retrieval(1, split="test").documents[:40])
    return dict(tokenizer([text], padding="max_length", truncation=True, max_length=seq,
                          return_tensors=fmt))


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    f = measure.fidelity(reference, candidate)
    return {"cosine_to_baseline_min": f["cosine_min"], "cosine_to_baseline_mean": f["cosine_mean"]}


def target(variant: str, **checks) -> dict:
    """One target: checks are name -> (measured, bound, "min"|"max"); met when all hold."""
    rows = {k: {"value": v, "bound": b, "kind": kind,
                "met": v is not None and (v >= b if kind == "min" else v <= b)}
            for k, (v, b, kind) in checks.items()}
    return {"variant": variant, "checks": rows, "met": all(r["met"] for r in rows.values())}
