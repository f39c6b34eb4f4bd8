"""`Runner.infer`: one request's inputs through the replica's prepare and run, no HTTP."""

import numpy as np
import pytest
import torch

from deploylab.serve import InferenceError, LocalClient, ModelSpec, ProtocolError, TensorSpec, zoo


def test_a_tensor_model_takes_lists_or_arrays():
    lin = torch.nn.Linear(3, 2, bias=False)
    spec = ModelSpec("lin", "1", lin, inputs=[TensorSpec("x", "FP32", (-1, 3))],
                     outputs=[TensorSpec("y", "FP32", (-1, 2))])
    runner = spec.build(threads=1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = x @ lin.weight.detach().numpy().T
    np.testing.assert_allclose(runner.infer({"x": x})["y"], expected, rtol=1e-5)
    np.testing.assert_allclose(runner.infer({"x": x.tolist()})["y"], expected, rtol=1e-5)


def test_a_text_model_embeds_its_texts():
    runner = zoo.minilm_specs(["int8"])[0].build(threads=1)
    emb = runner.infer({"text": ["how do I open a file?", "sort a list"]})["embedding"]
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    assert float(emb[0] @ emb[1]) < 0.99  # two different texts, two different vectors


def test_versions_order_numbers_by_value_then_names():
    from deploylab.serve.models import version_order

    # the server and LocalClient both answer a request without a version with the last
    assert sorted(["10", "9", "2", "canary", "beta"], key=version_order) == [
        "2", "9", "10", "beta", "canary"]


def test_values_an_onnx_model_cannot_take_are_the_requests_fault(lookup_onnx):
    # datatype and shape fit, the id does not: ONNX Runtime's INVALID_ARGUMENT, a 400
    spec = ModelSpec("lookup", "1", lookup_onnx)
    runner = spec.build(threads=1)
    assert runner.infer({"ids": [[1, 2, 9]]})["y"].shape == (1, 3, 2)
    with pytest.raises(ProtocolError, match="out of data bounds, idx=99") as e:
        runner.infer({"ids": [[1, 2, 99]]})
    assert (e.value.status, e.value.reason) == (400, "invalid_input")
    assert "[ONNXRuntimeError]" not in str(e.value)
    with pytest.raises(InferenceError) as e:
        LocalClient(spec).infer("lookup", {"ids": np.array([[99, 0, 0]])})
    assert e.value.status == 400 and not e.value.retryable
