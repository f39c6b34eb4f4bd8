"""deploylab.prune on tiny models: exact sparsity, exact structured removal, storage, errors."""

import copy

import numpy as np
import pytest
import torch

import deploylab
from deploylab import cnn, measure, prune

VOCAB = 30522  # MiniLM's tokenizer (the export parity gate feeds ids of any token)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny layers train and run fastest on one thread (and CI machines are shared).
    with measure.threads(1):
        yield


def tiny_bert(layers: int = 2, seed: int = 0):
    from transformers import BertConfig, BertModel

    deploylab.seed_everything(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg).eval()


@pytest.fixture
def bert():
    return tiny_bert()


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}


def hidden(model, inputs):
    with torch.no_grad():
        return model(**inputs).last_hidden_state


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9])
def test_magnitude_pruning_reaches_the_sparsity_asked(bert, scope, amount):
    report = prune.prune_(bert, prune.MagnitudeConfig(amount, scope))
    assert prune.sparsity(bert) == pytest.approx(amount, abs=2e-3)
    assert report.params_after == report.params_before  # masks do not shrink anything
    if scope == "layer":
        assert all(v["sparsity"] == pytest.approx(amount, abs=0.01)
                   for v in report.layers.values())
    kept = next(iter(report.masks.values()))
    assert kept.dtype == torch.bool


def test_magnitude_pruning_removes_the_smallest_weights(bert):
    name = "encoder.layer.0.intermediate.dense"
    w = dict(bert.named_modules())[name].weight.detach().clone()
    prune.prune_(bert, prune.MagnitudeConfig.layerwise(0.75, layers=[name]))
    after = dict(bert.named_modules())[name].weight
    survivors = w.abs()[after != 0]
    victims = w.abs()[after == 0]
    assert survivors.min() >= victims.max()
    assert prune.sparsity(bert, [name]) == pytest.approx(0.75, abs=1e-3)


def test_global_scope_prunes_layers_unevenly(bert):
    with torch.no_grad():  # make one layer's weights tiny: global ranking takes it first
        bert.encoder.layer[1].output.dense.weight.mul_(0.01)
    report = prune.prune_(bert, prune.MagnitudeConfig.global_(0.3))
    assert report.layers["encoder.layer.1.output.dense"]["sparsity"] > 0.99


def test_structured_removal_is_exact_when_removed_units_are_zero(bert, inputs):
    d = bert.encoder.layer[0].attention.self.attention_head_size
    with torch.no_grad():
        for layer in bert.encoder.layer:
            for h in (1, 3):  # heads whose output projection is zero contribute nothing
                layer.attention.output.dense.weight[:, h * d:(h + 1) * d] = 0
            layer.intermediate.dense.weight[:32] = 0  # GELU(0) = 0: dead neurons
            layer.intermediate.dense.bias[:32] = 0
    before = hidden(bert, inputs)
    report = prune.prune_(bert, prune.StructuredConfig.share(0.5))
    assert report.kept["0.heads"] == [0, 2] and report.kept["1.ffn"] == list(range(32, 64))
    assert bert.encoder.layer[0].attention.self.query.out_features == 2 * d
    assert bert.encoder.layer[1].intermediate.dense.out_features == 32
    assert report.params_after < report.params_before == sum(
        p.numel() for p in tiny_bert().parameters())
    torch.testing.assert_close(hidden(bert, inputs), before, rtol=0, atol=1e-6)


def test_structured_cnn_channel_removal_is_exact_when_channels_are_zero():
    deploylab.seed_everything(0)
    model = cnn.DigitsCNN().eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        for i, n in ((0, 4), (2, 8), (5, 16)):  # a quarter of each conv's filters
            model.features[i].weight[:n] = 0
            model.features[i].bias[:n] = 0
        before = model(x)
    report = prune.prune_(model, prune.StructuredConfig.cnn(0.25))
    assert [v["channels_after"] for v in report.layers.values()] == [12, 24, 48]
    assert model.classifier[1].in_features == 48 * 4
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)


