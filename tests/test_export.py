"""deploylab.export on tiny models: the parity gate, optimization, sessions, providers."""

import copy

import numpy as np
import pytest
import torch

from deploylab import assets, cnn, export


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=160,
                     attn_implementation="eager")
    return BertModel(cfg, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def tiny_cnn():
    torch.manual_seed(0)
    return cnn.DigitsCNN(channels=(4, 8, 8), hidden=16).eval()


class ShapeBaked(torch.nn.Module):
    """Multiplies by the batch size as a Python int: the tracer freezes it."""

    def forward(self, x):
        return x * int(x.shape[0])


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kw, match", [
    ({"exporter": "tflite"}, "exporter"), ({"attention": "flash"}, "attention"),
    ({"opset": 9}, "opset"), ({"path": "model.bin"}, r"\.onnx"),
    ({"sample_shape": (0, 4)}, "sample_shape")])
def test_config_validates(kw, match):
    with pytest.raises(ValueError, match=match):
        export.ExportConfig(**kw)


def test_parity_config_validates():
    with pytest.raises(ValueError, match="shapes"):
        export.ParityConfig(shapes=())
    assert export.ExportConfig(exporter="dynamo").opset >= 18


def test_cnn_exports_with_dynamic_batch(tiny_cnn, tmp_path):
    out = export.export_onnx(tiny_cnn, export.ExportConfig(path=tmp_path / "cnn.onnx"))
    report = export.export_onnx.last_report
    assert out.is_file() and report.ok and len(report.rows) == 3
    assert {r["shape"].split("x")[0] for r in report.rows} == {"1", "3", "4"}
    assert _leftovers(tmp_path) == []
    sess = export.session(out, threads=1)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_cnn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-4)


def test_encoder_exports_checks_padded_batches_and_fuses(tiny_bert, tmp_path):
    out = export.export_onnx(tiny_bert, export.ExportConfig(path=tmp_path / "bert.onnx"))
    report = export.export_onnx.last_report
    assert report.ok and any(r["padded"] for r in report.rows)
    assert {"2x16"} != {r["shape"] for r in report.rows}  # shapes other than the traced one
    fused = export.optimize_onnx(out)
    ops = export.op_counts(fused)
    assert ops.get("Attention", 0) == 2 and ops.get("SkipLayerNormalization", 0) >= 2
    table = export.fusion_table({"exported": out, "fused": fused})
    assert table.loc["total", "fused"] < table.loc["total", "exported"]
    again = export.check_parity(tiny_bert, fused)
    assert again.ok, str(again)


def test_sdpa_attention_is_not_fused(tiny_bert, tmp_path):
    out = export.export_onnx(tiny_bert, export.ExportConfig(path=tmp_path / "s.onnx",
                                                            attention="sdpa"))
    assert export.op_counts(export.optimize_onnx(out)).get("Attention", 0) == 0
    tiny_bert.set_attn_implementation("eager")


def test_a_broken_model_is_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "broken.onnx"
    with pytest.raises(export.ParityError, match="was not written") as info:
        export.export_onnx(ShapeBaked(), export.ExportConfig(path=target, input_shape=(2, 4)))
    assert not info.value.report.ok
    assert "What to do" in str(info.value) and "froze" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_models_say_what_to_pass(tmp_path):
    with pytest.raises(export.UnsupportedModelError, match=r"torch\.nn\.Module"):
        export.export_onnx(42, export.ExportConfig(path=tmp_path / "x.onnx"))
    with pytest.raises(export.UnsupportedModelError, match="input_shape"):
        export.export_onnx(torch.nn.Linear(3, 2), export.ExportConfig(path=tmp_path / "x.onnx"))
    assert list(tmp_path.iterdir()) == []


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(assets.AssetError):
        export.export_onnx(str(tmp_path / "no-such-model"), export.ExportConfig())
    for fn in (export.session, export.op_counts, export.optimize_onnx):
        with pytest.raises(FileNotFoundError, match="export a model first"):
            fn(tmp_path / "missing.onnx")


