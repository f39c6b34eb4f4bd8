"""Training the teacher, distilling the student, exporting both, quantizing the student.

The trainers are the kit's own: `_compress_fit.fit_classifier` (Adam, cross-entropy, a
tqdm bar, a loss curve) for the teacher and `deploylab.distill` (Hinton soft targets at a
temperature, the teacher's targets computed once) for the student. Checkpoints are
safetensors files under `cache_dir("speech")`, keyed by the data set, the model sizes and the
training settings, so a re-run loads them and a changed setting retrains.

int8: post-training static quantization through `deploylab.quantize` (ONNX Runtime QDQ,
per-channel weights, calibrated on training clips); `mode="auto"` adds quantization-aware
training (the library's fake-quantized Conv/Linear wrappers, fine-tuned with the teacher's
soft targets) when post-training quantization loses more than `max_drop` accuracy.

Example:
    >>> run = training.train_all(ds, training.TrainConfig.smoke())
    >>> run.teacher, run.student, run.paths["student-int8"]
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..._files import atomic_path
from ...errors import DeploylabError
from ...settings import cache_dir
from .features import spec_augment
from .models import DSCNN, Wav2Vec2Teacher, fold_batchnorm

__all__ = ["QUANT_MODES", "TrainConfig", "TrainedModels", "TrainingError", "accuracy",
           "calibration_feeds", "export_models", "first_convolutions", "onnx_folder",
           "onnx_logits", "quantize_student", "train_all", "train_student", "train_teacher"]

QUANT_MODES = ("auto", "ptq", "qat")
INPUT_SHAPE = (1, 1, 40, 98)


class TrainingError(DeploylabError):
    """A training or quantization setting that cannot work."""


@dataclass(frozen=True)
class TrainConfig:
    """Model sizes and training settings.

    Args:
        teacher_hidden / teacher_layers / teacher_heads / teacher_ffn: transformer sizes.
        student_channels / student_blocks: DS-CNN sizes.
        student_stride (tuple, default (4, 2)): the first convolution's stride over (mel
            bins, frames). Time resolution is what matters: (4, 2) keeps 25 steps of the
            second for the blocks (at 5 mel bands), and a label-only student reached 0.903 on
            held-out voices where (2, 4), 13 steps at 10 bands, reached 0.874, for about the
            same cost per clip.
        teacher_dropout (float, default 0.0): the transformer's hidden and attention dropout.
            SpecAugment already regularizes it: without dropout the teacher reached the same
            held-out accuracy (0.884 after 10 epochs) in 366 s instead of 595, since drawing
            dropout masks is a third of a CPU training step.
        teacher_epochs / student_epochs / qat_epochs (int): passes over the training set.
            The student gets 16: a distillation step (the teacher scores the batch, the
            student learns in channels-last layout, 2 threads) costs about 80 ms, and 16
            epochs reached 0.914 on held-out voices where 10 reached 0.900.
        lr_teacher / lr_student (float): Adam learning rates.
        batch_size (int, default 64): clips per step.
        augment (bool, default True): `features.spec_augment` on every training batch.
        warmup (float | None, default 0.1): share of the steps spent warming the learning
            rate up before it decays linearly to 10%; None keeps it constant.
        temperature / alpha (float): distillation softness and soft-target weight. alpha
            is 0.3: with the defaults the student comes close to its teacher, and a light
            weight on the soft targets served it best (held-out accuracy 0.908 at 0.3, 0.902
            at 0.5, 0.897 at 0.7, 0.903 on the labels alone).
        quant_mode (str, default "auto"): "ptq", "qat" or "auto" (QAT if PTQ drops more
            than max_drop).
        max_drop (float, default 0.005): accuracy the int8 student may lose (0.5 points).
        int8_first_layer (bool, default False): quantize the first convolution too (see
            `quantize_student` for why it stays float by default).
        seed (int, default 0): model initialization and data order.
    """

    teacher_hidden: int = 128
    teacher_layers: int = 4
    teacher_heads: int = 4
    teacher_ffn: int = 256
    teacher_dropout: float = 0.0
    student_channels: int = 64
    student_blocks: int = 4
    student_stride: tuple[int, int] = (4, 2)
    teacher_epochs: int = 10
    student_epochs: int = 16
    qat_epochs: int = 2
    lr_teacher: float = 1e-3
    lr_student: float = 3e-3
    batch_size: int = 64
    augment: bool = True
    warmup: float | None = 0.1
    temperature: float = 4.0
    alpha: float = 0.3
    quant_mode: str = "auto"
    max_drop: float = 0.005
    int8_first_layer: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "student_stride", tuple(self.student_stride))
        if (len(self.student_stride) != 2 or not all(isinstance(v, int) and 1 <= v <= 4
                                                      for v in self.student_stride)):
            raise TrainingError(f"student_stride must be two ints in 1..4 (mel bins, frames), "
                                f"got {self.student_stride!r}")
        if self.quant_mode not in QUANT_MODES:
            raise TrainingError(f"quant_mode must be one of {QUANT_MODES}, got "
                                f"{self.quant_mode!r}")
        if self.teacher_hidden % self.teacher_heads or self.teacher_hidden % 8:
            raise TrainingError("teacher_hidden must be a multiple of teacher_heads and of 8 "
                                "(the positional convolution's 8 groups)")
        for name in ("teacher_epochs", "student_epochs", "qat_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise TrainingError(f"{name} must be an int >= 0")

    @classmethod
    def smoke(cls, **kw) -> TrainConfig:
        return cls(**{"teacher_hidden": 32, "teacher_layers": 1, "teacher_heads": 2,
                      "teacher_ffn": 64, "student_channels": 16, "student_blocks": 2,
                      "teacher_epochs": 1, "student_epochs": 1, "qat_epochs": 1, **kw})

    def teacher(self, n_classes: int) -> Wav2Vec2Teacher:
        torch.manual_seed(self.seed)
        return Wav2Vec2Teacher(n_classes, hidden=self.teacher_hidden, layers=self.teacher_layers,
                               heads=self.teacher_heads, ffn=self.teacher_ffn,
                               dropout=self.teacher_dropout)

    def student(self, n_classes: int) -> DSCNN:
        torch.manual_seed(self.seed + 1)
        return DSCNN(n_classes, channels=self.student_channels, blocks=self.student_blocks,
                     first_stride=self.student_stride)

    @property
    def augmentation(self):
        """The batch transform the trainers apply (None when `augment` is off)."""
        return spec_augment if self.augment else None

    def key(self, data_key: str, *names: str) -> str:
        fields = {k: v for k, v in asdict(self).items() if any(k.startswith(n) for n in names)
                  or k in ("seed", "batch_size", "augment", "warmup")}
        text = json.dumps({"data": data_key, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def accuracy(predict, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of a torch module or a callable (np [B,1,40,98] -> logits)."""
    from ...cnn import predict as batched

    logits = batched(predict, x, batch_size=batch_size)
    return float((logits.argmax(1) == np.asarray(y)).mean())


