"""Knowledge distillation: train a small student to behave like a big teacher.

One verb, `distill(student, teacher, config, data=...)`, two configs:

- `EncoderDistillConfig`: sentence encoders (BERT-like, mean-pooled). The student matches the
  teacher's sentence embeddings (1 - cosine) and, optionally, the hidden states of chosen
  teacher layers (MSE). `student_from_teacher(teacher, layers=(0, 2, 4))` builds a shallower
  student initialized from a subset of the teacher's layers (DistilBERT's recipe), so it
  starts close to the teacher instead of from noise.
- `ClassifierDistillConfig`: classifiers. Soft targets: the teacher's softmax at a
  temperature T (which shows which wrong classes are *almost* right), mixed with the hard
  labels (Hinton et al. 2015).

Training shows a tqdm bar and returns the loss curve (`DistillResult.history`, `plot_loss`).
Checkpoints are safetensors files plus JSON, never pickles (`save_checkpoint`,
`load_checkpoint`); `minilm_student` trains the chapter's student once and caches it under
`deploylab.cache_dir("students")`, so notebooks and benchmarks share it.

Example:
    >>> from deploylab import assets, distill
    >>> tokenizer, teacher = assets.load_encoder("minilm")
    >>> student = distill.student_from_teacher(teacher, layers=(0, 2, 4))
    >>> result = distill.distill(student, teacher, distill.EncoderDistillConfig(steps=300),
    ...                          tokenizer=tokenizer)
    >>> distill.plot_loss(result.history)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import DeploylabError

__all__ = [
    "DistillError",
    "EncoderDistillConfig",
    "ClassifierDistillConfig",
    "DistillResult",
    "distill",
    "student_from_teacher",
    "depth",
    "save_checkpoint",
    "load_checkpoint",
    "plot_loss",
    "minilm_student",
]


class DistillError(DeploylabError):
    """A distillation request that cannot work (a student deeper than its teacher, bad
    settings, a missing tokenizer or data)."""


def _positive_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DistillError(f"{name} must be an int >= 1, got {v!r}")


@dataclass(frozen=True)
class EncoderDistillConfig:
    """Teacher -> student for sentence encoders.

    Args:
        steps (int, default 300): optimizer steps.
        batch_size (int, default 32): texts per step.
        lr (float, default 1e-4): peak AdamW learning rate (linear warm-up and decay).
        max_length (int, default 64): tokens per training text.
        hidden_weight (float, default 0.0): weight of the hidden-state MSE; 0 trains on the
            sentence embeddings alone (the teacher's embeddings are then computed once, up
            front, which halves the cost).
        layer_map (tuple[int, ...] | None, default None): for each student layer, the teacher
            layer whose output it imitates; None uses the layers the student was initialized
            from (`student_from_teacher` records them), else evenly spaced ones.
        task_steps (int, default 0): after distilling, this many steps of fine-tuning on the
            stdlib task's *train* pairs (query -> docstring, in-batch negatives): the task
            stage of task-specific distillation (TinyBERT's second stage). 0 keeps the
            student task-agnostic, a copy of the teacher's general embedding space.
        seed (int, default 0): data order.
        progress (bool, default True): a tqdm bar.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    max_length: int = 64
    hidden_weight: float = 0.0
    layer_map: tuple[int, ...] | None = None
    task_steps: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.task_steps, int) or self.task_steps < 0:
            raise DistillError(f"task_steps must be an int >= 0, got {self.task_steps!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise DistillError(f"lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.hidden_weight, (int, float)) and self.hidden_weight >= 0):
            raise DistillError(f"hidden_weight must be >= 0, got {self.hidden_weight!r}")
        if self.layer_map is not None:
            object.__setattr__(self, "layer_map", tuple(int(i) for i in self.layer_map))

    @classmethod
    def embedding(cls, steps: int = 300, **kw) -> EncoderDistillConfig:
        """Match the sentence embeddings only (cheapest)."""
        return cls(steps=steps, hidden_weight=0.0, **kw)

    @classmethod
    def hidden_states(cls, steps: int = 300, weight: float = 1.0, **kw) -> EncoderDistillConfig:
        """Also match each student layer's output to its teacher layer's."""
        return cls(steps=steps, hidden_weight=weight, **kw)

    @classmethod
    def quick(cls, **kw) -> EncoderDistillConfig:
        """A handful of small steps: smoke runs and tests."""
        return cls(**{"steps": 4, "batch_size": 8, "max_length": 32, "progress": False, **kw})


