import numpy as np
import pytest

from deploylab import tasks
from deploylab.tasks import TaskError


def test_splits_are_fixed_by_id_and_disjoint():
    assert tasks.split_of("json.dumps") == tasks.split_of("json.dumps")
    train = tasks.docstring_retrieval(None, split="train")
    test = tasks.docstring_retrieval(None, split="test")
    assert not set(train.ids) & set(test.ids)
    assert 0.15 < len(test.ids) / (len(train.ids) + len(test.ids)) < 0.25


def test_retrieval_queries_point_at_their_own_docstring():
    task = tasks.docstring_retrieval(50, seed=1)
    assert len(task.queries) == len(task.answers) == 50
    assert task.queries == tasks.docstring_retrieval(50, seed=1).queries  # seeded
    for q, a in zip(task.queries, task.answers, strict=True):
        assert q.startswith(task.ids[a]) and "(self" not in q
    assert len(set(task.documents)) == len(task.documents)


def test_topics_are_balanced_and_the_same_classes_in_both_splits():
    train = tasks.docstring_topics(4)
    test = tasks.docstring_topics(4, split="test")
    assert train.classes == test.classes and len(train.classes) == 4
    counts = np.bincount(train.labels)
    assert counts.min() == counts.max() > 0
    assert not set(train.texts) & set(test.texts)


def test_retrieval_metrics_on_hand_made_vectors():
    docs = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0.2, 0.9]], np.float32)
    # ranks of the right documents: 1, 2 (doc 0 scores higher than doc 1), 1
    m = tasks.retrieval_metrics(queries, docs, [0, 1, 2], ks=(1, 2))
    assert m["recall@1"] == pytest.approx(2 / 3) and m["recall@2"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert tasks.evaluate_retrieval(lambda texts: docs[: len(texts)],
                                    tasks.RetrievalTask(["a", "b"], ["x", "y"], [0, 1], ["x", "y"])
                                    )["recall@1"] == 1.0


@pytest.mark.parametrize(("call", "match"), [
    (lambda: tasks.docstring_retrieval(0), "positive int"),
    (lambda: tasks.docstring_retrieval(10**6), "at most"),
    (lambda: tasks.docstring_retrieval(5, split="dev"), "split must be"),
    (lambda: tasks.docstring_topics(1), "from 2 to 20"),
    (lambda: tasks.retrieval_metrics(np.ones((2, 3)), np.ones((4, 2)), [0, 1]), "dim"),
])
def test_bad_settings_say_what_to_do(call, match):
    with pytest.raises(TaskError, match=match):
        call()