def test_activation_importance_uses_calibration_data(bert, inputs):
    report = prune.prune_(bert, prune.StructuredConfig(heads=0.25, ffn=0.25,
                                                       calibration=[inputs]))
    assert len(report.kept["0.heads"]) == 3 and len(report.kept["0.ffn"]) == 48
    assert hidden(bert, inputs).shape == (3, 12, 32)


def test_pruned_models_export_to_onnx_with_consistent_shapes(bert, inputs, tmp_path):
    from deploylab import export

    prune.prune_(bert, prune.StructuredConfig(heads=0.5, ffn=0.25))
    path = export.export_onnx(bert, export.ExportConfig(
        path=tmp_path / "pruned.onnx", parity=export.ParityConfig(shapes=((1, 8), (2, 12)))))
    sess = export.session(path, threads=1)
    feeds = {i.name: inputs[i.name].numpy() if i.name in inputs
             else np.zeros_like(inputs["input_ids"].numpy()) for i in sess.get_inputs()}
    out = sess.run(None, feeds)[0]
    ref = hidden(bert, inputs).numpy()
    assert out.shape == ref.shape == (3, 12, 32)
    assert np.abs(out - ref)[inputs["attention_mask"].numpy() == 1].max() < 1e-3


def test_pruned_cnn_exports_too(tmp_path):
    from deploylab import export

    deploylab.seed_everything(0)
    model = cnn.DigitsCNN().eval()
    prune.prune_(model, prune.StructuredConfig.cnn(0.5))
    path = export.export_onnx(model, export.ExportConfig(path=tmp_path / "cnn.onnx"))
    x = torch.rand(4, 1, 8, 8)
    sess = export.session(path, threads=1)
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, True, "0.5", None])
def test_amounts_outside_zero_one_are_refused(amount):
    with pytest.raises(prune.PruneError, match=r"must be a number in \[0, 1\)"):
        prune.MagnitudeConfig(amount)
    with pytest.raises(prune.PruneError, match=r"\[0, 1\)"):
        prune.StructuredConfig(heads=amount)


def test_unknown_layer_names_are_refused_with_the_real_ones(bert):
    with pytest.raises(prune.PruneError, match=r"no prunable layer named 'encoder\.nope'.*"
                                               r"encoder\.layer\.0\.attention\.self\.query"):
        prune.prune_(bert, prune.MagnitudeConfig(0.5, layers=("encoder.nope",)))
    with pytest.raises(prune.PruneError, match="nothing to remove"):
        prune.prune_(bert, prune.StructuredConfig(channels=0.5))
    with pytest.raises(prune.PruneError, match="calibration"):
        prune.StructuredConfig(ffn=0.5, importance="activation")


def test_sensitivity_scan_restores_the_model(bert, inputs):
    ref = hidden(bert, inputs)
    scores = prune.sensitivity_scan(
        bert, lambda m: float(measure.cosine(ref.flatten(1), hidden(m, inputs).flatten(1)).min()),
        amounts=(0.5, 0.9))
    assert list(scores.index) == ["embeddings", "0.attention", "0.ffn", "1.attention", "1.ffn",
                                  "pooler.dense"]
    assert np.allclose(scores["baseline"], 1.0) and (scores[0.9] <= scores[0.5] + 1e-6).all()
    torch.testing.assert_close(hidden(bert, inputs), ref)


def test_sparse_storage_is_small_and_lossless(bert, inputs, tmp_path):
    dense = measure.size_on_disk(prune.save_dense(bert, tmp_path / "dense.safetensors"))
    prune.prune_(bert, prune.MagnitudeConfig(0.9))
    ref = hidden(bert, inputs)
    file = prune.save_sparse(bert, tmp_path / "sparse.safetensors")
    assert measure.size_on_disk(file) < 0.3 * dense  # LayerNorms, biases, header: ~0.23x
    again = tiny_bert(seed=5)
    again.load_state_dict(prune.load_sparse(file), strict=False)
    torch.testing.assert_close(hidden(again, inputs), ref, rtol=0, atol=0)