@dataclass(frozen=True)
class ClassifierDistillConfig:
    """Teacher -> student for classifiers (logits out).

    Args:
        epochs (int, default 20): passes over the training split.
        lr (float, default 3e-3): Adam learning rate.
        batch_size (int, default 64): examples per step.
        temperature (float, default 4.0): T > 0 of the softened softmax; higher shows more
            of the teacher's "dark knowledge" (its ranking of wrong classes).
        alpha (float, default 0.7): weight of the soft-target term in [0, 1]; 0 is plain
            training on labels (the baseline a distilled student must beat).
        seed (int, default 0): data order.
        progress (bool, default True): a tqdm bar.
        augment (callable | None, default None): `augment(x, generator) -> x` applied to
            each training batch (e.g. `speech.spec_augment`); the teacher scores the same
            augmented batch, so its targets match what the student sees.
        warmup (float | None, default None): with a fraction of the steps, a learning-rate
            schedule (linear warm-up, then linear decay to 10%); None keeps it constant.
        threads (int | None, default 1): torch threads while training (None keeps torch's
            count). One suits a small student alone; a teacher that scores every augmented
            batch is big enough to share two.
    """

    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0
    progress: bool = True
    augment: Callable | None = None
    warmup: float | None = None
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if self.warmup is not None and not (isinstance(self.warmup, (int, float))
                                            and 0.0 <= self.warmup < 1.0):
            raise DistillError(f"warmup must be None or a fraction in [0, 1), got "
                               f"{self.warmup!r}")
        for name in ("epochs", "batch_size"):
            _positive_int(name, getattr(self, name))
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise DistillError(f"temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise DistillError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise DistillError(f"lr must be > 0, got {self.lr!r}")

    @classmethod
    def hard_labels(cls, **kw) -> ClassifierDistillConfig:
        """No teacher signal (alpha=0): the student trained alone, for comparison."""
        return cls(alpha=0.0, **kw)

    @classmethod
    def quick(cls, **kw) -> ClassifierDistillConfig:
        return cls(**{"epochs": 2, "progress": False, **kw})


@dataclass
class DistillResult:
    """What `distill` did.

    Attributes:
        history (list[dict]): the loss curve: per step (encoders) or epoch (classifiers).
        seconds (float): wall-clock training time (teacher targets included).
        config (object): the config used.
        layer_map (tuple[int, ...] | None): teacher layer per student layer (encoders).
    """

    history: list[dict]
    seconds: float
    config: object = None
    layer_map: tuple[int, ...] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


# ------------------------------------------------------------------------------ students


def _layers(model):
    from .prune import _bert_layers

    return _bert_layers(model)


def depth(model) -> int:
    """Layers of a model: transformer blocks for encoders, Conv/Linear layers otherwise."""
    import torch.nn as nn

    layers = _layers(model)
    if layers is not None:
        return len(layers)
    return sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) for m in model.modules())


