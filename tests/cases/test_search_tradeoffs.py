"""The search trade-offs: the table every pipeline is judged by, the recommendation within a
latency budget, index scaling, and the side-by-side widget table (tiny random encoder)."""

import numpy as np
import pandas as pd
import pytest

from deploylab.cases import search
from deploylab.cases.search import tradeoffs
from deploylab.widgets.search import search_box, side_by_side


@pytest.fixture(scope="module")
def engines():
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from deploylab import assets

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, vocab_size=30522)).eval()
    tok = AutoTokenizer.from_pretrained(assets.resolve_model("all-MiniLM-L6-v2"))
    enc = search.Encoder("tiny", tok, model=model, max_length=32, threads=1)
    docs = search.corpus(80, keep=["json.loads"])
    exact = search.SearchEngine(enc, search.make_index("exact"), docs)
    binary = search.SearchEngine(enc, search.make_index("binary"), docs, vectors=exact.vectors)
    queries = search.QuerySet([t[:200] for t in docs.texts[:6]], [(i,) for i in docs.ids[:6]],
                              "self")
    return {"exact": exact, "binary": binary}, queries


def test_measure_pipelines_gives_one_comparable_row_per_pipeline(engines):
    pipelines, queries = engines
    table = tradeoffs.measure_pipelines(pipelines, queries, repeats=3, warmup=1, threads=1)
    assert list(table["pipeline"]) == ["exact", "binary"]
    assert (table["latency_ms_p50"] <= table["latency_ms_p90"]).all()
    assert table.loc[0, "recall@10"] == 1.0  # documents find themselves
    assert table.loc[1, "index_mb"] < table.loc[0, "index_mb"] / 10
    assert table["pareto"].any()
    with pytest.raises(search.SearchError, match="at least one engine"):
        tradeoffs.measure_pipelines({}, queries)


def test_recommend_takes_the_best_quality_within_the_budget():
    table = pd.DataFrame({"pipeline": ["slow-good", "fast-ok", "fast-good", "fastest-bad"],
                          "latency_ms_p90": [9.0, 2.0, 3.0, 0.5],
                          "recall@10": [0.9, 0.7, 0.8, 0.3]})
    assert tradeoffs.recommend(table, 10.0)["pipeline"] == "slow-good"
    assert tradeoffs.recommend(table, 3.0)["pipeline"] == "fast-good"
    assert tradeoffs.recommend(table, 1.0)["pipeline"] == "fastest-bad"
    assert tradeoffs.recommend(table, 0.1) is None
    with pytest.raises(search.SearchError, match="positive number"):
        tradeoffs.recommend(table, 0)


def test_scaling_reports_every_size_and_index():
    v = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    table = tradeoffs.scaling(v, [500, 1000], queries=20, kinds=("exact", "hnsw"))
    assert len(table) == 4 and set(table["index"]) == {"exact", "hnsw"}
    exact = table[table["index"] == "exact"]
    assert (exact["recall@10_vs_exact"] == 1.0).all()
    assert (table["recall@10_vs_exact"].between(0, 1)).all()


def test_side_by_side_and_search_box(engines, capsys):
    pipelines, _ = engines
    table = side_by_side(pipelines, "parse json", k=3)
    assert list(table.columns) == ["exact", "exact score", "binary", "binary score"]
    assert len(table) == 3 and set(table.attrs["latency_ms"]) == {"exact", "binary"}
    # outside a kernel the widget's output goes to stdout
    box = search_box(pipelines, k=2, value="")  # an empty query shows an error, never raises
    assert "error: the query is empty" in capsys.readouterr().out
    box.children[0].value = "parse json"
    shown = capsys.readouterr().out
    assert "exact:" in shown and "binary:" in shown and "ms" in shown
