"""The code-completion models: a decoder-only transformer (transformers' `LlamaConfig` +
`LlamaForCausalLM`, so `generate()`, the KV cache and assisted generation all work) and a
much smaller draft model for speculative decoding, trained together on standard-library
source, seeded, and cached.

The draft is trained *beside* the target, on the same batches in the same loop, with a loss
that mixes the next-token cross-entropy with the KL divergence to the target's own
predictions on that batch (online distillation). Why beside and not after: the target's
logits come free with its training step, so the draft learns to imitate the target (which is
what speculative decoding's acceptance rate rewards) at almost no extra cost, and there is
one training run to wait for instead of two.

Example:
    >>> pair = train_pair(ModelSizes.preset("full"), TrainSettings(steps=1500))
    >>> pair.target, pair.draft, pair.tokenizer, pair.curves    # cached on the second call
    >>> other = load_causal_lm("path/or/hub-id")                 # a user's pretrained model
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...settings import cache_dir
from .data import ComposeError, Split, encode_files, lm_windows, source_split, tokenizer

__all__ = ["ModelPair", "ModelSizes", "TrainSettings", "build_model", "load_causal_lm",
           "param_count", "train_pair"]


@dataclass(frozen=True)
class ModelSizes:
    """Shapes of the target and the draft (both LLaMA-style: RMSNorm, rotary positions,
    SwiGLU MLP, tied input/output embeddings).

    Args:
        layers, hidden, heads (int): the target's depth, width and attention heads.
        draft_layers, draft_hidden, draft_heads (int): the draft's.
        context (int, default 256): longest sequence (prompt + completion) in tokens.
        vocab_size (int, default 4096): BPE vocabulary (the tokenizer is trained to it).
    """

    layers: int = 3
    hidden: int = 128
    heads: int = 4
    draft_layers: int = 1
    draft_hidden: int = 64
    draft_heads: int = 2
    context: int = 256
    vocab_size: int = 2048

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ComposeError(f"{name} must be a positive int, got {value!r}")
        for h, n, who in ((self.hidden, self.heads, "target"),
                          (self.draft_hidden, self.draft_heads, "draft")):
            if h % n or (h // n) % 2:
                raise ComposeError(f"the {who}'s hidden size {h} must split into {n} heads of "
                                   "an even width (rotary positions rotate pairs)")

    @classmethod
    def preset(cls, name: str) -> ModelSizes:
        """"full" (3 x 128 target, 1 x 64 draft, vocab 2048) or "smoke" (1 x 32, 1 x 16,
        vocab 512)."""
        presets = {"full": cls(),
                   "smoke": cls(layers=1, hidden=32, heads=2, draft_layers=1, draft_hidden=16,
                                draft_heads=2, context=256, vocab_size=512)}
        if name not in presets:
            raise ComposeError(f"unknown model size {name!r}; presets: {', '.join(presets)}")
        return presets[name]


@dataclass(frozen=True)
class TrainSettings:
    """How the pair is trained.

    Args:
        steps (int, default 2000): optimizer steps (target and draft step together).
        batch_size (int, default 8): windows per step (2000 x 8 x 256 tokens: about two
            passes over the training files, ~9 min on 2 cores; 200 x 4 left the held-out
            perplexity near 190 and no line completed exactly).
        seq_len (int, default 256): tokens per window (as long as prompt + completion: rotary
            positions do not extrapolate well past the trained length).
        lr (float, default 3e-3): peak AdamW learning rate (linear warm-up, cosine decay).
        distill_weight (float, default 0.5): the draft's loss is (1 - w) * cross-entropy +
            w * KL(target || draft).
        seed (int, default 0): weights and batches.
        threads (int, default 2): torch threads while training.
        max_files (int | None, default None): train on this many files (and hold out a tenth
            as many) instead of all of them: smoke runs.
    """

    steps: int = 2000
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 3e-3
    distill_weight: float = 0.5
    seed: int = 0
    threads: int = 2
    max_files: int | None = None

    @classmethod
    def preset(cls, name: str, **changes) -> TrainSettings:
        """"full" (2000 steps of 8 x 256 tokens, all files) or "smoke" (30 steps, 30 files)."""
        presets = {"full": cls(), "smoke": cls(steps=30, batch_size=2, max_files=30)}
        if name not in presets:
            raise ComposeError(f"unknown training preset {name!r}; presets: "
                               f"{', '.join(presets)}")
        return replace(presets[name], **changes)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "threads", "max_files"):
            v = getattr(self, name)
            if name == "max_files" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ComposeError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ComposeError(f"distill_weight must be in [0, 1], got {self.distill_weight}")


def build_model(layers: int, hidden: int, heads: int, *, vocab_size: int, context: int,
                seed: int = 0):
    """A freshly initialised `LlamaForCausalLM` (eos = `<|endoftext|>`, id 0).

    Returns:
        transformers.LlamaForCausalLM: in eval mode.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 8 // 3
                      // 16 * 16, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, max_position_embeddings=context,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                      rope_theta=10000.0, attention_dropout=0.0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def param_count(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass
