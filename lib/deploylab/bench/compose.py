"""Smart Compose for Python code: a small decoder from naive generation to KV cache, int8 and
speculative decoding, measured side by side.

Variants: `naive-fp32` (baseline: no KV cache, the whole sequence recomputed per token),
`kv-cache-fp32`, `kv-cache-int8` (fbgemm int8 dynamic), `speculative-int8` (the deployed
form: the int8 target verifies K draft tokens per call, both models ONNX Runtime sessions),
and beside them the same speculation in torch (`speculative-int8-torch`,
`speculative-fp32`), torchao weight-only int8 and int4 (skipped where its kernels do not
run), and the ONNX Runtime greedy loop in fp32 and int8. The models are the kit's own (3 x
128 target, 1 x 64 draft, trained together on the standard library's source and cached).
Throughput: generated tokens per second for 32 new tokens at batch 1 from prompts of 192
tokens of held-out code, timed interleaved. Quality: next-line exact match on held-out files
(also character accuracy and perplexity). Targets: speculative-int8 >= 4x the baseline's
tokens/s with exact match >= 97% of the baseline's; kv-cache-int8 perplexity within 5% of
kv-cache-fp32's.
"""

from __future__ import annotations

import torch

from .. import measure
from ..cases import compose
from ..cases.retrieval_eval import target
from . import BenchResult, Variant

FULL = {"sizes": "full", "train": "full", "tasks": 150, "timing_prompts": 6, "repeats": 2,
        "warmup": 1, "windows": 32, "new_tokens": 32, "context_tokens": 192}
SMOKE = {"sizes": "smoke", "train": "smoke", "tasks": 4, "timing_prompts": 1, "repeats": 1,
         "warmup": 0, "windows": 2, "new_tokens": 8, "context_tokens": 96}
THREADS = 2
K = 4


def run(smoke: bool = False) -> BenchResult:
    p = SMOKE if smoke else FULL
    torch.set_num_threads(THREADS)
    pair = compose.train_pair(compose.ModelSizes.preset(p["sizes"]),
                              compose.TrainSettings.preset(p["train"]), progress=False)
    split = compose.source_split(max_files=pair.settings.max_files)
    tasks = compose.completion_tasks(pair.tokenizer, split.held_out, p["tasks"],
                                     context_tokens=p["context_tokens"], seed=0)
    timing = [t.prompt_ids for t in compose.completion_tasks(
        pair.tokenizer, split.held_out, p["timing_prompts"], context_tokens=p["context_tokens"],
        seed=1)]
    windows = compose.lm_windows(compose.held_out_stream(pair), 256, p["windows"])
    variants = compose.build_variants(pair, compose.ALL_VARIANTS, k=K, threads=THREADS)
    table, details = compose.compare(variants, pair.tokenizer, tasks, windows, timing,
                                     new_tokens=p["new_tokens"], repeats=p["repeats"],
                                     warmup=p["warmup"])
    rows = []
    for name, v in variants.items():
        if v.skipped:
            rows.append(Variant(name=name, skipped=v.skipped, extra={"what": v.what}))
            continue
        r = table.loc[name]
        rows.append(Variant(
            name=name, latency_ms_p50=r["latency_ms_p50"], latency_ms_p90=r["latency_ms_p90"],
            throughput_per_s=r["tokens_per_s"], size_mb=r["size_mb"],
            peak_rss_mb=r["peak_rss_mb"],
            quality={"metric": "next_line_exact_match", "value": r["exact_match"]},
            extra={"what": v.what, "ttft_ms_p50": r["ttft_ms_p50"],
                   "char_accuracy": r["char_accuracy"], "perplexity": r["perplexity"],
                   "acceptance_rate": r["acceptance_rate"],
                   "speedup_vs_baseline": r["speedup_vs_baseline"],
                   "exact_match_vs_baseline": r["exact_match_vs_baseline"]}))
    by = {v.name: v for v in rows}
    spec, kv8, kv32 = by["speculative-int8"], by["kv-cache-int8"], by["kv-cache-fp32"]
    ppl_ratio = kv8.extra["perplexity"] / kv32.extra["perplexity"]
    targets = [target("speculative-int8",
                      speedup=(spec.extra["speedup_vs_baseline"], 4.0, "min"),
                      exact_match_ratio=(spec.extra["exact_match_vs_baseline"], 0.97, "min")),
               target("kv-cache-int8", perplexity_ratio=(ppl_ratio, 1.05, "max"))]
    same = {n: details[n]["completions"] == details["naive-fp32"]["completions"]
            for n in details}
    return BenchResult(
        suite="compose", smoke=smoke, hardware=measure.fingerprint(), baseline="naive-fp32",
        variants=rows,
        extra={"model": {"target_params": compose.param_count(pair.target),
                         "draft_params": compose.param_count(pair.draft),
                         "sizes": pair.curves["sizes"], "train": pair.curves["settings"],
                         "train_seconds": pair.curves["seconds"],
                         "draft": "trained beside the target, distilled online from its "
                                  "logits"},
               "quality_metric": "next_line_exact_match", "tasks": len(tasks),
               "prompt_tokens": p["context_tokens"], "new_tokens": p["new_tokens"],
               "timing_prompts": len(timing), "timing_rounds": p["repeats"] * len(timing),
               "threads": THREADS, "draft_tokens_per_call": K,
               "perplexity_windows": len(windows), "perplexity_ratio_int8": ppl_ratio,
               "same_completions_as_baseline": same, "targets": targets})