def _cached(model, path: Path, fit) -> tuple[torch.nn.Module, list[dict]]:
    """Load a checkpoint (and its history) if there, else fit and save it."""
    from safetensors.torch import load_file, save_file

    hist = path.with_suffix(".json")
    if path.is_file() and hist.is_file():
        model.load_state_dict(load_file(path))
        return model.eval(), json.loads(hist.read_text())
    history = fit(model)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    with atomic_path(hist) as tmp:
        tmp.write_text(json.dumps(history))
    return model.eval(), history


def train_teacher(data, config: TrainConfig, *, progress: bool = True):
    """The transformer teacher trained on the labels (2 threads: its matmuls are big
    enough to share). Returns (model, history)."""
    from ..._compress_fit import fit_classifier

    path = cache_dir("speech") / f"teacher-{config.key(data.config.key(), 'teacher')}.safetensors"

    def fit(model):
        return fit_classifier(model, data, epochs=config.teacher_epochs, lr=config.lr_teacher,
                              batch_size=config.batch_size, seed=config.seed,
                              progress=progress, desc="teacher", threads=2,
                              augment=config.augmentation, warmup=config.warmup)

    return _cached(config.teacher(len(data.labels)), path, fit)


def train_student(data, teacher, config: TrainConfig, *, alpha: float | None = None,
                  progress: bool = True):
    """The DS-CNN distilled from the teacher (alpha=0: trained on labels alone, the
    comparison a distilled student must beat). Returns (model, history)."""
    from ... import distill

    alpha = config.alpha if alpha is None else alpha
    key = config.key(data.config.key(), "teacher", "student", "lr", "temperature")
    path = cache_dir("speech") / f"student-{key}-a{alpha:g}.safetensors"

    def fit(model):
        cfg = distill.ClassifierDistillConfig(
            epochs=config.student_epochs, lr=config.lr_student, batch_size=config.batch_size,
            temperature=config.temperature, alpha=alpha, seed=config.seed, progress=progress,
            augment=config.augmentation, warmup=config.warmup, threads=2)
        return distill.distill(model, teacher, cfg, data=data).history

    return _cached(config.student(len(data.labels)), path, fit)


