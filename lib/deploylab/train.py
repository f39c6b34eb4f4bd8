"""Fine-tuning with the two levers that decide training memory and speed: gradient
(activation) checkpointing and mixed precision, with memory measured exactly.

Training keeps, for every operation of the forward pass, the tensors its backward needs
(inputs of matrix products, outputs of activations, dropout masks, attention
probabilities). For a transformer these *activations* grow with batch x tokens (and tokens
squared for attention) and quickly outweigh the weights, gradients and optimizer state.

- **Checkpointing** keeps only the inputs of chosen blocks and recomputes the rest during
  the backward pass: less memory for about one extra forward of those blocks.
  `checkpointing="transformers"` uses the model's built-in switch
  (`activation_checkpointing_enable`, every layer); `checkpointing="blocks"` wraps the
  modules you name (`"encoder.layer.*"`, `"encoder.layer.[024]"`,
  `"encoder.layer.*.attention"`) in `torch.utils.checkpoint`.
- **Mixed precision** (`torch.autocast`) runs matrix products in bf16 or fp16 and keeps
  the master weights in fp32. bf16 has fp32's range, so it needs no loss scaling; fp16 does
  (a `GradScaler`), and runs only on CUDA. bf16 is fast only where the hardware has it
  (CPU: avx512_bf16 or AMX; GPU: tensor cores); elsewhere it is emulated and slower.

Memory is measured two ways: exactly, as the bytes of the tensors autograd saves for
backward (`SavedTensorMeter`, deterministic, testable), and as the process peak (RSS
high-water mark on CPU, the allocator's peak on CUDA), which includes everything else and
depends on the allocator.

Example:
    >>> from deploylab import assets, train
    >>> tokenizer, encoder = assets.load_encoder("all-MiniLM-L6-v2")
    >>> model = train.SequenceClassifier(encoder, n_classes=8)
    >>> data = train.topic_batches(tokenizer, batch_size=16, max_length=128)
    >>> result = train.train(model, data, train.TrainConfig.preset("checkpointing", steps=5))
    >>> result.table()          # per step: time_ms, loss, activation_mb, peak_mb
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch  # the module defines a torch model; `import deploylab` alone does not load it
import torch.nn.functional as F

from .errors import DeploylabError

__all__ = [
    "CHECKPOINTING",
    "PRECISIONS",
    "PRESETS",
    "SavedTensorMeter",
    "SequenceClassifier",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "Trainer",
    "activation_sweep",
    "bf16_supported",
    "evaluate",
    "forward_backward",
    "make_batches",
    "saved_for_backward",
    "set_checkpointing_",
    "topic_batches",
    "train",
]

CHECKPOINTING = ("none", "transformers", "blocks")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")
MB = 2**20


class TrainError(DeploylabError):
    """A training switch is impossible here (bad value, missing hardware, unknown block)."""


# ------------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Everything one fine-tuning run needs besides the model and the data.

    Args:
        steps (int, default 20): optimizer steps.
        lr (float, default 1e-4): AdamW learning rate.
        weight_decay (float, default 0.01): AdamW weight decay.
        accumulation (int, default 1): micro-batches per optimizer step (gradient
            accumulation): the effective batch is `accumulation` x the data's batch size,
            while activation memory stays that of one micro-batch.
        checkpointing (str, default "none"): "none", "transformers" (the model's built-in
            switch, every layer) or "blocks" (`torch.utils.checkpoint` around `blocks`).
        blocks (tuple[str, ...], default ("encoder.layer.*",)): module names or fnmatch
            patterns for `checkpointing="blocks"`; a pattern that matches no module is an
            error. A pattern matches a whole name or its tail after a dot; when a module and
            one inside it both match, the outer one is used.
        precision (str, default "fp32"): "fp32", "bf16" (autocast, CPU or CUDA) or "fp16"
            (autocast with a gradient scaler, CUDA only).
        device (str, default "cpu"): "cpu" or "cuda".
        seed (int, default 0): seeds dropout; each trainer keeps its own random stream, so
            interleaved runs do not disturb each other.
        threads (int | None, default None): torch intra-op threads during steps; None keeps
            torch's setting.
        measure_saved (bool, default True): count saved-for-backward bytes every step.

    Example:
        >>> TrainConfig(checkpointing="blocks", blocks=("encoder.layer.[024]",))
        >>> TrainConfig.preset("checkpointing-bf16", steps=10)
    """

    steps: int = 20
    lr: float = 1e-4
    weight_decay: float = 0.01
    accumulation: int = 1
    checkpointing: str = "none"
    blocks: tuple[str, ...] = ("encoder.layer.*",)
    precision: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    measure_saved: bool = True

    def __post_init__(self) -> None:
        def positive_int(name: str, value) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainError(f"{name} must be an int >= 1, got {value!r}")

        positive_int("steps", self.steps)
        positive_int("accumulation", self.accumulation)
        if self.threads is not None:
            positive_int("threads", self.threads)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise TrainError(f"lr must be a number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise TrainError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        for name, value, allowed in [("checkpointing", self.checkpointing, CHECKPOINTING),
                                     ("precision", self.precision, PRECISIONS),
                                     ("device", self.device, DEVICES)]:
            if value not in allowed:
                raise TrainError(f"{name} must be one of {allowed}, got {value!r}")
        if isinstance(self.blocks, str):
            self.blocks = (self.blocks,)
        self.blocks = tuple(self.blocks)
        if self.checkpointing == "blocks" and not self.blocks:
            raise TrainError("checkpointing='blocks' needs at least one block name, e.g. "
                             "blocks=('encoder.layer.*',)")
        if self.precision == "fp16" and self.device != "cuda":
            raise TrainError("fp16 autocast needs a CUDA GPU (device='cuda'): CPUs have no "
                             "fast fp16 matrix products and fp16 needs loss scaling; on a CPU "
                             "use precision='bf16' (or 'fp32')")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise TrainError(f"seed must be an int >= 0, got {self.seed!r}")

    @classmethod
    def preset(cls, name: str, **changes) -> TrainConfig:
        """A named configuration (the bench variants), with fields changed.

        Args:
            name (str): one of `PRESETS`: "fp32", "checkpointing" (every other layer),
                "checkpointing-every-layer", "bf16-autocast", "checkpointing-bf16",
                "fp16-amp" (CUDA).
            **changes: fields to override, e.g. `steps=5`.

        Returns:
            TrainConfig: validated.
        """
        if name not in PRESETS:
            raise TrainError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return replace(PRESETS[name], **changes)

    @property
    def autocast_dtype(self):
        """torch dtype of autocast, or None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)


# Checkpointing every other layer keeps about half the activations for a sixth more
# operations: a fixed budget, whatever the sequence length. Every layer (transformers'
# switch) saves the most and costs a whole extra forward; the attention blocks alone hold
# most of a layer's activations at long sequences, but their recompute is memory-bound
# and costs more time than its share of operations on a CPU (chapter 06, section 4).
EVERY_OTHER_LAYER = ("encoder.layer.*[02468]",)

PRESETS: dict[str, TrainConfig] = {
    "fp32": TrainConfig(),
    "checkpointing": TrainConfig(checkpointing="blocks", blocks=EVERY_OTHER_LAYER),
    "checkpointing-every-layer": TrainConfig(checkpointing="transformers"),
    "bf16-autocast": TrainConfig(precision="bf16"),
    "checkpointing-bf16": TrainConfig(checkpointing="blocks", blocks=EVERY_OTHER_LAYER,
                                      precision="bf16"),
    "fp16-amp": TrainConfig(precision="fp16", device="cuda"),
}


def bf16_supported(device: str = "cpu") -> bool:
    """Whether bf16 arithmetic is native (fast) on this machine's CPU or CUDA GPU.

    CPU: the avx512_bf16 or AMX (amx_bf16) flags on x86, bf16 on Arm (the same flags
    `measure.describe_cpu` reads). Without them torch still runs bf16, in software.
    """
    from .measure import cpu_flags

    if device == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(cpu_flags()))


# ------------------------------------------------------------------------ model and data


class SequenceClassifier(torch.nn.Module):
    """An encoder plus a linear head on its mean-pooled token vectors.

    Shapes: input_ids (B, T) -> last_hidden_state (B, T, H) -> masked mean (B, H) -> logits
    (B, n_classes). The mean is not normalized (unlike sentence embeddings), so the head's
    logits can grow as it learns.

    Args:
        encoder (transformers.PreTrainedModel): e.g. MiniLM from `assets.load_encoder`.
        n_classes (int): classes of the task.
        seed (int, default 0): seeds the head's initialisation only, so copies match.
    """

    def __init__(self, encoder, n_classes: int, seed: int = 0):
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 2:
            raise TrainError(f"n_classes must be an int >= 2, got {n_classes!r}")
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, n_classes)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            bound = 1 / encoder.config.hidden_size**0.5
            self.head.weight.uniform_(-bound, bound, generator=gen)
            self.head.bias.zero_()

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, H)
        return self.head(pooled)  # (B, n_classes)


def make_batches(tokenizer, texts: Sequence[str], labels: Sequence[int], *, batch_size: int = 16,
                 max_length: int = 128, n_batches: int | None = None,
                 seed: int = 0) -> list[dict]:
    """Tokenized batches padded (or truncated) to exactly `max_length` tokens, so every
    step does the same work and activation memory depends only on batch x tokens.

    Args:
        tokenizer: the encoder's tokenizer.
        texts (Sequence[str]): the texts.
        labels (Sequence[int]): one class per text.
        batch_size (int, default 16): texts per batch.
        max_length (int, default 128): tokens per text.
        n_batches (int | None, default None): how many; None: one pass over the texts. More
            than one pass reshuffles (seeded) and cycles.
        seed (int, default 0): order of the texts.

    Returns:
        list[dict]: input_ids, attention_mask, token_type_ids (B, T) and labels (B,).
    """
    if len(texts) != len(labels) or len(texts) < batch_size:
        raise TrainError(f"need one label per text and at least batch_size={batch_size} texts; "
                         f"got {len(texts)} texts and {len(labels)} labels")
    if batch_size < 1 or max_length < 2:
        raise TrainError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, "
                         f"{max_length}")
    per_pass = len(texts) // batch_size
    n_batches = per_pass if n_batches is None else n_batches
    rng = np.random.default_rng(seed)
    batches, order = [], []
    for i in range(n_batches):
        if i % per_pass == 0:
            order = rng.permutation(len(texts))
        idx = order[(i % per_pass) * batch_size:(i % per_pass + 1) * batch_size]
        enc = tokenizer([texts[j] for j in idx], padding="max_length", truncation=True,
                        max_length=max_length, return_tensors="pt")
        enc = {k: v for k, v in enc.items()}
        enc["labels"] = torch.tensor([labels[j] for j in idx], dtype=torch.long)
        batches.append(enc)
    return batches


def topic_batches(tokenizer, *, split: str = "train", batch_size: int = 16, max_length: int = 128,
                  n_batches: int | None = None, n_classes: int = 8, seed: int = 0) -> list[dict]:
    """Batches of the kit's labelled task: which stdlib package a docstring documents
    (`tasks.docstring_topics`, balanced, 8 classes by default).

    Args:
        tokenizer: the encoder's tokenizer.
        split (str, default "train"): "train" or "test".
        batch_size, max_length, n_batches, seed: as `make_batches`.
        n_classes (int, default 8): packages to tell apart.

    Returns:
        list[dict]: as `make_batches`.
    """
    from .tasks import docstring_topics

    task = docstring_topics(n_classes, split=split)
    return make_batches(tokenizer, task.texts, task.labels, batch_size=batch_size,
                        max_length=max_length, n_batches=n_batches, seed=seed)


# ------------------------------------------------------------ measuring saved tensors

_VIEW_FNS = ("TBackward", "ViewBackward", "TransposeBackward", "PermuteBackward",
             "ExpandBackward", "UnsqueezeBackward", "ReshapeAliasBackward", "AliasBackward")


def _is_weight_copy(t) -> bool:
    """A tensor made by casting a parameter (autocast's bf16 copy of a weight), possibly
    seen through a view: its autograd history is (views ->) ToCopy -> AccumulateGrad."""
    fn = t.grad_fn
    for _ in range(4):
        if fn is None:
            return False
        name = type(fn).__name__
        if name.startswith("ToCopyBackward"):
            nxt = [f for f, _ in fn.next_functions if f is not None]
            return len(nxt) == 1 and type(nxt[0]).__name__ == "AccumulateGrad"
        if not name.startswith(_VIEW_FNS) or len(fn.next_functions) != 1:
            return False
        fn = fn.next_functions[0][0]
    return False


class SavedTensorMeter:
    """Count the bytes autograd saves for the backward pass while the block runs.

    Every tensor an operation saves passes through `torch.autograd.graph.saved_tensors_hooks`.
    What is counted, and why:
    - distinct *storages*, each once: ReLU saves its output and the next Linear saves the
      same tensor as its input; views (a transpose, a reshape) share their base's storage.
      A saved view keeps its whole storage alive, so the storage's bytes are what count.
    - three kinds, reported apart: `activation_bytes` (everything computed from the
      inputs: what checkpointing and batch size change), `parameter_bytes` (the model's own
      weights, saved by reference: in memory anyway, costing nothing extra) and
      `weight_copy_bytes` (casts of weights, e.g. autocast's bf16 copies: real extra memory,
      independent of batch size).
    - only saves made while the meter is active: wrap the forward pass. Inside a
      checkpointed block, torch's own hooks take over (the innermost hooks win), so only
      what the checkpoint really keeps (the block's inputs) reaches the meter, which is
      exactly what stays in memory until the backward pass.

    Args:
        model (torch.nn.Module | None, default None): whose parameters count as parameters
            and, with `by_module`, whose modules attribute the bytes.
        by_module (bool, default False): attribute each storage's bytes to the innermost
            module running when it was first saved (`by_module_bytes`, `per_block`).

    Example:
        >>> with SavedTensorMeter(model, by_module=True) as meter:
        ...     loss = model(**inputs).sum()
        >>> meter.activation_bytes, meter.per_block()
    """

    def __init__(self, model=None, *, by_module: bool = False):
        self.model = model
        self.by_module = by_module
        self._reset()

    def _reset(self) -> None:
        self.kinds: dict[tuple, str] = {}      # storage key -> kind
        self.sizes: dict[tuple, int] = {}      # storage key -> bytes
        self.owner: dict[tuple, str] = {}      # storage key -> module name
        self.saves = 0                         # tensors saved (with repeats)
        self.raw_bytes = 0                     # sum of storage bytes without de-duplication
        self._stack: list[str] = []
        self._handles: list = []
        self._alive: dict[tuple, object] = {}  # storage key -> storage, while metering

    def __enter__(self) -> SavedTensorMeter:
        self._reset()
        self._params: set[tuple] = set()
        if self.model is not None:
            for p in list(self.model.parameters()) + list(self.model.buffers()):
                self._params.add(self._key(p))
            if self.by_module:
                for name, module in self.model.named_modules():
                    self._handles.append(module.register_forward_pre_hook(
                        lambda m, a, name=name or "(model)": self._enter_module(name)))
                    self._handles.append(module.register_forward_hook(
                        lambda m, a, o: self._leave_module()))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._alive = {}
        for h in self._handles:
            h.remove()
        self._handles = []

    # module hooks must return None: a returned value would replace the module's input/output
    def _enter_module(self, name: str) -> None:
        self._stack.append(name)

    def _leave_module(self) -> None:
        if self._stack:
            self._stack.pop()

    @staticmethod
    def _key(t) -> tuple:
        return (str(t.device), t.untyped_storage().data_ptr())

    def _pack(self, t):
        self._count(t)
        # A detached alias (same storage): a saved output returned as itself would hold its
        # own grad_fn, a cycle that keeps a graph never run backward alive forever.
        return t.detach()

    def _count(self, t) -> None:
        self.saves += 1
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # no storage (e.g. a nested tensor)
            return
        nbytes = storage.nbytes()
        self.raw_bytes += nbytes
        key = self._key(t)
        if nbytes == 0 or key in self.kinds:
            return
        if key in self._params or isinstance(t, torch.nn.Parameter):
            kind = "parameter"
        elif t.requires_grad and t.is_leaf:
            kind = "parameter"  # a leaf the model trains but we were not told about
        elif _is_weight_copy(t):
            kind = "weight_copy"
        else:
            kind = "activation"
        self.kinds[key], self.sizes[key] = kind, nbytes
        self.owner[key] = self._stack[-1] if self._stack else "(outside modules)"
        # Held until exit: a discarded branch's graph frees its storages mid-forward, and a
        # later tensor at a reused address would otherwise be taken for one already counted.
        self._alive[key] = storage

    def _bytes(self, kind: str) -> int:
        return sum(s for k, s in self.sizes.items() if self.kinds[k] == kind)

    @property
    def activation_bytes(self) -> int:
        """Distinct storages saved for backward that were computed from the inputs."""
        return self._bytes("activation")

    @property
    def weight_copy_bytes(self) -> int:
        """Distinct casts of parameters saved for backward (autocast's low-precision copies)."""
        return self._bytes("weight_copy")

    @property
    def parameter_bytes(self) -> int:
        """Parameters saved by reference (no extra memory)."""
        return self._bytes("parameter")

    @property
    def activation_mb(self) -> float:
        return self.activation_bytes / MB

    def by_module_bytes(self, kind: str = "activation") -> dict[str, int]:
        """Bytes of one kind per module that first saved them (needs `by_module=True`)."""
        out: dict[str, int] = {}
        for key, size in self.sizes.items():
            if self.kinds[key] == kind:
                out[self.owner[key]] = out.get(self.owner[key], 0) + size
        return out

    def per_block(self, kind: str = "activation") -> dict[str, int]:
        """Bytes grouped by block, in forward order: a name is cut after its first number
        ("encoder.layer.3.attention.self" -> "encoder.layer.3"); other names are cut to the
        depth of the layers' parent ("embeddings.LayerNorm" -> "embeddings", or
        "encoder.embeddings" inside a `SequenceClassifier`)."""
        sizes = self.by_module_bytes(kind)
        numbered = [next((i for i, p in enumerate(n.split(".")) if p.isdigit()), None)
                    for n in sizes]
        depth = max(1, min((i for i in numbered if i is not None), default=2) - 1)
        out: dict[str, int] = {}
        for (name, size), num in zip(sizes.items(), numbered, strict=True):
            parts = name.split(".")
            group = ".".join(parts[:num + 1] if num is not None else parts[:depth])
            out[group] = out.get(group, 0) + size
        return out


# ---------------------------------------------------------------------- checkpointing


def _find_pretrained(model):
    """The transformers model inside `model` (or `model` itself)."""
    for module in model.modules():
        if hasattr(module, "activation_checkpointing_enable") or hasattr(
                module, "gradient_checkpointing_enable"):
            return module
    raise TrainError(f"checkpointing='transformers' needs a transformers model inside "
                     f"{type(model).__name__}; use checkpointing='blocks' with module names")


def _checkpointed_forward(self, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    # Non-reentrant checkpointing: works with keyword arguments and with inputs that do not
    # require grad, and keeps dropout's random state so the recomputation is identical.
    return checkpoint(type(self).forward, self, *args, use_reentrant=False, **kwargs)


def _match_blocks(model, patterns: Sequence[str]) -> list[str]:
    names = [n for n, _ in model.named_modules() if n]
    chosen: set[str] = set()
    for pattern in patterns:
        # a pattern matches a whole name or its tail after a dot, so "encoder.layer.0" finds
        # the layer inside a wrapper too ("encoder.encoder.layer.0" in a SequenceClassifier)
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)
                or fnmatch.fnmatchcase(n, "*." + pattern)]
        if not hits:
            numbered = sorted({".".join(n.split(".")[:k + 1]) for n in names
                               for k, p in enumerate(n.split(".")) if p.isdigit()})
            examples = ", ".join(numbered[:4] or names[:4])
            raise TrainError(f"no module of {type(model).__name__} is named {pattern!r}; "
                             f"blocks are module names or fnmatch patterns such as "
                             f"{examples} (see model.named_modules())")
        chosen.update(hits)
    # keep the outermost: checkpointing a layer already covers the modules inside it
    return [n for n in names if n in chosen
            and not any(n.startswith(o + ".") for o in chosen)]


def set_checkpointing_(model, mode: str = "none",
                       blocks: Sequence[str] = ("encoder.layer.*",)) -> list[str]:
    """Switch checkpointing on a model in place, undoing any earlier setting first.

    Args:
        model (torch.nn.Module): the model (a `SequenceClassifier` or a transformers model).
        mode (str, default "none"): "none", "transformers" or "blocks" (see `TrainConfig`).
        blocks (Sequence[str], default ("encoder.layer.*",)): for "blocks": module names or
            fnmatch patterns.

    Returns:
        list[str]: the checkpointed modules (for "transformers": its layers).

    Raises:
        TrainError: unknown mode, no transformers model for "transformers", or a block
            pattern that matches no module.
    """
    if mode not in CHECKPOINTING:
        raise TrainError(f"checkpointing must be one of {CHECKPOINTING}, got {mode!r}")
    chosen = _match_blocks(model, blocks) if mode == "blocks" else []
    for module in model.modules():  # undo our wrappers and transformers' switch
        if isinstance(module.__dict__.get("forward"), types.MethodType):
            del module.forward
        if getattr(module, "is_activation_checkpointing", False):  # transformers >= 5
            module.activation_checkpointing_disable()
        elif not hasattr(module, "is_activation_checkpointing") and getattr(
                module, "is_gradient_checkpointing", False):  # pragma: no cover - older
            module.gradient_checkpointing_disable()
    if mode == "transformers":
        pre = _find_pretrained(model)
        kwargs = {"use_reentrant": False}
        if hasattr(pre, "activation_checkpointing_enable"):  # transformers >= 5
            pre.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # pragma: no cover - older transformers
            pre.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        prefix = next(n for n, m in model.named_modules() if m is pre)
        return [f"{prefix}.{n}".lstrip(".") for n, m in pre.named_modules()
                if getattr(m, "gradient_checkpointing", False) and n]
    modules = dict(model.named_modules())
    for name in chosen:
        modules[name].forward = types.MethodType(_checkpointed_forward, modules[name])
    return chosen


# ------------------------------------------------------------------------------ training


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def _autocast(config: TrainConfig):
    if config.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(config.device, dtype=config.autocast_dtype)


def forward_backward(model, batch: dict, config: TrainConfig | None = None,
                     meter: SavedTensorMeter | None = None):
    """One forward and backward pass: cross-entropy of the logits, gradients accumulated
    into `.grad` (the optimizer is not stepped; zero the gradients yourself).

    Args:
        model (torch.nn.Module): maps the batch's inputs to (B, classes) logits.
        batch (dict): with "labels" (from `make_batches`), on the model's device.
        config (TrainConfig | None, default None): precision and device; fp32 if None.
        meter (SavedTensorMeter | None, default None): entered around the forward pass.

    Returns:
        torch.Tensor: the loss (a scalar, fp32).
    """
    config = config or TrainConfig()
    with meter if meter is not None else contextlib.nullcontext(), _autocast(config):
        logits = model(**_inputs(batch))
        loss = F.cross_entropy(logits.float(), batch["labels"])  # the loss in fp32 always
    loss.backward()
    return loss


def saved_for_backward(model, batch: dict, config: TrainConfig | None = None, *,
                       by_module: bool = False) -> SavedTensorMeter:
    """Run one forward pass and the loss (no backward) and count what autograd saved.

    What is saved is known once the forward pass ends, so this is the exact activation memory
    of a training step at this shape, without the cost of the backward pass.

    Args:
        model (torch.nn.Module): maps the batch's inputs to logits; use train mode, as in
            training (dropout saves its masks).
        batch (dict): with "labels".
        config (TrainConfig | None, default None): precision (autocast) and device.
        by_module (bool, default False): attribute bytes to modules (`per_block()`).

    Returns:
        SavedTensorMeter: activation_bytes, weight_copy_bytes, per_block(), ...
    """
    config = config or TrainConfig()
    with SavedTensorMeter(model, by_module=by_module) as meter, _autocast(config):
        F.cross_entropy(model(**_inputs(batch)).float(), batch["labels"])
    return meter


def _check_hardware(config: TrainConfig) -> None:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("device='cuda' but torch sees no CUDA GPU here; use device='cpu' "
                         "(with precision 'fp32' or 'bf16')")
    if config.device == "cuda" and config.precision == "bf16" and not bf16_supported("cuda"):
        raise TrainError("this GPU has no bf16 support (before Ampere); use precision='fp16', "
                         "which uses a gradient scaler")


class Trainer:
    """A fine-tuning loop you can drive one optimizer step at a time (so several variants
    can be interleaved in one process). `train()` is the usual entry point.

    Args:
        model (torch.nn.Module): maps a batch's inputs to logits; trained in place (moved
            to the device, put in train mode, checkpointing switched as configured).
        data (Sequence[dict]): batches from `make_batches`; cycled in order, one per
            micro-step.
        config (TrainConfig): the switches.
    """

    def __init__(self, model, data: Sequence[dict], config: TrainConfig):
        if not isinstance(config, TrainConfig):
            raise TrainError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not data or not all(isinstance(b, dict) and "labels" in b for b in data):
            raise TrainError("data must be a non-empty list of batches with 'labels' "
                             "(see make_batches / topic_batches)")
        _check_hardware(config)
        self.config = config
        self.data = [{k: v.to(config.device) for k, v in b.items()} for b in data]
        self.model = model.to(config.device).train()
        self.checkpointed = set_checkpointing_(self.model, config.checkpointing, config.blocks)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.records: list[dict] = []
        self._micro = 0
        # This trainer's own random stream (dropout): restored before and saved after each
        # step, so interleaving trainers does not change what any of them computes.
        outer = torch.get_rng_state()
        torch.manual_seed(config.seed)
        self._rng = torch.get_rng_state()
        torch.set_rng_state(outer)
        self._cuda_rng = None

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        cpu, cuda = torch.get_rng_state(), None
        torch.set_rng_state(self._rng)
        if self.config.device == "cuda":
            cuda = torch.cuda.get_rng_state()
            if self._cuda_rng is None:
                torch.cuda.manual_seed(self.config.seed)
            else:
                torch.cuda.set_rng_state(self._cuda_rng)
        try:
            yield
        finally:
            self._rng = torch.get_rng_state()
            torch.set_rng_state(cpu)
            if cuda is not None:
                self._cuda_rng = torch.cuda.get_rng_state()
                torch.cuda.set_rng_state(cuda)

    def _optimizer_step(self) -> dict:
        cfg, losses, act, copies = self.config, [], 0, 0
        for _ in range(cfg.accumulation):
            batch = self.data[self._micro % len(self.data)]
            self._micro += 1
            meter = SavedTensorMeter(self.model) if cfg.measure_saved else None
            with meter if meter is not None else contextlib.nullcontext(), _autocast(cfg):
                logits = self.model(**_inputs(batch))
                loss = F.cross_entropy(logits.float(), batch["labels"])
            scaled = loss / cfg.accumulation  # gradients of the mean over micro-batches
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            losses.append(loss.item())
            if meter is not None:  # one micro-batch's graph at a time is alive
                act = max(act, meter.activation_bytes)
                copies = max(copies, meter.weight_copy_bytes)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step if gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": float(np.mean(losses)),
                "activation_mb": act / MB if cfg.measure_saved else None,
                "weight_copy_mb": copies / MB if cfg.measure_saved else None,
                "loss_scale": self.scaler.get_scale() if self.scaler else None}

    def step(self) -> dict:
        """One optimizer step (`accumulation` micro-batches), timed and measured.

        Returns:
            dict: step, time_ms, loss (mean over the micro-batches), activation_mb and
            weight_copy_mb (saved for backward, one micro-batch), peak_mb (process RSS
            high-water mark on CPU, allocator peak on CUDA), before_mb (the same at the
            start of the step), loss_scale (fp16 only).
        """
        from .measure import peak_memory, threads

        out: dict = {}

        def work() -> None:
            start = time.perf_counter()
            out.update(self._optimizer_step())
            if self.config.device == "cuda":
                torch.cuda.synchronize()
            out["time_ms"] = (time.perf_counter() - start) * 1e3

        with (threads(self.config.threads) if self.config.threads
              else contextlib.nullcontext()), self._own_rng():
            if self.config.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated() / MB
                work()
                peak = torch.cuda.max_memory_allocated() / MB
            else:
                mem = peak_memory(work)
                before, peak = mem.before_mb, mem.peak_mb
        record = {"step": len(self.records) + 1, "time_ms": out["time_ms"], "loss": out["loss"],
                  "activation_mb": out["activation_mb"], "weight_copy_mb": out["weight_copy_mb"],
                  "peak_mb": peak, "before_mb": before, "loss_scale": out["loss_scale"]}
        self.records.append(record)
        return record

    def result(self, warmup: int = 1) -> TrainResult:
        return TrainResult(self.config, list(self.records), self.checkpointed, warmup)


@dataclass
class TrainResult:
    """What a run recorded, step by step.

    Args:
        config (TrainConfig): the run's switches.
        records (list[dict]): one per optimizer step (see `Trainer.step`).
        checkpointed (list[str]): modules that were checkpointed.
        warmup (int, default 1): first steps left out of the step-time percentiles (the
            first step allocates memory and picks kernels).
    """

    config: TrainConfig
    records: list[dict]
    checkpointed: list[str] = field(default_factory=list)
    warmup: int = 1

    def _times(self) -> list[float]:
        times = [r["time_ms"] for r in self.records]
        return times[self.warmup:] if len(times) > self.warmup else times

    @property
    def step_ms_p50(self) -> float:
        return float(np.percentile(self._times(), 50))

    @property
    def step_ms_p90(self) -> float:
        return float(np.percentile(self._times(), 90))

    @property
    def final_loss(self) -> float:
        return self.records[-1]["loss"]

    @property
    def activation_mb(self) -> float | None:
        values = [r["activation_mb"] for r in self.records if r["activation_mb"] is not None]
        return max(values) if values else None

    @property
    def peak_mb(self) -> float:
        return max(r["peak_mb"] for r in self.records)

    def table(self):
        """pandas.DataFrame: one row per step."""
        import pandas as pd

        return pd.DataFrame(self.records).set_index("step")


def train(model, data: Sequence[dict], config: TrainConfig | None = None, *,
          progress: bool = False) -> TrainResult:
    """Fine-tune `model` on `data` with the configured switches; the model changes in place.

    Args:
        model (torch.nn.Module): maps a batch's inputs to (B, classes) logits, e.g. a
            `SequenceClassifier`.
        data (Sequence[dict]): batches (`make_batches`, `topic_batches`), cycled.
        config (TrainConfig | None, default None): `TrainConfig()` (fp32, no checkpointing)
            if None.
        progress (bool, default False): a tqdm bar over steps.

    Returns:
        TrainResult: per-step time, loss and memory.

    Example:
        >>> result = train(model, batches, TrainConfig(steps=30, precision="bf16"))
        >>> result.step_ms_p50, result.final_loss, result.activation_mb
    """
    config = config or TrainConfig()
    trainer = Trainer(model, data, config)
    steps: Iterator[int] | range = range(config.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"train {config.precision}", unit="step")
    for _ in steps:
        trainer.step()
    return trainer.result()


def evaluate(model, batches: Sequence[dict], device: str = "cpu") -> dict:
    """Mean cross-entropy and accuracy on held-out batches, in fp32, without dropout.

    The model is put in eval mode and back in train mode afterwards.

    Returns:
        dict: {"loss": float, "accuracy": float (a fraction)}.
    """
    was_training = model.training
    model.eval()
    losses, right, total = [], 0, 0
    try:
        with torch.no_grad():
            for b in batches:
                b = {k: v.to(device) for k, v in b.items()}
                logits = model(**_inputs(b)).float()
                losses.append(F.cross_entropy(logits, b["labels"], reduction="sum").item())
                right += int((logits.argmax(-1) == b["labels"]).sum())
                total += len(b["labels"])
    finally:
        model.train(was_training)
    return {"loss": sum(losses) / total, "accuracy": right / total}


def activation_sweep(model, batches: Callable[[int, int], dict], seq_lens: Sequence[int],
                     batch_sizes: Sequence[int],
                     modes: Sequence[str | tuple[str, ...]] = ("none", "transformers"),
                     precision: str = "fp32") -> list[dict]:
    """Exact activation memory (saved-for-backward bytes) over shapes and checkpointing.

    Each point runs one forward pass in train mode under a `SavedTensorMeter` (no backward:
    what is saved is known when the forward ends). Deterministic, so it needs no repeats.

    Args:
        model (torch.nn.Module): e.g. a `SequenceClassifier`; its checkpointing is switched
            per mode and switched off at the end.
        batches (Callable[[int, int], dict]): (batch_size, seq_len) -> a batch with labels.
        seq_lens (Sequence[int]): tokens per text.
        batch_sizes (Sequence[int]): texts per batch.
        modes (Sequence, default ("none", "transformers")): "none", "transformers", or a
            tuple of block patterns for `torch.utils.checkpoint`.
        precision (str, default "fp32"): "fp32" or "bf16" (CPU autocast).

    Returns:
        list[dict]: rows of seq, batch, checkpointing, activation_mb, weight_copy_mb.
    """
    config = TrainConfig(precision=precision)
    rows = []
    model.train()
    try:
        for mode in modes:
            label = mode if isinstance(mode, str) else ",".join(mode)
            if isinstance(mode, str):
                set_checkpointing_(model, mode)
            else:
                set_checkpointing_(model, "blocks", mode)
            for s in seq_lens:
                for b in batch_sizes:
                    meter = saved_for_backward(model, batches(b, s), config)
                    rows.append({"seq": s, "batch": b, "checkpointing": label,
                                 "activation_mb": meter.activation_bytes / MB,
                                 "weight_copy_mb": meter.weight_copy_bytes / MB})
    finally:
        set_checkpointing_(model, "none")
    return rows
