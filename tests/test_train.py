"""deploylab.train on tiny models: exact saved-tensor counts, checkpointing that changes
memory but not gradients, autocast with fp32 master weights, and clear errors."""

import copy
import gc
import weakref

import pytest
import torch

from deploylab import DeploylabError
from deploylab import train as tr


def tiny_bert(layers: int = 2, dropout: float = 0.1):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    return BertModel(cfg)


def tiny_batch(b: int = 3, t: int = 8, classes: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t // 2:] = 0  # one padded text
    return {"input_ids": torch.randint(1, 50, (b, t), generator=g), "attention_mask": mask,
            "token_type_ids": torch.zeros(b, t, dtype=torch.long),
            "labels": torch.randint(0, classes, (b,), generator=g)}


def tiny_classifier(**kw):
    return tr.SequenceClassifier(tiny_bert(**kw), n_classes=4)


# ------------------------------------------------------------------ saved-tensor meter


def test_meter_matches_a_hand_count():
    # Linear(4, 8) -> ReLU -> Linear(8, 2) on x (3, 4) that needs no gradient:
    #   Linear 1 saves x (its weight's gradient needs it; x needs none, so W1 is not saved)
    #   ReLU saves its output (3, 8); Linear 2 saves that same tensor as its input (counted
    #   once) and W2 transposed (a view of a parameter: no extra memory).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    with tr.SavedTensorMeter(model, by_module=True) as meter:
        model(x).sum()
    assert meter.activation_bytes == 3 * 4 * 4 + 3 * 8 * 4  # 48 + 96 bytes, fp32
    assert meter.parameter_bytes == 8 * 2 * 4
    assert meter.weight_copy_bytes == 0
    assert meter.saves == 4 and meter.raw_bytes == 48 + 96 + 96 + 64  # before de-duplication
    assert meter.by_module_bytes() == {"0": 48, "1": 96}
    assert meter.per_block() == {"0": 48, "1": 96}


def test_meter_frees_the_graph_of_a_forward_never_run_backward():
    # saved_for_backward runs no backward: the graph must die with its last reference. A pack
    # hook that returned a saved output as itself would tie it to its own grad_fn, a cycle in
    # C++ that the garbage collector cannot see (1.5 GB per call at MiniLM 16 x 256).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    outputs = []
    model[1].register_forward_hook(lambda m, a, out: outputs.append(weakref.ref(out)))
    meter = tr.saved_for_backward(model, {"input": torch.randn(3, 4),
                                          "labels": torch.tensor([0, 1, 0])})
    gc.collect()
    assert meter.activation_bytes > 0
    assert outputs and outputs[0]() is None  # the ReLU's saved output was freed


def test_meter_sees_autocast_weight_copies():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with tr.SavedTensorMeter(model) as meter, torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(3, 4)).sum()
    # bf16: x cast (3*4*2) and the ReLU output (3*8*2); W2's bf16 copy (8*2*2) is a weight copy
    assert meter.activation_bytes == 24 + 48
    assert meter.weight_copy_bytes == 32
    assert meter.parameter_bytes == 0


def test_meter_is_deterministic_and_linear_in_batch():
    model = tiny_classifier(dropout=0.0)
    rows = tr.activation_sweep(model, lambda b, s: tiny_batch(b, s), [8], [2, 4, 2])
    mb = {(r["batch"], r["checkpointing"]): r["activation_mb"] for r in rows}
    assert rows[0]["activation_mb"] == rows[2]["activation_mb"]
    # everything but the head's tiny tail scales with the batch
    assert mb[(4, "none")] == pytest.approx(2 * mb[(2, "none")], rel=0.02)
    assert mb[(2, "transformers")] < mb[(2, "none")]


# ------------------------------------------------------------------------ checkpointing


@pytest.mark.parametrize("mode,blocks", [("transformers", ()),
                                         ("blocks", ("encoder.layer.*",)),
                                         ("blocks", ("encoder.layer.1.attention",))])
def test_checkpointing_keeps_the_gradients_and_saves_memory(mode, blocks):
    base = tiny_classifier()
    ckpt = copy.deepcopy(base)
    batch = tiny_batch()
    names = tr.set_checkpointing_(ckpt, mode, blocks or ("encoder.layer.*",))
    assert names and all(n.startswith("encoder.") for n in names)
    meters = {}
    for key, model in (("none", base), ("ckpt", ckpt)):
        model.train()
        torch.manual_seed(1)  # the same dropout masks; checkpointing replays them
        meters[key] = tr.SavedTensorMeter(model)
        tr.forward_backward(model, batch, meter=meters[key])
    assert meters["ckpt"].activation_bytes < meters["none"].activation_bytes
    grads = dict(ckpt.named_parameters())
    for name, p in base.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpointing_picks_outermost_blocks_and_can_be_undone():
    model = tiny_classifier()
    names = tr.set_checkpointing_(model, "blocks", ("encoder.layer.*", "encoder.layer.0.output"))
    assert names == ["encoder.encoder.layer.0", "encoder.encoder.layer.1"]
    assert tr.set_checkpointing_(model, "none") == []
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_unknown_block_name_is_a_clear_error():
    model = tiny_classifier()
    with pytest.raises(tr.TrainError, match=r"no module .* named 'encoder.layers.\*'.*"
                                            r"encoder.layer.0"):
        tr.set_checkpointing_(model, "blocks", ("encoder.layers.*",))
    data = [tiny_batch()]
    with pytest.raises(DeploylabError, match="named 'decoder'"):
        tr.Trainer(model, data, tr.TrainConfig(checkpointing="blocks", blocks=("decoder",)))


