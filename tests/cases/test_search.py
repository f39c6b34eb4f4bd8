"""The NLP search case study's library: corpus, labelled queries, metrics, indexes, engine,
saving and serving (tiny models; the real encoder only where marked slow)."""

import json

import numpy as np
import pytest

from deploylab import tasks
from deploylab.cases import search
from deploylab.serve import ModelSpec, ProtocolError
from deploylab.serve.protocol import parse_request


def test_corpus_is_deterministic_and_unique():
    a, b = search.corpus(), search.corpus()
    assert a.ids == b.ids and len(a) == len(b) > 5000
    assert len(set(a.ids)) == len(a) and len(set(a.texts)) == len(a)
    assert a.key == b.key
    assert {"json", "os", "collections", "builtins"} <= {i.split(".")[0] for i in a.ids}


def test_sampled_corpus_keeps_the_answers():
    keep = ["json.loads", "shutil.rmtree"]
    small = search.corpus(50, keep=keep, seed=3)
    assert len(small) == 50 and set(keep) <= set(small.ids)
    assert small.ids == search.corpus(50, keep=keep, seed=3).ids
    assert small.ids != search.corpus(50, keep=keep, seed=4).ids
    with pytest.raises(search.SearchError, match="cannot hold"):
        search.corpus(1, keep=keep)
    with pytest.raises(search.SearchError, match="positive int"):
        search.corpus(0)


@pytest.mark.parametrize("kind", ["signature", "description"])
def test_labelled_queries_have_no_leakage_between_splits(kind):
    test = search.labelled_queries(None, kind=kind, split="test")
    train = search.labelled_queries(None, kind=kind, split="train")
    assert len(test) > 500 and len(train) > 2000
    assert not test.answer_ids & train.answer_ids
    assert all(tasks.split_of(a) == "test" for a in test.answer_ids)
    assert set(test.queries).isdisjoint(train.queries) or kind == "description"
    assert search.labelled_queries(100, kind=kind).queries == \
        search.labelled_queries(100, kind=kind).queries


def test_signature_queries_name_the_function():
    qs = search.labelled_queries(None)
    i = next(n for n, a in enumerate(qs.answers) if a[0].startswith("json.") and
             "(" in qs.queries[n])
    assert qs.queries[i].startswith(qs.answers[i][0] + "(")


def test_paraphrase_rules():
    assert search.paraphrase("Return the number of items in the deque.") == \
        "get number items in deque"
    assert search.paraphrase("Create a new ``Foo`` object.") == "make new foo"


def test_handwritten_queries_answer_with_real_ids(tmp_path):
    hand = search.handwritten_queries()
    assert len(hand) >= 50
    assert hand.answer_ids <= set(search.corpus().ids)
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"query": "x"}\n')
    with pytest.raises(search.SearchError, match=r"q\.jsonl:1"):
        search.handwritten_queries(bad)
    with pytest.raises(search.SearchError, match="does not exist"):
        search.handwritten_queries(tmp_path / "missing.jsonl")


def test_rank_metrics_match_hand_computed_values():
    ranked = [["a", "b", "c"], ["x", "y", "z"], ["q"] * 9 + ["r"], ["m", "n"]]
    answers = [("a",), ("z", "y"), ("r",), ("nothing",)]
    m = search.rank_metrics(ranked, answers, ks=(1, 2, 10))
    # ranks: 1, 2 (first right answer), 10, none
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@2"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 0) / 4)
    with pytest.raises(search.SearchError, match="one answer list per query"):
        search.rank_metrics([["a"]], [])


@pytest.mark.parametrize("query, message", [
    ("", "empty"), ("   \n", "empty"), ("x" * (search.MAX_QUERY_CHARS + 1), "over the limit"),
    (42, "must be text"), (b"bytes", "must be text"), (None, "must be text")])
def test_bad_queries_get_clear_errors(query, message):
    with pytest.raises(search.SearchError, match=message):
        search.check_query(query)


def _unit(n, dim=64, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", search.INDEXES)
def test_every_index_finds_a_document_from_its_own_vector(kind):
    docs = _unit(500)
    index = search.make_index(kind).add(docs)
    queries = docs[:20] + 0.05 * _unit(20, seed=1)  # near-duplicates of documents 0..19
    scores, idx = index.search(queries, 10)
    assert idx.shape == scores.shape == (20, 10)
    assert (idx[:, 0] == np.arange(20)).mean() >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores come best first"


def test_index_sizes():
    docs = _unit(1000, dim=384)
    exact = search.make_index("exact").add(docs).nbytes
    assert exact == 1000 * 384 * 4
    assert search.make_index("int8").add(docs).nbytes == 1000 * 384 + 384 * 4
    assert search.make_index("binary").add(docs).nbytes == 1000 * 48 + 384 * 4
    assert search.make_index("binary", rotate=False).add(docs).nbytes * 32 == exact
    with pytest.raises(search.SearchError, match="unknown index"):
        search.make_index("ivf")
    with pytest.raises(search.SearchError, match="rescore"):
        search.make_index("binary", rescore=0)


def _structured(n, dim=128, rank=16, seed=0):
    """Unit vectors near a low-rank subspace, like real sentence embeddings (random ones
    have no neighbours worth the name: every top-10 is a near tie)."""
    r = np.random.default_rng(seed)
    v = r.standard_normal((n, rank)) @ r.standard_normal((rank, dim))
    v = (v + 0.5 * r.standard_normal((n, dim))).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_quantized_indexes_agree_with_exact_search():
    vectors = _structured(2050)
    docs, queries = vectors[:2000], vectors[2000:]
    truth = search.make_index("exact").add(docs).search(queries, 10)[1]
    for kind, least in (("int8", 0.95), ("binary", 0.55), ("hnsw", 0.95)):
        got = search.make_index(kind).add(docs).search(queries, 10)[1]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got, strict=True)])
        assert overlap >= least, (kind, overlap)