class ModelPair:
    """What `train_pair` returns: the two models, their tokenizer and the training record."""

    target: object
    draft: object
    tokenizer: object
    sizes: ModelSizes
    settings: TrainSettings
    curves: dict = field(default_factory=dict)
    folder: Path | None = None
    trained_now: bool = False

    def curves_frame(self):
        """pandas.DataFrame: step, target_loss, draft_loss, and held-out losses where
        measured."""
        import pandas as pd

        return pd.DataFrame(self.curves["steps"]).set_index("step")


def _key(sizes: ModelSizes, settings: TrainSettings, split: Split) -> str:
    import transformers

    train = {k: v for k, v in asdict(settings).items() if k != "threads"}  # same weights
    blob = json.dumps({"sizes": asdict(sizes), "train": train, "split": split.key,
                       "transformers": transformers.__version__, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _lr(step: int, settings: TrainSettings) -> float:
    warm = max(1, settings.steps // 20)
    if step < warm:
        return settings.lr * (step + 1) / warm
    progress = (step - warm) / max(1, settings.steps - warm)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def _held_out_loss(model, windows: torch.Tensor) -> float:
    model.eval()
    out = model(input_ids=windows[:, :-1]).logits
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), windows[:, 1:].reshape(-1))
    model.train()
    return float(loss)


def _pair_step(target, draft, batch, settings: TrainSettings) -> tuple[float, float]:
    x, y = batch[:, :-1], batch[:, 1:].reshape(-1)
    t_logits = target(input_ids=x).logits
    t_loss = F.cross_entropy(t_logits.reshape(-1, t_logits.shape[-1]), y)
    d_logits = draft(input_ids=x).logits.reshape(-1, t_logits.shape[-1])
    d_ce = F.cross_entropy(d_logits, y)
    # (B*T, V): the draft imitates the target's whole next-token distribution
    kl = F.kl_div(F.log_softmax(d_logits, -1), F.log_softmax(t_logits.detach().reshape(
        -1, t_logits.shape[-1]), -1), log_target=True, reduction="batchmean")
    w = settings.distill_weight
    (t_loss + (1 - w) * d_ce + w * kl).backward()
    return float(t_loss.detach()), float(d_ce.detach())


def _train(target, draft, stream, held, settings: TrainSettings, progress: bool) -> dict:
    from ...measure import threads

    params = [*target.parameters(), *draft.parameters()]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.01, betas=(0.9, 0.95))
    eval_every = max(1, settings.steps // 10)
    steps = range(settings.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="train target + draft", unit="step")
    records, start = [], time.perf_counter()
    target.train(), draft.train()
    with threads(settings.threads):
        for step in steps:
            batch = torch.from_numpy(lm_windows(stream, settings.seq_len, settings.batch_size,
                                                seed=settings.seed * 1_000_003 + step))
            for g in opt.param_groups:
                g["lr"] = _lr(step, settings)
            t_loss, d_loss = _pair_step(target, draft, batch, settings)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            rec = {"step": step + 1, "target_loss": t_loss, "draft_loss": d_loss}
            if (step + 1) % eval_every == 0 or step + 1 == settings.steps:
                rec["target_held_out"] = _held_out_loss(target, held)
                rec["draft_held_out"] = _held_out_loss(draft, held)
            records.append(rec)
            if progress:
                steps.set_postfix(target=f"{t_loss:.2f}", draft=f"{d_loss:.2f}")
    target.eval(), draft.eval()
    return {"steps": records, "seconds": time.perf_counter() - start}


def _load_folder(folder: Path):
    from transformers import LlamaForCausalLM

    target = LlamaForCausalLM.from_pretrained(folder / "target").eval()
    draft = LlamaForCausalLM.from_pretrained(folder / "draft").eval()
    curves = json.loads((folder / "curves.json").read_text())
    return target, draft, curves


def train_pair(sizes: ModelSizes | None = None, settings: TrainSettings | None = None, *,
               progress: bool = True, retrain: bool = False) -> ModelPair:
    """Train (or load from the cache) the target and its draft.

    The cache folder is keyed by the sizes, the settings, the data split and the
    transformers version, so a changed configuration trains anew; it is written under a
    temporary name and renamed into place, so an interrupted run leaves nothing half-saved.

    Args:
        sizes (ModelSizes | None, default None): `ModelSizes.preset("full")` if None.
        settings (TrainSettings | None, default None): `TrainSettings()` if None.
        progress (bool, default True): a tqdm bar with both losses.
        retrain (bool, default False): ignore a cached pair.

    Returns:
        ModelPair
    """
    sizes = sizes or ModelSizes.preset("full")
    settings = settings or TrainSettings()
    if settings.seq_len > sizes.context:
        raise ComposeError(f"seq_len {settings.seq_len} is longer than the models' context "
                           f"{sizes.context}")
    split = source_split(max_files=settings.max_files)
    tok = tokenizer(sizes.vocab_size, split)
    folder = cache_dir("compose") / f"pair-{_key(sizes, settings, split)}"
    if folder.is_dir() and not retrain:
        target, draft, curves = _load_folder(folder)
        return ModelPair(target, draft, tok, sizes, settings, curves, folder, False)
    stream = _stream(tok, split, sizes.vocab_size)
    held = torch.from_numpy(lm_windows(_stream(tok, split, sizes.vocab_size, "held_out"),
                                       settings.seq_len, 16))
    target = build_model(sizes.layers, sizes.hidden, sizes.heads, vocab_size=sizes.vocab_size,
                         context=sizes.context, seed=settings.seed)
    draft = build_model(sizes.draft_layers, sizes.draft_hidden, sizes.draft_heads,
                        vocab_size=sizes.vocab_size, context=sizes.context,
                        seed=settings.seed + 1)
    curves = _train(target, draft, stream, held, settings, progress)
    curves.update(sizes=asdict(sizes), settings=asdict(settings),
                  target_params=param_count(target), draft_params=param_count(draft))
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        target.save_pretrained(tmp / "target")
        draft.save_pretrained(tmp / "draft")
        (tmp / "curves.json").write_text(json.dumps(curves))
        if folder.is_dir():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelPair(target, draft, tok, sizes, settings, curves, folder, True)


def _stream(tok, split: Split, vocab_size: int, part: str = "train") -> np.ndarray:
    """Token ids of one part of the split, cached as .npy next to the tokenizer."""
    file = cache_dir("compose") / f"tokens-{part}-{vocab_size}-{split.key}.npy"
    if not file.is_file():
        from ..._files import atomic_path

        with atomic_path(file) as tmp:
            np.save(tmp, encode_files(tok, getattr(split, part)))
    return np.load(file)


def held_out_stream(pair: ModelPair) -> np.ndarray:
    """The held-out files' token ids (cached)."""
    split = source_split(max_files=pair.settings.max_files)
    return _stream(pair.tokenizer, split, pair.sizes.vocab_size, "held_out")


def load_causal_lm(name_or_path: str | os.PathLike):
    """A user's pretrained causal LM and its tokenizer, by local path or hub id (a hub id
    only when online: `HF_HUB_OFFLINE=1` makes it a clear error instead of a download).

    Returns:
        tuple: (model in eval mode, a `tokenizers.Tokenizer`-like object with `encode(text)
        .ids` and `decode(ids)`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path).eval()
        hf_tok = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as e:
        raise ComposeError(f"cannot load a causal LM from {name_or_path!r} ({e}); give a "
                           "local folder with config.json and weights, or a hub id while "
                           "online") from None
    return model, getattr(hf_tok, "backend_tokenizer", hf_tok)


def smaller(settings: TrainSettings, **changes) -> TrainSettings:
    """`settings` with fields changed (papermill parameters build on the presets)."""
    return replace(settings, **changes)
