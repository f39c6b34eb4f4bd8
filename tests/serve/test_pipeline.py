"""A Pipeline behind ModelSpec/Runner: metadata, per-request checks, batches (no Ray)."""

import json

import numpy as np
import pytest

from deploylab.serve import (
    InferenceError,
    LocalClient,
    ModelSpec,
    Pipeline,
    ProtocolError,
    TensorSpec,
)
from deploylab.serve.protocol import parse_request


class Upper(Pipeline):
    inputs = (TensorSpec("text", "BYTES", (-1,)),)
    outputs = (TensorSpec("upper", "BYTES", (-1,)), TensorSpec("chars", "INT64", (-1,)))
    max_text_chars = 50

    def load(self, threads=None):
        self.loaded = threads

    def prepare(self, req):
        texts = req.inputs["text"].tolist()
        if any(not t for t in texts):
            raise ProtocolError("empty text", 400, "bad_text")
        return texts

    def run(self, items):
        return [{"upper": np.array([t.upper() for t in it], dtype=object),
                 "chars": np.array([len(t) for t in it], dtype=np.int64)} for it in items]


def _request(*texts):
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)],
                                   "data": list(texts)}]})


def test_runner_delegates_to_the_pipeline():
    spec = ModelSpec("upper", "1", Upper())
    runner = spec.build(threads=2)
    assert runner.pipeline.loaded == 2 and runner.max_text_chars == 50
    assert not hasattr(spec.model, "loaded"), "the spec stays light: a copy is loaded"
    meta = runner.metadata()
    assert meta["platform"] == "python"
    assert [o["name"] for o in meta["outputs"]] == ["upper", "chars"]
    items = [runner.prepare(parse_request(_request(*t), runner.inputs, runner.outputs))
             for t in (["ab"], ["cde", "f"])]
    assert [runner.rows(i) for i in items] == [1, 2]
    out = runner.run(items)
    assert out[0]["upper"].tolist() == ["AB"]
    assert out[1]["upper"].tolist() == ["CDE", "F"] and out[1]["chars"].tolist() == [3, 1]
    # one request's inputs straight in, as the server would run them alone
    alone = runner.infer({"text": ["cde", "f"]})
    assert alone["upper"].tolist() == ["CDE", "F"] and alone["chars"].tolist() == [3, 1]


def test_pipeline_refusals_are_protocol_errors():
    runner = ModelSpec("upper", "1", Upper()).build()
    with pytest.raises(ProtocolError, match="empty text"):
        runner.prepare(parse_request(_request(""), runner.inputs, runner.outputs))


def test_a_pipeline_must_declare_inputs_and_answer_every_item():
    class Nothing(Pipeline):
        pass

    with pytest.raises(ValueError, match="declares no inputs"):
        ModelSpec("x", "1", Nothing())

    class Short(Upper):
        def run(self, items):
            return super().run(items)[:1]

    runner = ModelSpec("short", "1", Short()).build()
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        runner.run([["a"], ["b"]])


def test_local_client_answers_as_a_replica_would():
    client = LocalClient([ModelSpec("upper", "1", Upper()), ModelSpec("upper", "2", Upper())])
    out = client.infer("upper", {"text": ["ab", "c"]})
    assert out["upper"].tolist() == ["AB", "C"] and out["chars"].tolist() == [2, 1]
    assert client._runners.keys() == {"upper:2"}, "no version: the highest, loaded lazily"
    for inputs, status, needle in (({"text": [""]}, 400, "empty text"),
                                   ({"text": ["x" * 51]}, 400, "over the limit of 50"),
                                   ({"other": ["a"]}, 400, "unexpected input")):
        with pytest.raises(InferenceError, match=needle) as e:
            client.infer("upper", inputs)
        assert e.value.status == status and not e.value.retryable
    with pytest.raises(InferenceError, match="unknown model") as e:
        client.infer("lower", {"text": ["a"]})
    assert e.value.status == 404
    assert client.infer("upper", {"text": ["ok"]}, version="1")["upper"].tolist() == ["OK"]


def test_local_client_picks_the_highest_version_by_number_as_the_server_does():
    client = LocalClient([ModelSpec("upper", v, Upper()) for v in ("9", "10")])
    client.infer("upper", {"text": ["a"]})
    assert client._runners.keys() == {"upper:10"}  # not "9", which sorts last as text
