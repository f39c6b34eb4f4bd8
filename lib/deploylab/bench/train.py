"""Fine-tuning MiniLM on docstring topics: gradient checkpointing and bf16 autocast."""

from __future__ import annotations

import copy
import random

from . import BenchResult, Variant

VARIANTS = ("fp32", "checkpointing", "checkpointing-every-layer", "bf16-autocast",
            "checkpointing-bf16")
N_CLASSES = 8


def _targets(rows: dict, bf16_native: bool) -> dict:
    """The issue's targets, each with its measured figure and whether it was met."""
    base, bf16 = rows["fp32"], rows["bf16-autocast"]

    def checkpointing(name: str) -> tuple[float, float]:
        return (1 - rows[name]["activation_mb"] / base["activation_mb"],
                rows[name]["p50"] / base["p50"] - 1)

    saved, slower = checkpointing("checkpointing")
    every_saved, every_slower = checkpointing("checkpointing-every-layer")
    speedup = base["p50"] / bf16["p50"]
    loss_gap = abs(bf16["loss"] / base["loss"] - 1)
    return {
        "checkpointing_activation_saving": saved,
        "checkpointing_step_time_increase": slower,
        "checkpointing_met": saved >= 0.40 and slower <= 0.35,
        # reported beside it: the most saving, for a whole extra forward
        "every_layer_activation_saving": every_saved,
        "every_layer_step_time_increase": every_slower,
        "bf16_native": bf16_native,
        "bf16_speedup": speedup,
        # the speed target holds only where the CPU has bf16 instructions (DESIGN.md)
        "bf16_speed_target_applies": bf16_native,
        "bf16_speed_met": (speedup >= 1.2) if bf16_native else None,
        "bf16_loss_gap": loss_gap,
        "bf16_loss_met": loss_gap <= 0.02,
    }


def run(smoke: bool = False) -> BenchResult:
    """Variants `fp32` (baseline), `checkpointing`, `checkpointing-every-layer`,
    `bf16-autocast`, `checkpointing-bf16` (the `train.PRESETS` of the same names).

    `checkpointing` checkpoints every other layer (about half the activations for a sixth
    more operations); `checkpointing-every-layer` is transformers' switch (the most
    saving, one extra forward of the whole encoder).
    all-MiniLM-L6-v2 plus a linear head, fine-tuned with AdamW on `tasks.docstring_topics`
    (8 classes), batch 16 x 128 tokens, 2 threads. The runs start from the same weights,
    see the same batches and the same dropout masks, and take their steps interleaved (one
    step of each, shuffled, per round), so the machine's drift hits all alike.
    latency_ms_p50/p90: optimizer step time without the first (warm-up) step;
    throughput_per_s: training texts per second at p50; activation_mb: bytes saved for
    backward (exact, `train.SavedTensorMeter`); weight_copy_mb: autocast's bf16 weight
    copies, also saved; peak_rss_mb: process high-water mark during the variant's steps
    (all models live in the process, so compare differences, not absolutes);
    quality: cross-entropy on held-out test texts (fp32, no dropout) after the fixed steps.
    """
    from .. import measure
    from ..assets import load_encoder
    from ..train import (
        SequenceClassifier,
        TrainConfig,
        Trainer,
        bf16_supported,
        evaluate,
        topic_batches,
    )

    batch, seq, steps, test_batches = (2, 16, 2, 1) if smoke else (16, 128, 5, 4)
    threads = 2
    tokenizer, encoder = load_encoder("all-MiniLM-L6-v2")
    data = topic_batches(tokenizer, batch_size=batch, max_length=seq, n_batches=steps,
                         n_classes=N_CLASSES)
    test = topic_batches(tokenizer, split="test", batch_size=batch, max_length=seq,
                         n_batches=test_batches, n_classes=N_CLASSES)
    base = SequenceClassifier(encoder, N_CLASSES, seed=0)
    trainers = {name: Trainer(copy.deepcopy(base), data,
                              TrainConfig.preset(name, steps=steps, threads=threads, seed=0))
                for name in VARIANTS}
    del base, encoder
    order, rng = list(VARIANTS), random.Random(0)
    for _ in range(steps):
        rng.shuffle(order)
        for name in order:
            trainers[name].step()
    rows = {}
    with measure.threads(threads):
        for name, t in trainers.items():
            res = t.result(warmup=1)
            rows[name] = {"res": res, "p50": res.step_ms_p50, "p90": res.step_ms_p90,
                          "activation_mb": res.activation_mb,
                          "loss": evaluate(t.model, test)["loss"]}
    bf16_native = bf16_supported("cpu")
    metric = f"test_loss_after_{steps}_steps"
    variants = []
    for name, r in rows.items():
        res, b = r["res"], rows["fp32"]
        variants.append(Variant(
            name=name, latency_ms_p50=r["p50"], latency_ms_p90=r["p90"],
            throughput_per_s=batch * 1e3 / r["p50"], size_mb=None, peak_rss_mb=res.peak_mb,
            quality={"metric": metric, "value": r["loss"]},
            extra={"activation_mb": r["activation_mb"],
                   "weight_copy_mb": max(x["weight_copy_mb"] for x in res.records),
                   "peak_rss_growth_mb": max(x["peak_mb"] - x["before_mb"]
                                             for x in res.records),
                   "step_time_vs_baseline": r["p50"] / b["p50"],
                   "activation_vs_baseline": r["activation_mb"] / b["activation_mb"],
                   "loss_vs_baseline": r["loss"] / b["loss"],
                   "train_loss_per_step": [x["loss"] for x in res.records],
                   "step_ms": [x["time_ms"] for x in res.records],
                   "precision": res.config.precision, "checkpointing": res.config.checkpointing,
                   "checkpointed_blocks": list(res.config.blocks)
                   if res.config.checkpointing == "blocks" else [],
                   "checkpointed_modules": len(res.checkpointed)}))
    return BenchResult(
        suite="train", smoke=smoke, hardware=measure.fingerprint() | {"threads": threads},
        baseline="fp32", variants=variants,
        extra={"model": "all-MiniLM-L6-v2", "task": f"docstring_topics ({N_CLASSES} classes)",
               "batch_size": batch, "seq_len": seq, "steps": steps, "warmup_steps": 1,
               "test_texts": batch * test_batches, "optimizer": "AdamW lr 1e-4",
               "bf16_supported": bf16_native,
               "targets": _targets(rows, bf16_native)})