def student_from_teacher(teacher, layers: Sequence[int]):
    """A shallower copy of a BERT-like encoder keeping only the teacher layers `layers`.

    Embeddings, the kept layers' weights and the pooler are copied; the teacher is not
    changed. The chosen layers are recorded in `student.config.deploylab_teacher_layers`
    (the default `layer_map` of hidden-state distillation).

    Args:
        teacher (transformers.PreTrainedModel): e.g. all-MiniLM-L6-v2 (6 layers).
        layers (Sequence[int]): teacher layer indices in increasing order, e.g. (0, 2, 4).

    Returns:
        the student, in eval mode.

    Raises:
        DistillError: more layers than the teacher has, an index out of range, or repeats.
    """
    import torch.nn as nn

    t_layers = _layers(teacher)
    if t_layers is None:
        raise DistillError(f"student_from_teacher needs a BERT-like encoder (encoder.layer); "
                           f"got a {type(teacher).__name__}")
    layers = [int(i) for i in layers]
    n = len(t_layers)
    if len(layers) > n:
        raise DistillError(f"a {len(layers)}-layer student is deeper than its {n}-layer "
                           f"teacher; choose at most {n} of the teacher's layers")
    if not layers or any(not 0 <= i < n for i in layers) or sorted(set(layers)) != layers:
        raise DistillError(f"layers must be distinct increasing indices in 0..{n - 1}, "
                           f"got {layers}")
    student = copy.deepcopy(teacher)
    s_layers = _layers(student)
    kept = nn.ModuleList([s_layers[i] for i in layers])
    for new_i, layer in enumerate(kept):  # attention caches index layers by position
        if hasattr(layer.attention.self, "layer_idx"):
            layer.attention.self.layer_idx = new_i
    student.encoder.layer = kept
    student.config = copy.deepcopy(teacher.config)
    student.config.num_hidden_layers = len(layers)
    student.config.deploylab_teacher_layers = layers
    return student.eval()


def _check_depth(student, teacher) -> None:
    s, t = depth(student), depth(teacher)
    if s > t:
        raise DistillError(f"the student ({s} layers) is deeper than its teacher ({t} layers); "
                           "a student should be smaller: use fewer layers "
                           "(student_from_teacher(teacher, layers=...))")


def _layer_map(student, teacher, config: EncoderDistillConfig) -> tuple[int, ...]:
    s, t = depth(student), depth(teacher)
    lm = config.layer_map or getattr(student.config, "deploylab_teacher_layers", None)
    if lm is None:  # evenly spaced, ending at the teacher's last layer
        lm = [round((i + 1) * t / s) - 1 for i in range(s)]
    lm = tuple(int(i) for i in lm)
    if len(lm) != s or any(not 0 <= i < t for i in lm):
        raise DistillError(f"layer_map must give one teacher layer in 0..{t - 1} for each of "
                           f"the student's {s} layers, got {lm}")
    return lm


# --------------------------------------------------------------------------- the verb

_HANDLERS: dict[type, Callable] = {}


def _handles(config_type: type):
    def register(fn):
        _HANDLERS[config_type] = fn
        return fn

    return register


