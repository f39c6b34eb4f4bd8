"""deploylab.distill on tiny models: students from teachers, losses that fall, safe checkpoints."""

import numpy as np
import pytest
import torch

import deploylab
from deploylab import cnn, distill, measure

VOCAB = 30522  # MiniLM's tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    with measure.threads(1):  # tiny layers: one thread is fastest (and CI cores are shared)
        yield


def tiny_bert(layers: int = 4, seed: int = 0):
    from transformers import BertConfig, BertModel

    deploylab.seed_everything(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from deploylab import assets

    return AutoTokenizer.from_pretrained(assets.path("minilm"))


TEXTS = ["open a file for reading", "sort a list in place", "return the square root of x",
         "parse a JSON document", "join path components", "compile a regular expression",
         "create a temporary directory", "format a date as a string"]


def test_student_starts_from_the_chosen_teacher_layers(tokenizer):
    teacher = tiny_bert(4)
    student = distill.student_from_teacher(teacher, (1, 3))
    assert distill.depth(student) == 2 and distill.depth(teacher) == 4
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert student.config.deploylab_teacher_layers == [1, 3]
    torch.testing.assert_close(student.encoder.layer[1].output.dense.weight,
                               teacher.encoder.layer[3].output.dense.weight)
    assert student.encoder.layer[1].output.dense.weight is not \
        teacher.encoder.layer[3].output.dense.weight  # a copy: training it leaves the teacher
    full = distill.student_from_teacher(teacher, range(4))
    x = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(full(**x).last_hidden_state, teacher(**x).last_hidden_state)


def test_a_student_deeper_than_its_teacher_is_refused(tokenizer):
    teacher = tiny_bert(2)
    with pytest.raises(distill.DistillError, match="3-layer student is deeper than its 2-layer"):
        distill.student_from_teacher(teacher, (0, 1, 2))
    with pytest.raises(distill.DistillError, match=r"deeper than its teacher \(2 layers\)"):
        distill.distill(tiny_bert(3), teacher, distill.EncoderDistillConfig.quick(),
                        data=TEXTS, tokenizer=tokenizer)
    with pytest.raises(distill.DistillError, match="distinct increasing"):
        distill.student_from_teacher(teacher, (1, 0))
    with pytest.raises(distill.DistillError, match="tokenizer"):
        distill.distill(tiny_bert(1), teacher, distill.EncoderDistillConfig.quick(), data=TEXTS)


@pytest.mark.parametrize("hidden_weight", [0.0, 1.0])
def test_encoder_distillation_loss_decreases(tokenizer, hidden_weight):
    teacher = tiny_bert(4)
    student = distill.student_from_teacher(teacher, (0, 2))
    with torch.no_grad():  # start away from the teacher, so there is something to learn
        for p in student.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    config = distill.EncoderDistillConfig.quick(steps=30, batch_size=8, lr=1e-3,
                                                hidden_weight=hidden_weight)
    result = distill.distill(student, teacher, config, data=TEXTS, tokenizer=tokenizer)
    losses = result.losses
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])
    assert result.layer_map == (0, 2) and not student.training


def test_task_stage_fine_tunes_on_the_train_pairs_after_distilling(tokenizer):
    teacher = tiny_bert(4)
    student = distill.student_from_teacher(teacher, (0, 2))
    config = distill.EncoderDistillConfig.quick(steps=3, task_steps=40, lr=3e-3)
    result = distill.distill(student, teacher, config, tokenizer=tokenizer)
    assert [h["stage"] for h in result.history] == ["distill"] * 3 + ["task"] * 40
    assert [h["step"] for h in result.history] == list(range(1, 44))
    seconds = [h["seconds"] for h in result.history]
    assert seconds == sorted(seconds)  # one clock over both stages
    task = [h["loss"] for h in result.history[3:]]
    assert np.mean(task[-5:]) < np.mean(task[:5])  # in-batch negatives: it learns the task


def test_classifier_distillation_with_temperature():
    data = cnn.load_digits_split(seed=0)
    deploylab.seed_everything(0)
    teacher = cnn.DigitsCNN(channels=(8, 8, 16), hidden=32)
    cnn.train_cnn(teacher, data, epochs=3)
    student = cnn.DigitsCNN(channels=(4, 4, 8), hidden=16)
    result = distill.distill(student, teacher, distill.ClassifierDistillConfig.quick(epochs=4),
                             data=data)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.losses[-1] < result.losses[0]
    assert result.history[-1]["test_accuracy"] > 0.3  # chance is 0.1


