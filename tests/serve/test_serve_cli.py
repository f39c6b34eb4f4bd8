"""`deploylab serve`: arguments become ModelSpecs and start() options (the server itself
is tested end to end in test_serve_e2e.py)."""

import pytest

from deploylab import cli, serve
from deploylab.serve import zoo


class FakeServer:
    url = "http://127.0.0.1:8000"

    def __init__(self, specs, **kwargs):
        self.specs, self.kwargs, self.stopped = specs, kwargs, False

    def client(self):
        raise AssertionError("not used without --check")

    def stop(self):
        self.stopped = True
        return []


@pytest.fixture
def started(monkeypatch):
    calls = []

    def fake_start(specs, **kwargs):
        calls.append(FakeServer(specs, **kwargs))
        return calls[-1]

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(serve, "start", fake_start)
    monkeypatch.setattr("time.sleep", interrupt)  # Ctrl-C at once
    return calls


@pytest.fixture
def onnx_file(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_an_onnx_file_is_served_with_the_options_given(started, onnx_file, capsys):
    assert cli.main(["serve", f"act:3={onnx_file}", str(onnx_file), "--replicas", "2",
                     "--port", "8123", "--max-batch-size", "4", "--batch-wait-ms", "2",
                     "--workers", "2", "--threads", "1", "--request-timeout-s", "5",
                     "--max-body-mib", "4", "--max-text-chars", "500"]) == 0
    (server,) = started
    assert [s.key for s in server.specs] == ["act:3", "relu:1"]
    assert server.specs[0].max_batch_size == 4 and server.specs[0].batch_wait_timeout_s == 0.002
    assert server.kwargs["num_replicas"] == 2 and server.kwargs["port"] == 8123
    assert server.kwargs["workers"] == 2 and server.kwargs["threads"] == 1
    assert server.kwargs["request_timeout_s"] == 5.0
    assert server.kwargs["max_body_bytes"] == 4 << 20 and server.kwargs["max_text_chars"] == 500
    assert server.kwargs["host"] == "127.0.0.1" and server.stopped
    assert "serving act:3, relu:1 at http://127.0.0.1:8000" in capsys.readouterr().out


def test_autoscale_becomes_an_autoscaling_config(started, onnx_file):
    assert cli.main(["serve", str(onnx_file), "--autoscale", "1:2"]) == 0
    assert started[0].kwargs["autoscaling"] == {"min_replicas": 1, "max_replicas": 2,
                                                "target_ongoing_requests": 8}


def test_the_limits_default_to_the_servers(started, onnx_file):
    assert cli.main(["serve", str(onnx_file)]) == 0
    assert started[0].kwargs["max_body_bytes"] == 1 << 20
    assert started[0].kwargs["max_text_chars"] == 10_000


def test_minilm_names_its_versions(started, monkeypatch, tmp_path):
    fake = tmp_path / "m.onnx"
    fake.write_bytes(b"")
    monkeypatch.setattr(zoo, "minilm_onnx", lambda precision: fake)
    assert cli.main(["serve", "minilm:int8"]) == 0
    (spec,) = started[0].specs
    assert spec.key == "minilm:2" and spec.tokenizer == zoo.MINILM


@pytest.mark.parametrize(("argv", "words"), [
    (["serve", "nothing.onnx"], "existing .onnx file"),
    (["serve", "minilm:int4"], "minilm:fp32 or minilm:int8"),
    (["serve", "RELU", "--autoscale", "2:1"], "MIN:MAX"),
    (["serve", "RELU", "--max-body-mib", "0"], "--max-body-mib must be > 0, got 0"),
])
def test_bad_arguments_are_one_line_errors(started, onnx_file, argv, words, capsys):
    argv = [str(onnx_file) if a == "RELU" else a for a in argv]
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err
    assert not started