def distill(student, teacher, config, *, data=None, tokenizer=None) -> DistillResult:
    """Train `student` in place to imitate `teacher`.

    Args:
        student (torch.nn.Module): the smaller model (trained in place, left in eval mode).
        teacher (torch.nn.Module): the reference; never changed.
        config (EncoderDistillConfig | ClassifierDistillConfig): how.
        data: encoders: a list of texts (default: queries and docstrings of the stdlib task's
            train split, `prune.encoder_training_data`); classifiers: a `cnn.Digits`.
        tokenizer: the encoders' (shared) tokenizer; required for encoders.

    Returns:
        DistillResult: loss curve, seconds, layer map.

    Raises:
        DistillError: a student deeper than its teacher, a missing tokenizer or data,
            hidden sizes that differ when hidden states are matched.
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise DistillError(f"no distillation handler for {type(config).__name__}; use "
                           f"{', '.join(t.__name__ for t in _HANDLERS)}")
    _check_depth(student, teacher)
    return handler(student, teacher, config, data, tokenizer)


@_handles(EncoderDistillConfig)
def _distill_encoder(student, teacher, config: EncoderDistillConfig, data, tokenizer):
    import random

    from . import _compress_fit as fit

    if _layers(student) is None or _layers(teacher) is None:
        raise DistillError("EncoderDistillConfig needs BERT-like encoders for student and "
                           "teacher; use ClassifierDistillConfig for classifiers")
    if tokenizer is None:
        raise DistillError("encoder distillation needs the tokenizer: distill(..., tokenizer=)")
    if config.task_steps and data is not None:
        raise DistillError("task_steps fine-tunes on the stdlib task's train pairs, which go "
                           "with its texts: pass data=None, or task_steps=0 with your texts")
    pairs = None
    if data is None:
        from .prune import encoder_training_data

        data, pairs = encoder_training_data(seed=config.seed)
    texts = list(data)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise DistillError("data must be a non-empty list of texts for encoder distillation")
    lm = _layer_map(student, teacher, config)
    if config.hidden_weight > 0 and student.config.hidden_size != teacher.config.hidden_size:
        raise DistillError("hidden-state distillation needs equal hidden sizes; use "
                           "hidden_weight=0 (embeddings only)")
    teacher.eval()
    start = time.perf_counter()
    targets = None
    needed = config.steps * config.batch_size
    if len(texts) > needed:  # only what the steps will see (seeded)
        texts = random.Random(config.seed).sample(texts, needed)
    if config.hidden_weight == 0:
        targets = fit.teacher_embeddings(teacher, tokenizer, texts, config.max_length)
    history = fit.fit_encoder(student, tokenizer, steps=config.steps,
                              batch_size=config.batch_size, lr=config.lr,
                              max_length=config.max_length, texts=texts, teacher=teacher,
                              targets=targets, hidden_weight=config.hidden_weight,
                              layer_map=lm, seed=config.seed, progress=config.progress,
                              desc="distilling")
    if config.task_steps:  # pairs are the stdlib task's: data=None was checked above
        task = fit.fit_encoder(student, tokenizer, steps=config.task_steps,
                               batch_size=config.batch_size, lr=config.lr,
                               max_length=config.max_length, pairs=pairs, seed=config.seed,
                               progress=config.progress, desc="task stage")
        done = history[-1]["seconds"] if history else 0.0
        history = [{**h, "stage": "distill"} for h in history] + [
            {**h, "step": h["step"] + config.steps, "seconds": h["seconds"] + done,
             "stage": "task"} for h in task]
    return DistillResult(history, time.perf_counter() - start, config, lm)


@_handles(ClassifierDistillConfig)
def _distill_classifier(student, teacher, config: ClassifierDistillConfig, data, tokenizer):
    from . import _compress_fit as fit

    if data is None or not hasattr(data, "x_train"):
        raise DistillError("classifier distillation needs data=cnn.load_digits_split() (an "
                           "object with x_train, y_train, x_test, y_test)")
    start = time.perf_counter()
    history = fit.fit_classifier(student, data, epochs=config.epochs, lr=config.lr,
                                 batch_size=config.batch_size,
                                 teacher=teacher if config.alpha > 0 else None,
                                 temperature=config.temperature, alpha=config.alpha,
                                 seed=config.seed, progress=config.progress,
                                 desc="distilling" if config.alpha > 0 else "training",
                                 augment=config.augment, warmup=config.warmup,
                                 threads=config.threads)
    return DistillResult(history, time.perf_counter() - start, config)


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(model, folder: str | os.PathLike, *, tokenizer=None,
                    history: list[dict] | None = None, extra: dict | None = None) -> Path:
    """Save a model as safetensors (never a pickle), with its config and loss curve.

    transformers models use `save_pretrained` (config.json + model.safetensors); other
    modules get model.safetensors alone (rebuild the architecture, then `load_checkpoint`).

    Returns:
        Path: the folder.
    """
    from ._files import write_atomic
    from .prune import save_dense

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(out)  # safetensors by default in transformers 5
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    else:
        save_dense(model, out / "model.safetensors")
    meta = {"history": history or [], **(extra or {})}
    write_atomic(out / "training.json", json.dumps(meta))
    if any(out.glob("*.bin")) or any(out.glob("*.pt")):
        raise DistillError(f"{out} holds a pickle-based checkpoint; only safetensors are allowed")
    return out


def load_checkpoint(folder: str | os.PathLike, model=None):
    """Load a `save_checkpoint` folder.

    Args:
        folder (str | PathLike): the folder.
        model (torch.nn.Module | None): for non-transformers models, the architecture to
            fill; None loads a transformers model with AutoModel.

    Returns:
        tuple: (model in eval mode, training.json's contents).
    """
    folder = Path(folder)
    meta_file = folder / "training.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if model is None:
        from transformers import AutoModel

        return AutoModel.from_pretrained(folder).eval(), meta
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), meta


def plot_loss(history: list[dict] | dict[str, list[dict]], ax=None, *, smooth: int = 10):
    """The loss curve(s) of one or several runs (a dict name -> history).

    Args:
        history: one history or several by name.
        ax (matplotlib Axes | None): where to draw.
        smooth (int, default 10): moving-average window over steps (epochs are drawn raw).

    Returns:
        matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    runs = history if isinstance(history, dict) else {"loss": history}
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3))
    for name, h in runs.items():
        key = "step" if h and "step" in h[0] else "epoch"
        x = np.array([r[key] for r in h])
        y = np.array([r["loss"] for r in h])
        w = min(smooth, len(y)) if key == "step" else 1
        if w > 1:
            y = np.convolve(y, np.ones(w) / w, mode="valid")
            x = x[w - 1:]
        ax.plot(x, y, label=name)
    ax.set(xlabel=key, ylabel="loss", title="training loss")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend()
    return ax


