"""Training loops shared by `prune` (recovery fine-tuning) and `distill` (teacher -> student).

Private: the public verbs are `prune.recover_` and `distill.distill`. It sits above both
modules so that neither imports the other.

Two model families:
- sentence encoders (transformers BERT-like, mean-pooled, L2-normalized): distilled from a
  teacher's embeddings (and optionally hidden states), or fine-tuned "plainly" on
  (query, document) pairs with in-batch negatives, the loss MiniLM itself was trained with;
- classifiers (the kit's CNN): cross-entropy on labels, plus soft targets with temperature
  when a teacher is given.

Masks (name -> bool tensor of a weight's shape) are re-applied after every optimizer step, so
pruned weights stay zero; `schedule` can instead grow the sparsity gradually while training.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["apply_masks", "cubic_sparsity", "fit_classifier", "fit_encoder", "teacher_embeddings"]


def apply_masks(model, masks: dict | None) -> None:
    """Zero the pruned weights again (after an optimizer step moved them)."""
    if not masks:
        return
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight.mul_(mask)


def _lr_lambda(steps: int, warmup: float) -> Callable[[int], float]:
    w = max(1, int(steps * warmup))

    def f(step: int) -> float:  # linear warm-up, then linear decay to 10%
        if step < w:
            return (step + 1) / w
        return max(0.1, 1.0 - 0.9 * (step - w) / max(1, steps - w))

    return f


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")


def _pool(hidden, mask):
    from .cases.sentence_encoder import mean_pool

    return mean_pool(hidden, mask)


def _batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` index batches over n items, reshuffled each epoch (seeded)."""
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(n))
            rng.shuffle(fresh)
            order += fresh
        yield order[:batch_size]
        order = order[batch_size:]