def test_pruned_models_save_and_rebuild(bert, inputs, tmp_path):
    report = prune.prune_(bert, prune.StructuredConfig.share(0.5))
    prune.save_pruned(bert, tmp_path / "enc", report, extra={"note": "x"})
    rebuilt, extra = prune.load_pruned(tiny_bert(seed=3), tmp_path / "enc")
    assert extra == {"note": "x"}
    torch.testing.assert_close(hidden(rebuilt, inputs), hidden(bert, inputs))
    deploylab.seed_everything(0)
    model = cnn.DigitsCNN().eval()
    report = prune.prune_(model, prune.StructuredConfig.cnn(0.5))
    prune.save_pruned(model, tmp_path / "cnn", report)
    rebuilt, _ = prune.load_pruned(cnn.DigitsCNN(), tmp_path / "cnn")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


@pytest.fixture(scope="module")
def digits():
    return cnn.load_digits_split(seed=0)


@pytest.mark.parametrize("mode", ["plain", "distill"])
def test_recovery_keeps_zeros_zero(digits, mode):
    deploylab.seed_everything(0)
    teacher = cnn.DigitsCNN(channels=(4, 8, 8), hidden=16)
    cnn.train_cnn(teacher, digits, epochs=2)
    student = copy.deepcopy(teacher)
    report = prune.prune_(student, prune.MagnitudeConfig(0.8))
    history = prune.recover_(student, prune.RecoveryConfig.quick(mode=mode, epochs=2, lr=1e-3),
                             teacher=teacher, data=digits, report=report)
    assert len(history) == 2 and prune.sparsity(student) == pytest.approx(0.8, abs=2e-3)


def test_gradual_recovery_of_an_encoder_reaches_the_target(bert):
    from transformers import AutoTokenizer

    from deploylab import assets

    tokenizer = AutoTokenizer.from_pretrained(assets.path("minilm"))
    teacher = copy.deepcopy(bert)
    texts = ["open a file", "sort a list in place", "return the square root", "parse json"] * 4
    pairs = list(zip(texts[::2], texts[1::2], strict=True))
    config = prune.RecoveryConfig.quick(steps=6, gradual=True)
    history = prune.recover_(bert, config, teacher=teacher, tokenizer=tokenizer,
                             data=(texts, pairs), schedule=prune.MagnitudeConfig(0.6))
    assert len(history) == 6 and prune.sparsity(bert) == pytest.approx(0.6, abs=2e-3)
    plain = prune.recover_(teacher, prune.RecoveryConfig.quick(mode="plain"),
                           tokenizer=tokenizer, data=(texts, pairs))
    assert all(np.isfinite(h["loss"]) for h in plain)
    with pytest.raises(prune.PruneError, match="teacher"):
        prune.recover_(bert, prune.RecoveryConfig.quick(), tokenizer=tokenizer)


def test_pruning_widget_sweeps_quality_and_size(digits):
    from deploylab.widgets.pruning import pruning_explorer, sweep

    deploylab.seed_everything(0)
    model = cnn.DigitsCNN(channels=(4, 8, 8), hidden=16)
    table = sweep(model, lambda m: cnn.accuracy(m, digits), (0.0, 0.5, 0.9))
    assert list(table.sparsity) == [0.0, 0.5, 0.9]
    # a 7 kB model: the file header weighs; MiniLM at 90% gets ~0.13x
    assert table.size_ratio.is_monotonic_decreasing and table.size_ratio.iloc[-1] < 0.5
    assert prune.sparsity(model) == 0.0  # copies were pruned, not the model
    box = pruning_explorer(model, lambda m: cnn.accuracy(m, digits), metric="accuracy",
                           sparsities=(0.0, 0.9))
    slider, text = box.children[0], box.children[1]
    slider.value = 0.9
    assert "90% zeros" in text.value and "accuracy" in text.value
    with pytest.raises(prune.PruneError):
        pruning_explorer(model, lambda m: 0.0, sparsities=(0.5, 1.0))