# ------------------------------------------------------------ engine on a tiny encoder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-layer random BERT behind MiniLM's tokenizer, in torch and as ONNX."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from deploylab import assets, export

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, vocab_size=30522)).eval()
    tok = AutoTokenizer.from_pretrained(assets.resolve_model("all-MiniLM-L6-v2"))
    onnx = export.export_onnx(model, export.ExportConfig(
        path=tmp_path_factory.mktemp("onnx") / "tiny.onnx"))
    docs = search.corpus(120, keep=["json.loads", "os.makedirs"])
    return model, tok, onnx, docs


def test_torch_and_onnx_encoders_agree(tiny):
    model, tok, onnx, docs = tiny
    a = search.Encoder("t", tok, model=model, max_length=32).encode(docs.texts[:10])
    b = search.Encoder("o", tok, onnx=onnx, max_length=32).encode(docs.texts[:10])
    assert a.shape == (10, 32) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(a, b, atol=1e-4)
    with pytest.raises(search.SearchError, match="exactly one"):
        search.Encoder("x", tok)
    with pytest.raises(search.SearchError, match="list of texts"):
        search.Encoder("t", tok, model=model).encode("one string")


def test_engine_searches_evaluates_and_refuses_bad_queries(tiny):
    model, tok, _, docs = tiny
    engine = search.SearchEngine(search.Encoder("t", tok, model=model, max_length=32),
                                 search.make_index("exact"), docs)
    hits = engine.search(docs.texts[5][:300], k=3)
    assert hits[0].id == docs.ids[5] and len(hits) == 3
    assert hits[0].score >= hits[1].score >= hits[2].score
    qs = search.QuerySet([docs.texts[i][:300] for i in range(8)],
                         [(docs.ids[i],) for i in range(8)], "self")
    m = engine.evaluate(qs)
    assert m["recall@10"] == 1.0 and set(m) == {"recall@1", "recall@5", "recall@10", "mrr@10"}
    for bad in ("", 7, "y" * 5000):
        with pytest.raises(search.SearchError):
            engine.search(bad)
    with pytest.raises(search.SearchError, match="k must be"):
        engine.search("json", k=0)


def test_saved_engine_serves_the_same_results(tiny, tmp_path):
    _, tok, onnx, docs = tiny
    engine = search.SearchEngine(search.Encoder("o", tok, onnx=onnx, max_length=32),
                                 search.make_index("binary"), docs)
    folder = engine.save(tmp_path / "engine")
    assert {p.name for p in folder.iterdir()} == {"encoder.onnx", "tokenizer", "index.npz",
                                                 "engine.json"}
    with pytest.raises(search.SearchError, match="already exists"):
        engine.save(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no half-written"
    runner = ModelSpec("search", "1", search.SearchPipeline(folder, k=5)).build(threads=1)
    body = json.dumps({"inputs": [{"name": "query", "datatype": "BYTES", "shape": [2],
                                   "data": [docs.texts[3][:300], "open a file"]}]})
    out = runner.run([runner.prepare(parse_request(body, runner.inputs, runner.outputs))])[0]
    ids, _ = engine.search_batch([docs.texts[3][:300], "open a file"], 5)
    assert out["ids"].tolist() == ids and out["scores"].shape == (2, 5)
    bad = json.dumps({"inputs": [{"name": "query", "datatype": "BYTES", "shape": [1],
                                  "data": ["   "]}]})
    with pytest.raises(ProtocolError, match="empty"):
        runner.prepare(parse_request(bad, runner.inputs, runner.outputs))


def test_only_onnx_engines_can_be_saved(tiny, tmp_path):
    model, tok, _, docs = tiny
    engine = search.SearchEngine(search.Encoder("t", tok, model=model, max_length=32),
                                 search.make_index("exact"), docs)
    with pytest.raises(search.SearchError, match="only ONNX Runtime encoders"):
        engine.save(tmp_path / "x")
    with pytest.raises(search.SearchError, match="not a saved search engine"):
        search.SearchPipeline(tmp_path)


@pytest.mark.slow
def test_search_server_answers_and_refuses_bad_queries(tiny, tmp_path):
    import httpx

    from deploylab import serve

    _, tok, onnx, docs = tiny
    engine = search.SearchEngine(search.Encoder("o", tok, onnx=onnx, max_length=32),
                                 search.make_index("exact"), docs)
    spec = ModelSpec("search", "1", search.SearchPipeline(engine.save(tmp_path / "e"), k=3))
    with serve.start(spec, threads=1) as server:
        url = f"{server.url}/v2/models/search/infer"

        def ask(data, datatype="BYTES"):
            return httpx.post(url, json={"inputs": [{"name": "query", "datatype": datatype,
                                                     "shape": [len(data)], "data": data}]})

        good = ask(["parse json"])
        assert good.status_code == 200, good.text
        assert len(good.json()["outputs"][0]["data"]) == 3
        for data, datatype, needle in ((["  "], "BYTES", "empty"),
                                       (["z" * 2000], "BYTES", "over the limit"),
                                       ([3], "BYTES", "must be strings"),
                                       ([3], "INT64", "datatype")):
            r = ask(data, datatype)
            assert r.status_code == 400 and needle in r.json()["error"], r.text
            assert ask(["parse json"]).status_code == 200  # still serving