def test_classifier_augment_sees_every_training_batch_and_the_schedule_decays(monkeypatch):
    data = cnn.load_digits_split(seed=0)
    deploylab.seed_everything(0)
    teacher = cnn.DigitsCNN(channels=(4, 4, 8), hidden=16)
    seen = []

    def augment(x, generator):
        seen.append(len(x))
        return x + 0.01 * torch.randn(x.shape, generator=generator)

    student = cnn.DigitsCNN(channels=(4, 4, 8), hidden=16)
    lrs = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    distill.distill(student, teacher, distill.ClassifierDistillConfig.quick(
        epochs=2, lr=1e-2, augment=augment, warmup=0.25), data=data)
    assert sum(seen) == 2 * len(data.y_train)  # every clip of both epochs went through it
    assert max(lrs) == pytest.approx(1e-2) and lrs[0] < lrs[len(lrs) // 4] > lrs[-1]
    assert 0.1 * max(lrs) <= lrs[-1] < 0.15 * max(lrs)  # linear decay towards 10%


def test_with_augmentation_the_teacher_scores_the_augmented_batch():
    data = cnn.load_digits_split(seed=0)
    deploylab.seed_everything(0)
    teacher = cnn.DigitsCNN(channels=(4, 4, 8), hidden=16).eval()
    fed = []
    real_forward = teacher.forward

    def spy(x):
        fed.append(x.clone())
        return real_forward(x)

    teacher.forward = spy
    shifted = []

    def augment(x, generator):
        shifted.append(x + 1.0)
        return shifted[-1]

    distill.distill(cnn.DigitsCNN(channels=(4, 4, 8), hidden=16), teacher,
                    distill.ClassifierDistillConfig.quick(epochs=1, augment=augment), data=data)
    assert len(fed) == len(shifted)  # one teacher call per batch, none on the clean set
    assert all(torch.equal(a, b) for a, b in zip(fed, shifted, strict=True))


def test_a_conv_student_trains_channels_last_on_the_asked_threads_and_comes_back_plain(
        monkeypatch):
    data = cnn.load_digits_split(seed=0)
    deploylab.seed_everything(0)
    teacher = cnn.DigitsCNN(channels=(4, 4, 8), hidden=16)
    student = cnn.DigitsCNN(channels=(4, 4, 8), hidden=16)
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    deep = [c for c in convs if c.in_channels > 1]  # one input channel: both layouts agree
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **kw):
        seen.append((torch.get_num_threads(), all(
            c.weight.is_contiguous(memory_format=torch.channels_last)
            and not c.weight.is_contiguous() for c in deep)))
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    before = torch.get_num_threads()
    distill.distill(student, teacher, distill.ClassifierDistillConfig.quick(epochs=1, threads=2),
                    data=data)
    assert deep and seen and set(seen) == {(2, True)}  # every step: two threads, NHWC
    assert torch.get_num_threads() == before
    assert all(c.weight.is_contiguous() for c in convs)  # handed back in the default layout
    x = data.x_test[:8]
    plain = cnn.DigitsCNN(channels=(4, 4, 8), hidden=16)
    plain.load_state_dict(student.state_dict())
    torch.testing.assert_close(student.eval()(x), plain.eval()(x))


@pytest.mark.parametrize("bad", [dict(temperature=0), dict(alpha=1.5), dict(epochs=0),
                                 dict(lr=-1.0), dict(warmup=1.0), dict(threads=0)])
def test_bad_classifier_settings_are_refused(bad):
    with pytest.raises(distill.DistillError):
        distill.ClassifierDistillConfig(**bad)


def test_bad_encoder_settings_are_refused(tokenizer):
    with pytest.raises(distill.DistillError, match="steps"):
        distill.EncoderDistillConfig(steps=0)
    with pytest.raises(distill.DistillError, match="task_steps"):
        distill.EncoderDistillConfig(task_steps=-1)
    with pytest.raises(distill.DistillError, match="data=None"):
        distill.distill(tiny_bert(1), tiny_bert(2), distill.EncoderDistillConfig.quick(
            task_steps=2), data=TEXTS, tokenizer=tokenizer)
    with pytest.raises(distill.DistillError, match="layer_map"):
        distill.distill(tiny_bert(2), tiny_bert(4),
                        distill.EncoderDistillConfig.quick(layer_map=(0, 9), hidden_weight=1.0),
                        data=TEXTS, tokenizer=tokenizer)


def test_checkpoints_are_safetensors_and_round_trip(tokenizer, tmp_path):
    student = distill.student_from_teacher(tiny_bert(4), (0, 3))
    history = [{"step": 1, "loss": 0.5}]
    folder = distill.save_checkpoint(student, tmp_path / "s", history=history)
    assert (folder / "model.safetensors").is_file()
    assert not [p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    loaded, meta = distill.load_checkpoint(folder)
    assert meta["history"] == history and distill.depth(loaded) == 2
    x = tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).last_hidden_state, student(**x).last_hidden_state)
    model = cnn.DigitsCNN(channels=(4, 4, 8), hidden=8)
    distill.save_checkpoint(model, tmp_path / "c")
    again, _ = distill.load_checkpoint(tmp_path / "c", cnn.DigitsCNN(channels=(4, 4, 8), hidden=8))
    torch.testing.assert_close(again.classifier[-1].weight, model.classifier[-1].weight)


def test_plot_loss_draws_one_line_per_run():
    import matplotlib

    matplotlib.use("Agg")
    ax = distill.plot_loss({"a": [{"step": i, "loss": 1 / i} for i in range(1, 30)],
                            "b": [{"epoch": i, "loss": 1 / i} for i in range(1, 5)]})
    assert len(ax.lines) == 2