def export_models(models: dict[str, torch.nn.Module], folder: Path) -> dict[str, Path]:
    """Each model to ONNX through `export.export_onnx` (parity-gated), BN folded first for
    DS-CNNs. Returns name -> path; `export_models.reports` holds the parity reports."""
    from ... import export

    paths, export_models.reports = {}, {}
    for name, model in models.items():
        model = fold_batchnorm(model) if isinstance(model, DSCNN) else model.eval()
        out = folder / f"{name}.onnx"
        if out.is_file():  # cached: the gate runs again on the file that is there
            paths[name] = out
            export_models.reports[name] = export.check_parity(model, out,
                                                              input_shape=INPUT_SHAPE)
            continue
        paths[name] = export.export_onnx(model, export.ExportConfig(input_shape=INPUT_SHAPE,
                                                                    path=out))
        export_models.reports[name] = export.export_onnx.last_report
    return paths


export_models.reports = {}


def onnx_logits(path, threads: int = 1):
    """A callable np [B, 1, 40, 98] -> logits over an ONNX Runtime session."""
    from ... import export

    sess = export.session(path, threads=threads)
    return lambda x: sess.run(None, {"input": np.ascontiguousarray(x, np.float32)})[0]


def calibration_feeds(data, n: int = 32, batch: int = 16) -> list[dict]:
    """`n` feeds of `batch` training clips (a fixed random draw) for static int8."""
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data.y_train))[:n * batch]
    x = data.x_train.numpy()[idx]
    return [{"input": x[i:i + batch]} for i in range(0, len(x), batch)]


def _qat(student, teacher, data, config: TrainConfig, out: Path, progress: bool) -> Path:
    from ... import export, quantize
    from ..._compress_fit import fit_classifier

    qmodel = quantize.prepare_qat(fold_batchnorm(student), 8)
    quantize._calibrate_qat(qmodel, data.x_train[:512])
    fit_classifier(qmodel, data, epochs=config.qat_epochs, lr=config.lr_student / 10,
                   batch_size=config.batch_size, teacher=teacher,
                   temperature=config.temperature, alpha=config.alpha, seed=config.seed,
                   progress=progress, desc="QAT")
    qmodel.eval()
    # QDQ rounding differs from fake quantization by a step now and then: the gate is
    # top-1 agreement on the test clips, not the random-input parity of float exports
    path = export.export_onnx(qmodel, export.ExportConfig(input_shape=INPUT_SHAPE, path=out,
                                                          parity=None))
    agree = float((onnx_logits(path)(data.x_test.numpy()).argmax(1) ==
                   qmodel(data.x_test).argmax(1).numpy()).mean())
    if agree < 0.97:
        out.unlink(missing_ok=True)
        raise TrainingError(f"the QAT graph agrees with the fake-quantized model on only "
                            f"{agree:.1%} of test clips; train QAT longer (qat_epochs)")
    return path


