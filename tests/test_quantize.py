"""deploylab.quantize on tiny models: every config, calibration readers, sensitivity, errors."""

import numpy as np
import pytest
import torch

from deploylab import cnn, export
from deploylab import quantize as q


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1200, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=160,
                     attn_implementation="eager")
    return BertModel(cfg, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def bert_onnx(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    return export.export_onnx(tiny_bert, export.ExportConfig(path=folder / "bert.onnx"))


def _feeds(n=4, batch=2, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 // 2, 1100, (batch, seq)).astype(np.int64)
    return [{"input_ids": ids + i, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)} for i in range(n)]


def _cos(a: q.Quantized, b: q.Quantized, feeds) -> float:
    from deploylab.measure import cosine

    ra, rb = a.runner(1), b.runner(1)
    return float(np.mean([cosine(ra(f).reshape(-1, ra(f).shape[-1]),
                                 rb(f).reshape(-1, rb(f).shape[-1])).mean() for f in feeds]))


CONFIGS = {
    "dynamic": lambda: q.DynamicInt8Config(),
    "dynamic-per-tensor": lambda: q.DynamicInt8Config(per_channel=False, reduce_range=False),
    "static-minmax": lambda: q.StaticInt8Config(calibration=_feeds(), op_types=("MatMul",)),
    "static-entropy": lambda: q.StaticInt8Config(calibration=_feeds(), method="entropy",
                                                 op_types=("MatMul",)),
    "weight-only-int4": lambda: q.WeightOnlyConfig(bits=4, block_size=32),
    "weight-only-int8": lambda: q.WeightOnlyConfig(bits=8, block_size=32),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ort_configs_write_a_close_model(name, bert_onnx, tmp_path):
    config = CONFIGS[name]()
    config.path = tmp_path / f"{name}.onnx"
    result = q.quantize(bert_onnx, config)
    assert result.path == config.path.resolve() and result.path.is_file()
    assert result.size_bytes == result.path.stat().st_size > 0
    assert result.float_size_bytes == bert_onnx.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # nothing half-written
    assert _cos(q.reference(bert_onnx), result, _feeds(2, seed=5)) > 0.95


def test_weight_only_leaves_the_root_logger_as_it_was(bert_onnx, tmp_path, monkeypatch):
    # ORT's matmul_nbits_quantizer calls logging.basicConfig(level=INFO) on import: a
    # notebook then printed every httpx request on stderr
    import logging
    import sys

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    monkeypatch.delitem(sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer",
                        raising=False)
    q.quantize(bert_onnx, q.WeightOnlyConfig(bits=4, path=tmp_path / "w4.onnx"))
    assert root.handlers == [] and root.level == logging.WARNING


def test_dynamic_int8_shrinks_the_file_and_uses_integer_kernels(bert_onnx, tmp_path):
    result = q.quantize(bert_onnx, q.DynamicInt8Config(path=tmp_path / "d.onnx"))
    assert result.size_ratio < 0.5
    assert export.op_counts(result.path).get("MatMulInteger", 0) > 0


def test_quantized_files_are_reused(bert_onnx, tmp_path):
    config = q.DynamicInt8Config(path=tmp_path / "d.onnx")
    first = q.quantize(bert_onnx, config).path.stat().st_mtime_ns
    assert q.quantize(bert_onnx, config).path.stat().st_mtime_ns == first


@pytest.mark.parametrize("config", [q.DynamicInt8Config(backend="torchao"),
                                    q.WeightOnlyConfig(bits=8, backend="torchao")],
                         ids=["dynamic", "weight-only-int8"])
def test_torchao_configs(config, tiny_bert):
    result = q.quantize(tiny_bert, config)
    assert result.backend == "torchao" and result.module is not tiny_bert
    assert 0 < result.size_bytes
    assert _cos(q.reference(tiny_bert), result, _feeds(1)) > 0.95
    assert all(p.dtype == torch.float32 for p in tiny_bert.parameters())  # original untouched


def test_configs_a_backend_cannot_do_name_one_that_can(bert_onnx, tiny_bert):
    with pytest.raises(q.BackendUnsupportedError, match="backend='ort'"):
        q.StaticInt8Config(calibration=_feeds(), backend="torchao")
    with pytest.raises(q.BackendUnsupportedError, match="backend='ort'"):
        q.quantize(bert_onnx, q.DynamicInt8Config(backend="torchao"))
    with pytest.raises(q.BackendUnsupportedError, match="digits CNN"):
        q.quantize(tiny_bert, q.QATConfig(data=object()))
    with pytest.raises(q.BackendUnsupportedError, match="no handler"):
        q.quantize(bert_onnx, object())
    with pytest.raises(ValueError, match="backend must be one of"):
        q.DynamicInt8Config(backend="tensorrt")


def test_bad_input_is_refused_and_leaves_nothing(bert_onnx, tmp_path):
    with pytest.raises(q.CalibrationError, match="empty"):
        q.quantize(bert_onnx, q.StaticInt8Config(calibration=[], path=tmp_path / "s.onnx"))
    with pytest.raises(FileNotFoundError, match="export"):
        q.quantize(tmp_path / "missing.onnx", q.DynamicInt8Config())
    with pytest.raises(export.UnsupportedModelError, match="cannot quantize"):
        q.quantize(42, q.DynamicInt8Config())
    with pytest.raises(q.CalibrationError, match="calibration="):
        q.StaticInt8Config()
    with pytest.raises(ValueError, match="bits"):
        q.WeightOnlyConfig(bits=3)
    assert list(tmp_path.iterdir()) == []


def test_calibration_reader_checks_and_rewinds():
    reader = q.CalibrationReader(_feeds(5), max_samples=3,
                                 input_names=["input_ids", "attention_mask"])
    assert len(reader) == 3 and set(reader.get_next()) == {"input_ids", "attention_mask"}
    while reader.get_next() is not None:
        pass
    reader.rewind()
    assert reader.get_next() is not None
    with pytest.raises(q.CalibrationError, match="lack inputs"):
        q.CalibrationReader([{"x": np.zeros(2)}], input_names=["input_ids"])
    with pytest.raises(q.CalibrationError, match="not a dict"):
        q.CalibrationReader([np.zeros(3)])


def test_histogram_calibration_needs_one_shape(bert_onnx, tmp_path):
    mixed = _feeds(2, seq=8) + _feeds(2, seq=12)
    with pytest.raises(q.CalibrationError, match="pad_to_max"):
        q.quantize(bert_onnx, q.StaticInt8Config(calibration=mixed, method="percentile",
                                                 path=tmp_path / "p.onnx"))
    assert list(tmp_path.iterdir()) == []


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.easy, self.hard = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
        with torch.no_grad():
            self.hard.weight[0, 0] = 50.0  # one outlier: per-tensor scales crush the rest

    def forward(self, input):
        return self.hard(self.easy(input))


@pytest.mark.parametrize("mode", ["output", "local"])
def test_sensitivity_ranks_the_outlier_layer_first(mode):
    model = TwoLayers().eval()
    samples = [{"input": np.random.default_rng(i).standard_normal((8, 16)).astype(np.float32)}
               for i in range(2)]
    scan = q.sensitivity_scan(model, samples, per_channel=False, mode=mode)
    assert scan.most_sensitive(1) == ["hard"]
    assert scan.rows[0]["cosine_mean"] < scan.rows[1]["cosine_mean"]
    assert list(scan.table().columns[:2]) == ["layer", "kind"]
    with pytest.raises(q.CalibrationError):
        q.sensitivity_scan(model, [])


def test_mixed_precision_keeps_the_most_sensitive_layers_float(tiny_bert, bert_onnx, tmp_path):
    scan = q.sensitivity_scan(tiny_bert, _feeds(1), mode="local")
    result = q.quantize(bert_onnx, q.MixedPrecisionConfig(keep_float=2, sensitivity=scan,
                                                          path=tmp_path / "m.onnx"))
    assert result.kept_float == tuple(scan.most_sensitive(2))
    kept = result.info["kept_nodes"]
    assert len(kept) == 2
    import onnx

    ops = {n.name: n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert all(ops.get(k) == "MatMul" for k in kept)  # still float MatMuls
    with pytest.raises(q.BackendUnsupportedError, match="sensitivity"):
        q.quantize(bert_onnx, q.MixedPrecisionConfig(samples=_feeds(1)))


def test_linear_layers_map_to_onnx_nodes(tiny_bert, bert_onnx):
    mapping = q.linear_to_onnx_nodes(tiny_bert, bert_onnx)
    assert len(mapping) == 12  # 2 layers x (q, k, v, out, up, down)
    assert mapping["encoder.layer.0.attention.self.query"].endswith("query/MatMul")
    assert len(q.activation_matmuls(bert_onnx)) == 4  # Q.K^T and probs.V per layer


@pytest.mark.parametrize("granularity", ["tensor", "channel", "block"])
def test_quantize_tensor_round_trips_within_half_a_step(granularity):
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    x[3] *= 20  # one loud channel
    r = q.quantize_tensor(x, 8, granularity=granularity)
    step = r["scale"].max()
    assert np.abs(r["error"]).max() <= step / 2 + 1e-6
    assert r["q"].min() >= -128 and r["q"].max() <= 127
    affine = q.quantize_tensor(np.abs(x), 4, symmetric=False, granularity=granularity)
    assert affine["q"].min() >= 0 and affine["q"].max() <= 15


def test_finer_granularity_and_more_bits_mean_less_error():
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    x[3] *= 20
    tensor = q.quant_error(x, 8)["rel_rms_error"]
    channel = q.quant_error(x, 8, granularity="channel")["rel_rms_error"]
    assert channel < tensor
    assert q.quant_error(x, 4)["sqnr_db"] < q.quant_error(x, 8)["sqnr_db"]
    with pytest.raises(ValueError, match="bits"):
        q.quantize_tensor(x, 1)


def test_digits_calibration_uses_training_images():
    data = cnn.load_digits_split(0)
    feeds = q.digits_calibration(data, n=70, batch_size=32)
    assert [f["input"].shape[0] for f in feeds] == [32, 32, 6]
    assert np.array_equal(feeds[0]["input"], data.x_train[:32].numpy())


@pytest.mark.slow
def test_static_int8_and_qat_on_the_digits_cnn(tmp_path):
    torch.manual_seed(0)
    data = cnn.load_digits_split(0)
    model = cnn.DigitsCNN(channels=(8, 16, 16), hidden=32)
    cnn.train_cnn(model, data, epochs=4, lr=1e-2)
    fp32 = export.export_onnx(model, export.ExportConfig(path=tmp_path / "cnn.onnx"))
    static = q.quantize(fp32, q.StaticInt8Config(calibration=q.digits_calibration(data)))
    assert "QLinearConv" in export.runtime_op_counts(static.path)
    run = static.runner(1)
    base = cnn.accuracy(model, data)
    assert cnn.accuracy(lambda x: run({"input": x}), data) > base - 0.03
    qat = q.quantize(model, q.QATConfig(data=data, epochs=1, path=tmp_path / "qat.onnx"))
    assert qat.path.is_file() and qat.info["top1_agreement_onnx_vs_torch"] >= 0.98
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    low = q.quantize(model, q.QATConfig(data=data, bits=4, epochs=1))
    assert low.path is None and low.info["bits"] == 4


def test_the_cpu_preset_follows_the_vnni_flag(monkeypatch):
    monkeypatch.setattr(q, "has_vnni", lambda: True)
    assert q.DynamicInt8Config.for_this_cpu().reduce_range is False
    monkeypatch.setattr(q, "has_vnni", lambda: False)
    config = q.DynamicInt8Config.for_this_cpu(path="x.onnx")
    assert config.reduce_range is True and config.per_channel and config.path == "x.onnx"