# ----------------------------------------------------------------------------- training


def test_bf16_autocast_trains_and_keeps_fp32_master_weights():
    model = tiny_classifier()
    result = tr.train(model, [tiny_batch(seed=i) for i in range(2)],
                      tr.TrainConfig(steps=2, precision="bf16", lr=1e-3))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    rec = result.records[-1]
    assert rec["weight_copy_mb"] > 0 and rec["activation_mb"] > 0
    assert torch.isfinite(torch.tensor(result.final_loss))


def test_training_is_seeded_and_interleaving_does_not_matter():
    data = [tiny_batch(seed=i) for i in range(3)]
    cfg = tr.TrainConfig(steps=3, lr=1e-3, seed=7)
    alone = tr.train(tiny_classifier(), data, cfg)
    a, b = tr.Trainer(tiny_classifier(), data, cfg), tr.Trainer(tiny_classifier(), data, cfg)
    for _ in range(3):
        a.step()
        torch.rand(100)  # someone else draws random numbers in between
        b.step()
    losses = [r["loss"] for r in alone.records]
    assert [r["loss"] for r in a.records] == losses == [r["loss"] for r in b.records]


def test_accumulation_matches_one_big_batch():
    full = tiny_batch(b=4, seed=3)
    halves = [{k: v[:2] for k, v in full.items()}, {k: v[2:] for k, v in full.items()}]
    one, two = tiny_classifier(dropout=0.0), tiny_classifier(dropout=0.0)
    tr.train(one, [full], tr.TrainConfig(steps=1, lr=1e-2))
    res = tr.train(two, halves, tr.TrainConfig(steps=1, lr=1e-2, accumulation=2))
    for p, q in zip(one.parameters(), two.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert res.table().shape[0] == 1


def test_records_and_result_fields():
    cfg = tr.TrainConfig(steps=3, checkpointing="transformers")
    res = tr.train(tiny_classifier(), [tiny_batch()], cfg)
    table = res.table()
    assert list(table.index) == [1, 2, 3]
    assert {"time_ms", "loss", "activation_mb", "weight_copy_mb", "peak_mb"} <= set(table)
    assert res.peak_mb > 0 and res.step_ms_p90 >= res.step_ms_p50 > 0
    assert res.checkpointed == ["encoder.encoder.layer.0", "encoder.encoder.layer.1"]
    ev = tr.evaluate(res_model := tiny_classifier(), [tiny_batch()])
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["loss"] > 0 and res_model.training


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,message", [
    ({"precision": "fp16"}, r"fp16 autocast needs a CUDA GPU.*bf16"),
    ({"precision": "int8"}, r"precision must be one of"),
    ({"accumulation": 0}, r"accumulation must be an int >= 1"),
    ({"accumulation": 1.5}, r"accumulation must be an int >= 1"),
    ({"checkpointing": "all"}, r"checkpointing must be one of"),
    ({"checkpointing": "blocks", "blocks": ()}, r"needs at least one block name"),
    ({"steps": 0}, r"steps must be an int >= 1"),
    ({"lr": -1.0}, r"lr must be a number > 0"),
])
def test_bad_switches_fail_clearly(kwargs, message):
    with pytest.raises(tr.TrainError, match=message):
        tr.TrainConfig(**kwargs)


def test_cuda_switches_without_a_gpu_fail_clearly():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(tr.TrainError, match="no CUDA GPU"):
        tr.Trainer(tiny_classifier(), [tiny_batch()], tr.TrainConfig.preset("fp16-amp"))
    with pytest.raises(tr.TrainError, match="no CUDA GPU"):
        tr.Trainer(tiny_classifier(), [tiny_batch()],
                   tr.TrainConfig(precision="bf16", device="cuda"))


def test_presets_and_bad_data():
    assert set(tr.PRESETS) >= {"fp32", "checkpointing", "bf16-autocast", "checkpointing-bf16"}
    assert tr.TrainConfig.preset("checkpointing-bf16", steps=3).steps == 3
    with pytest.raises(tr.TrainError, match="unknown preset 'fast'"):
        tr.TrainConfig.preset("fast")
    with pytest.raises(tr.TrainError, match="non-empty list of batches"):
        tr.Trainer(tiny_classifier(), [], tr.TrainConfig())
    assert isinstance(tr.bf16_supported(), bool)