# ------------------------------------------------------------------- cached students


def minilm_student(layers: Sequence[int] = (3, 4, 5),
                   config: EncoderDistillConfig | None = None, *, cache: bool = True,
                   teacher: tuple | None = None):
    """all-MiniLM-L6-v2's student: `layers` of the teacher, distilled on the stdlib train
    split, trained once and cached (safetensors) under `cache_dir("students")`.

    Args:
        layers (Sequence[int], default (3, 4, 5)): teacher layers the student starts from.
            The top three: on the docstring retrieval task they start and end far closer
            to the teacher than every other layer (chapter 05, section 3).
        config (EncoderDistillConfig | None): None: 100 steps of embedding distillation
            (what the `distill` benchmark uses).
        cache (bool, default True): reuse (and write) the cached student.
        teacher (tuple | None, default None): an already loaded (tokenizer, MiniLM) pair, to
            save loading it again; None loads it.

    Returns:
        tuple: (tokenizer, student, teacher, info) where info holds the loss curve
        ("history"), training "seconds" and whether it came "from_cache".
    """
    from .assets import load_encoder
    from .settings import cache_dir

    config = config or EncoderDistillConfig(steps=100)
    tokenizer, teacher = teacher or load_encoder("all-MiniLM-L6-v2")
    teacher.eval()
    fields = {k: v for k, v in asdict(config).items() if k != "progress"}
    key = hashlib.sha256(json.dumps({"layers": list(layers), **fields, "v": 1},
                                    sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir("students") / f"minilm-{len(layers)}L-{key}"
    if cache and (folder / "training.json").is_file():
        student, meta = load_checkpoint(folder)
        return tokenizer, student, teacher, {**meta, "from_cache": True, "folder": folder}
    student = student_from_teacher(teacher, layers)
    result = distill(student, teacher, config, tokenizer=tokenizer)
    info = {"history": result.history, "seconds": result.seconds,
            "layer_map": list(result.layer_map)}
    if cache:
        save_checkpoint(student, folder, history=result.history,
                        extra={"seconds": result.seconds, "layer_map": list(result.layer_map)})
    return tokenizer, student, teacher, {**info, "from_cache": False, "folder": folder}