@torch.no_grad()
def teacher_embeddings(teacher, tokenizer, texts: Sequence[str], max_length: int,
                       batch_size: int = 64) -> torch.Tensor:
    """(n, dim) unit vectors of the teacher; texts sorted by length so padding stays small."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), teacher.config.hidden_size)
    teacher.eval()
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        out[idx] = _pool(teacher(**batch).last_hidden_state, batch["attention_mask"])
    return out


def fit_encoder(student, tokenizer, *, steps: int, batch_size: int, lr: float,
                max_length: int, texts: Sequence[str] | None = None,
                teacher=None, targets: torch.Tensor | None = None,
                pairs: Sequence[tuple[str, str]] | None = None,
                hidden_weight: float = 0.0, layer_map: Sequence[int] | None = None,
                masks: dict | None = None, schedule: Callable[[int], dict] | None = None,
                warmup: float = 0.1, seed: int = 0, progress: bool = True,
                desc: str = "training") -> list[dict]:
    """Train a sentence encoder in place; returns the loss curve.

    Modes: `pairs` given -> contrastive loss with in-batch negatives (scale 20, as
    sentence-transformers' MultipleNegativesRankingLoss); otherwise distillation on `texts`:
    (1 - cosine) between the student's and the teacher's pooled embeddings (`targets`, or
    computed online from `teacher`), plus `hidden_weight` x MSE between student layer i's
    hidden states and teacher layer `layer_map[i]`'s (needs `teacher`, computed online).

    Returns:
        list[dict]: per step: step, loss, seconds (since the start), lr.
    """
    with torch.enable_grad():  # callers (notebooks, benchmarks) often disable it globally
        return _fit_encoder(student, tokenizer, steps, batch_size, lr, max_length, texts,
                            teacher, targets, pairs, hidden_weight, layer_map, masks, schedule,
                            warmup, seed, progress, desc)


def _fit_encoder(student, tokenizer, steps, batch_size, lr, max_length, texts, teacher,
                 targets, pairs, hidden_weight, layer_map, masks, schedule, warmup, seed,
                 progress, desc):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr,
                            weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, warmup))
    n = len(pairs) if pairs is not None else len(texts)
    bar = _progress(steps, desc, progress)
    history, start = [], time.perf_counter()
    student.train()
    try:
        for step, idx in enumerate(_batches(n, batch_size, steps, seed)):
            if schedule is not None:
                masks = schedule(step) or masks
            if pairs is not None:
                loss = _contrastive_loss(student, tokenizer, [pairs[i] for i in idx], max_length)
            else:
                loss = _distill_loss(student, tokenizer, [texts[i] for i in idx], max_length,
                                     teacher, None if targets is None else targets[idx],
                                     hidden_weight, layer_map)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            sched.step()
            apply_masks(student, masks)
            history.append({"step": step + 1, "loss": loss.item(),
                            "seconds": time.perf_counter() - start,
                            "lr": sched.get_last_lr()[0]})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    finally:
        if bar is not None:
            bar.close()
        student.eval()
    return history


def _contrastive_loss(student, tokenizer, pairs, max_length):
    q = tokenizer([a for a, _ in pairs], padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt")
    d = tokenizer([b for _, b in pairs], padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt")
    eq = _pool(student(**q).last_hidden_state, q["attention_mask"])  # (B, dim)
    ed = _pool(student(**d).last_hidden_state, d["attention_mask"])  # (B, dim)
    scores = 20.0 * eq @ ed.T  # (B, B): the diagonal holds the right documents
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(pairs)))


def _distill_loss(student, tokenizer, texts, max_length, teacher, targets, hidden_weight,
                  layer_map):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
    want_hidden = hidden_weight > 0
    out = student(**batch, output_hidden_states=want_hidden)
    emb = _pool(out.last_hidden_state, batch["attention_mask"])  # (B, dim)
    t_out = None
    if targets is None or want_hidden:
        with torch.no_grad():
            t_out = teacher(**batch, output_hidden_states=want_hidden)
        if targets is None:
            targets = _pool(t_out.last_hidden_state, batch["attention_mask"])
    loss = (1.0 - (emb * targets).sum(-1)).mean()
    if want_hidden:
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        terms = []
        # hidden_states[0] is the embedding output; layer i's output is hidden_states[i + 1]
        for i, t in enumerate(layer_map):
            diff = (out.hidden_states[i + 1] - t_out.hidden_states[t + 1]) ** 2 * mask
            terms.append(diff.sum() / (mask.sum() * diff.shape[-1]))
        loss = loss + hidden_weight * torch.stack(terms).mean()
    return loss


def fit_classifier(student, data, *, epochs: int, lr: float, batch_size: int,
                   teacher=None, temperature: float = 4.0, alpha: float = 0.7,
                   masks: dict | None = None, seed: int = 0, progress: bool = True,
                   desc: str = "training", threads: int | None = 1,
                   augment: Callable | None = None,
                   warmup: float | None = None) -> list[dict]:
    """Train a classifier (images -> logits) on `data` (a `cnn.Digits`) in place.

    Loss: cross-entropy on the labels; with a teacher, `alpha` x T^2 x KL(teacher_T ||
    student_T) + (1 - alpha) x cross-entropy, where _T means softmax at temperature T
    (Hinton et al. 2015; T^2 keeps the soft term's gradients at the hard term's scale).

    Layers this small train fastest on one thread (`threads`, None keeps torch's count).
    Convolutional students train in channels-last layout (weights and batches; the model
    is handed back in the default layout): PyTorch's NCHW depthwise-convolution backward
    is slow on CPU, and a DS-CNN step takes about half the time in NHWC.
    `augment(x, generator) -> x` transforms each training batch; the teacher then scores the
    same augmented batch ("consistent teaching", Beyer et al. 2022: targets of the clean
    input would teach the student to see through the augmentation, which the teacher never
    learned to). Without augmentation the targets are computed once. `warmup` (a fraction
    of the steps) turns on a learning-rate schedule: linear warm-up, then linear decay to
    10%; None keeps the rate constant.

    Returns:
        list[dict]: per epoch: epoch, loss, test_accuracy, seconds.
    """
    from .measure import threads as torch_threads

    if threads is None:
        threads = torch.get_num_threads()
    with torch_threads(threads), torch.enable_grad():
        return _fit_classifier(student, data, epochs, lr, batch_size, teacher, temperature,
                               alpha, masks, seed, progress, desc, augment, warmup)


def _fit_classifier(student, data, epochs, lr, batch_size, teacher, temperature, alpha, masks,
                    seed, progress, desc, augment, warmup):
    from .cnn import accuracy

    F = torch.nn.functional
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    nhwc = x.dim() == 4 and any(isinstance(m, torch.nn.Conv2d) for m in student.modules())
    if nhwc:  # before the optimizer: it holds the parameters
        student.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = None
    if warmup is not None:
        steps = epochs * -(-len(y) // batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, warmup))
    if teacher is not None:
        teacher.eval()
        if augment is None:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / temperature, dim=-1)  # (N, classes), once
    bar = _progress(epochs, desc, progress)
    history, start = [], time.perf_counter()
    try:
        for epoch in range(epochs):
            student.train()
            order = torch.randperm(len(y), generator=gen)
            total = 0.0
            for i in range(0, len(y), batch_size):
                idx = order[i:i + batch_size]
                xb = x[idx] if augment is None else augment(x[idx], gen)
                if nhwc:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                logits = student(xb)
                loss = F.cross_entropy(logits, y[idx])
                if teacher is not None:
                    if augment is None:
                        target = soft[idx]
                    else:
                        with torch.no_grad():
                            target = F.softmax(teacher(xb) / temperature, dim=-1)
                    kl = F.kl_div(F.log_softmax(logits / temperature, dim=-1), target,
                                  reduction="batchmean")
                    loss = alpha * temperature**2 * kl + (1 - alpha) * loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                apply_masks(student, masks)
                total += loss.item() * len(idx)
            student.eval()
            history.append({"epoch": epoch + 1, "loss": total / len(y),
                            "test_accuracy": accuracy(student, data),
                            "seconds": time.perf_counter() - start})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / len(y):.4f}")
    finally:
        if bar is not None:
            bar.close()
        if nhwc:
            student.to(memory_format=torch.contiguous_format)
        student.eval()
    return history


def cubic_sparsity(final: float, step: int, ramp: int) -> float:
    """Gradual pruning (Zhu & Gupta 2017): sparsity grows as final x (1 - (1 - t)^3)."""
    t = min(1.0, (step + 1) / max(1, ramp))
    return final * (1.0 - (1.0 - t) ** 3)

