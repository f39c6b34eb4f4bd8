"""Semantic search over the Python documentation: the NLP case study's pipeline.

Modules: `data` (corpus, queries, metrics), `encoders`, `indexes`, `engine` (SearchEngine,
saving, SearchPipeline for serving), `tradeoffs` (pipelines measured side by side, the
recommendation for a latency budget, index scaling).

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


from .data import (
                   MAX_QUERY_CHARS,
                   Corpus,
                   QuerySet,
                   SearchError,
                   check_query,
                   corpus,
                   handwritten_queries,
                   labelled_queries,
                   paraphrase,
                   rank_metrics,
)
from .encoders import (
                   ENCODERS,
                   MODEL,
                   STUDENT_LAYERS,
                   STUDENT_STEPS,
                   TUNE_STEPS,
                   Encoder,
                   build_encoder,
                   embed_corpus,
)
from .engine import Hit, SearchEngine, SearchPipeline, blas_threads, prefetch
from .indexes import INDEXES, BinaryIndex, ExactIndex, HnswIndex, Int8Index, load_index, make_index

__all__ = ["ENCODERS", "INDEXES", "MAX_QUERY_CHARS", "MODEL", "STUDENT_LAYERS", "STUDENT_STEPS",
           "TUNE_STEPS", "BinaryIndex", "Corpus", "Encoder", "ExactIndex", "Hit", "HnswIndex",
           "Int8Index", "QuerySet", "SearchEngine", "SearchError", "SearchPipeline",
           "blas_threads", "build_encoder", "check_query", "corpus", "embed_corpus",
           "handwritten_queries", "labelled_queries", "load_index", "make_index", "paraphrase",
           "prefetch", "rank_metrics"]