def first_convolutions(path) -> tuple[str, ...]:
    """Names of the Conv nodes that read the graph's input (the DS-CNN's first layer)."""
    import onnx

    graph = onnx.load(str(path)).graph
    inputs = {i.name for i in graph.input}
    return tuple(n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs)


def quantize_student(student, teacher, data, fp32_path: Path, config: TrainConfig, *,
                     progress: bool = True) -> dict:
    """int8 student as `config.quant_mode` says. Returns {"path", "method", "ptq_accuracy",
    "qat_accuracy", "fp32_accuracy", "float_nodes"}.

    Post-training quantization keeps the first convolution in float unless
    `config.int8_first_layer`: with one input channel it is a large im2col and a thin matrix
    product, which ONNX Runtime 1.32 ran about 2x slower in int8 than in fp32 (46 vs 24 us
    per clip, `export.profile_nodes`). It holds 1.7k of the student's weights (about 4 KB).
    """
    from ... import quantize

    x, y = data.x_test.numpy(), data.y_test.numpy()
    fp32 = accuracy(onnx_logits(fp32_path), x, y)
    keep = () if config.int8_first_layer else first_convolutions(fp32_path)
    info = {"fp32_accuracy": fp32, "ptq_accuracy": None, "qat_accuracy": None,
            "float_nodes": list(keep)}
    if config.quant_mode in ("auto", "ptq"):
        q = quantize.quantize(fp32_path, quantize.StaticInt8Config(
            calibration=calibration_feeds(data), per_channel=True, exclude=keep,
            path=fp32_path.with_name("student-int8-ptq.onnx")))
        info["ptq_accuracy"] = accuracy(onnx_logits(q.path), x, y)
        info.update(path=q.path, method="ptq")
        if config.quant_mode == "ptq" or fp32 - info["ptq_accuracy"] <= config.max_drop:
            return info
    out = fp32_path.with_name("student-int8-qat.onnx")
    path = out if out.is_file() else _qat(student, teacher, data, config, out, progress)
    info["qat_accuracy"] = accuracy(onnx_logits(path), x, y)
    info.update(path=path, method="qat", float_nodes=[])  # QAT quantizes every layer
    return info


@dataclass
class TrainedModels:
    """What `train_all` produced."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    paths: dict[str, Path]
    history: dict[str, list[dict]]
    quant: dict
    seconds: float
    parity: dict = field(default_factory=dict)


def onnx_folder(data, config: TrainConfig) -> Path:
    """Where the exported and quantized graphs of these models are cached (keyed by every
    setting that changes the teacher or the student)."""
    return cache_dir("speech", "onnx", config.key(data.config.key(), "teacher", "student",
                                                  "lr", "temperature", "alpha"))


def train_all(data, config: TrainConfig | None = None, *, progress: bool = True) -> TrainedModels:
    """Teacher, distilled student, both exported, student quantized (all cached)."""
    config = config or TrainConfig()
    start = time.perf_counter()
    teacher, t_hist = train_teacher(data, config, progress=progress)
    student, s_hist = train_student(data, teacher, config, progress=progress)
    folder = onnx_folder(data, config)
    paths = export_models({"teacher-fp32": teacher, "student-fp32": student}, folder)
    parity = dict(export_models.reports)
    quant = quantize_student(student, teacher, data, paths["student-fp32"], config,
                             progress=progress)
    paths["student-int8"] = Path(quant["path"])
    return TrainedModels(teacher, student, paths, {"teacher": t_hist, "student": s_hist},
                         quant, time.perf_counter() - start, parity)
