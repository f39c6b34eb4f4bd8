"""`deploylab.serve.protocol`: requests checked against the model's tensors, and responses
rendered and read back. No Ray, no HTTP."""

import json

import numpy as np
import pytest

from deploylab.serve.client import build_request, decode_outputs
from deploylab.serve.protocol import (
    ProtocolError,
    TensorSpec,
    encode_response,
    parse_request,
    render_response,
)

X = [TensorSpec("x", "FP32", (-1, 4))]
Y = [TensorSpec("y", "FP32", (-1, 2))]
TEXT = [TensorSpec("text", "BYTES", (-1,))]
EMB = [TensorSpec("embedding", "FP32", (-1, 3))]


def body(**kw) -> bytes:
    req = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                       "data": list(range(8))}]}
    req["inputs"][0].update(kw)
    return json.dumps(req).encode()


def test_a_valid_request_becomes_arrays_with_rows():
    req = parse_request(body(), X, Y)
    assert req.rows == 2 and req.inputs["x"].shape == (2, 4)
    assert req.inputs["x"].dtype == np.float32 and req.outputs == ["y"]


def test_nested_data_is_read_row_major():
    req = parse_request(body(data=[[0, 1, 2, 3], [4, 5, 6, 7]]), X, Y)
    assert req.inputs["x"][1, 0] == 4


@pytest.mark.parametrize(("raw", "reason", "words"), [
    (b"{not json", "bad_json", "not valid JSON"),
    (b"[1, 2]", "bad_json", "JSON object"),
    (json.dumps({"inputs": []}).encode(), "missing_input", "missing input(s) ['x']"),
    (body(name="z"), "extra_input", "unexpected input(s) ['z']"),
    (body(datatype="INT64"), "wrong_datatype", "does not match the model's FP32"),
    (body(shape=[2, 5]), "wrong_shape", "does not fit"),
    (body(shape=[8]), "wrong_shape", "1 dimensions"),
    (body(shape=[3, 4]), "wrong_shape", "needs 12 values"),
    (body(shape=[0, 4], data=[]), "empty_batch", "empty batch"),
    (body(data=["a"] * 8), "wrong_datatype", "value of another type"),
    (body(data=None), "bad_data", "'data' must be a list"),
    (body(data=[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]), "bad_data", "nested deeper than its shape"),
    # within the body limit, these raised RecursionError and ValueError: a 500, retried
    (b"[" * 5000 + b"]" * 5000, "bad_json", "nested too deeply"),
    (body(data="DIGITS").replace(b'"DIGITS"', b"9" * 5000), "bad_json", "4300 digits"),
])
def test_each_bad_request_is_a_400_naming_the_problem(raw, reason, words):
    with pytest.raises(ProtocolError) as e:
        parse_request(raw, X, Y)
    assert e.value.status == 400 and e.value.reason == reason
    assert words in str(e.value)


def test_too_many_rows_unknown_outputs_and_long_texts_are_refused():
    with pytest.raises(ProtocolError, match="over this model's limit of 1"):
        parse_request(body(), X, Y, max_rows=1)
    with pytest.raises(ProtocolError, match=r"unknown output\(s\) \['q'\]"):
        parse_request(json.dumps({**json.loads(body()), "outputs": [{"name": "q"}]}), X, Y)
    text = json.dumps(build_request({"text": ["ab" * 50]}))
    with pytest.raises(ProtocolError, match="100 characters is over the limit of 10"):
        parse_request(text, TEXT, EMB, max_text_chars=10)
    assert parse_request(text, TEXT, EMB).inputs["text"][0] == "ab" * 50


def test_text_that_is_not_utf8_is_refused_naming_the_text():
    # a lone surrogate is valid JSON but no UTF-8; the tokenizer raised TypeError: a 500
    raw = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], ' \
          b'"data": ["fine", "ab\\ud800cd"]}]}'
    with pytest.raises(ProtocolError) as e:
        parse_request(raw, TEXT, EMB)
    assert e.value.status == 400 and e.value.reason == "bad_text"
    assert "text 1 is not valid UTF-8 (surrogates not allowed: '\\ud800' at character 2)" \
        in str(e.value)


def test_client_request_and_server_response_round_trip():
    req = parse_request(json.dumps(build_request({"x": np.ones((2, 4), np.float32)},
                                                 request_id="7")), X, Y)
    assert req.id == "7"
    out = encode_response("m", "1", req.id, {"y": np.arange(4, dtype=np.float32).reshape(2, 2)})
    assert out["id"] == "7" and out["outputs"][0]["datatype"] == "FP32"
    np.testing.assert_array_equal(decode_outputs(json.loads(json.dumps(out)))["y"],
                                  [[0, 1], [2, 3]])


def test_tensor_specs_validate_themselves():
    with pytest.raises(ValueError, match="datatype must be one of"):
        TensorSpec("x", "FLOAT", (-1,))
    with pytest.raises(ValueError, match="shape needs"):
        TensorSpec("x", "FP32", (0,))


def test_rendered_response_carries_the_same_values_in_fewer_bytes():
    rng = np.random.default_rng(0)
    emb = (rng.standard_normal((2, 384)) * 10.0 ** rng.integers(-30, 30, (2, 384))
           ).astype(np.float32)
    outs = {"embedding": emb, "ids": np.arange(3, dtype=np.int64),
            "flags": np.array([True, False]), "text": np.array(["a", "é"], dtype=object)}
    wire = render_response("m", "2", "9", outs)
    body = json.loads(wire)
    assert body["id"] == "9" and body["model_version"] == "2"
    back = decode_outputs(body)
    for k, v in outs.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)  # float32 bit for bit
    assert len(wire) < len(json.dumps(encode_response("m", "2", "9", outs)))


def test_rendered_response_refuses_non_finite_values():
    with pytest.raises(ValueError, match="NaN or infinite"):
        render_response("m", "1", None, {"y": np.array([1.0, np.inf], np.float32)})


# ------------------------------------------------------------------ fuzzing


MODELS = {  # (inputs, outputs, a valid request)
    "tensor": (X, Y, json.loads(body())),
    "text": (TEXT, EMB, {"id": "a", "outputs": [{"name": "embedding"}],
                         "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                                     "data": ["hi", "yo"]}]}),
    "ids": ([TensorSpec("ids", "INT64", (-1, -1)), TensorSpec("on", "BOOL", (-1, -1))], Y,
            {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [[1, 2]]},
                        {"name": "on", "datatype": "BOOL", "shape": [1, 2],
                         "data": [True, False]}]}),
}


def test_mutated_requests_are_either_parsed_or_a_4xx_and_never_warn(mutate):
    # a fuzzer: whatever a request holds, the answer is arrays that fit the model or a
    # ProtocolError; anything else would be a 500, retried by clients as the server's fault
    import random
    import warnings

    rng, parsed, refused = random.Random(0), 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warnings went to the server log
        for _ in range(3000):
            inputs, outputs, valid = MODELS[rng.choice(list(MODELS))]
            raw = json.dumps(mutate(rng, valid)).encode()
            try:
                req = parse_request(raw, inputs, outputs, max_rows=8)
            except ProtocolError as e:
                assert 400 <= e.status < 500, raw
                refused += 1
                continue
            assert all(req.inputs[s.name].shape[0] == req.rows and
                       req.inputs[s.name].ndim == len(s.shape) for s in inputs), raw
            parsed += 1
    assert parsed > 100 and refused > 1000  # both paths are exercised