def test_sessions_have_explicit_threads_and_refuse_missing_providers(tiny_cnn, tmp_path):
    out = export.export_onnx(tiny_cnn, export.ExportConfig(path=tmp_path / "c.onnx"))
    sess = export.session(out, threads=1)
    assert sess.get_session_options().intra_op_num_threads == 1
    with pytest.raises(export.ProviderUnavailableError, match="not available here"):
        export.session(out, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="threads"):
        export.session(out, threads=0)


def test_spinning_modes_set_the_runtime_config(tiny_cnn, tmp_path):
    out = export.export_onnx(tiny_cnn, export.ExportConfig(path=tmp_path / "c.onnx"))
    feed = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    expected = None
    for mode, spin, stop in ((False, "0", None), (True, "1", None), ("in-call", "1", "1")):
        sess = export.session(out, threads=2, spinning=mode)
        opts = sess.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == spin
        if stop is None:  # True keeps ORT's default: threads spin on after a call
            with pytest.raises(Exception, match="does not have configuration"):
                opts.get_session_config_entry("session.force_spinning_stop")
        else:
            assert opts.get_session_config_entry("session.force_spinning_stop") == stop
        got = sess.run(None, feed)[0]
        expected = got if expected is None else expected
        np.testing.assert_array_equal(got, expected)  # threading never changes the numbers
    with pytest.raises(ValueError, match="in-call"):
        export.session(out, spinning="sometimes")


def test_profile_nodes_times_every_node_the_runtime_runs(tiny_cnn, tmp_path):
    out = export.export_onnx(tiny_cnn, export.ExportConfig(path=tmp_path / "c.onnx"))
    feed = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    table = export.profile_nodes(out, feed, runs=20, warmup=2)
    ran = export.runtime_op_counts(out)
    assert table.groupby("op").size().to_dict() == ran  # one row per node ORT runs
    assert (table["us_per_call"] > 0).all() and table["share"].sum() == pytest.approx(1.0)
    assert table["us_per_call"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="runs"):
        export.profile_nodes(out, feed, runs=0)
    with pytest.raises(ValueError, match="optimization"):
        export.profile_nodes(out, feed, optimization="max")


def test_providers_lists_cpu_and_explains_the_rest():
    rows = {r["name"]: r for r in export.providers()}
    assert rows["CPUExecutionProvider"]["available"]
    assert "CUDAExecutionProvider" in rows and rows["CUDAExecutionProvider"]["note"]


def test_existing_file_is_reused_when_asked(tiny_cnn, tmp_path):
    out = export.export_onnx(tiny_cnn, export.ExportConfig(path=tmp_path / "c.onnx"))
    stamp = out.stat().st_mtime_ns
    export.export_onnx(tiny_cnn, export.ExportConfig(path=out, overwrite=False))
    assert out.stat().st_mtime_ns == stamp


def test_cached_export_is_keyed_by_the_weights(tiny_cnn, tmp_path, monkeypatch):
    # a retrained model of the same class must not reuse the other one's file
    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path))
    cached = export.ExportConfig(overwrite=False)
    first = export.export_onnx(tiny_cnn, cached)
    assert export.export_onnx(tiny_cnn, cached) == first
    other = copy.deepcopy(tiny_cnn)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    second = export.export_onnx(other, cached)
    assert second != first and second.parent == first.parent
    x = np.random.default_rng(2).standard_normal((1, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = other(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(export.session(second).run(None, {"input": x})[0], want,
                               atol=1e-4)


@pytest.mark.skipif(not export.openvino_available(), reason="openvino not installed")
def test_openvino_runs_the_same_graph(tiny_cnn, tmp_path):
    out = export.export_onnx(tiny_cnn, export.ExportConfig(path=tmp_path / "c.onnx"))
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    got = export.openvino_session(out, threads=1)({"input": x})[0]
    np.testing.assert_allclose(got, export.session(out).run(None, {"input": x})[0], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["cnn", "encoder"])
def test_dynamo_exporter_also_passes_the_gate(tiny_cnn, tiny_bert, tmp_path, which):
    # the encoder's wrapper takes *inputs: its dynamic shapes nest one level deeper
    model = tiny_cnn if which == "cnn" else tiny_bert
    out = export.export_onnx(model, export.ExportConfig(path=tmp_path / "d.onnx",
                                                        exporter="dynamo"))
    assert export.export_onnx.last_report.ok and out.is_file()
    assert _leftovers(tmp_path) == []
