"""The NLP generative case study: Smart Compose for Python code, from a naive decoder to
fast, quantized, speculative generation.

- `data`: standard-library source split by file, a byte-level BPE tokenizer trained on the
  training files (round-trips exactly), token windows, next-line completion tasks;
- `model`: a LLaMA-style target and a smaller draft (transformers' `LlamaConfig`, so
  `generate()`, the KV cache and assisted generation work), trained together and cached;
  `load_causal_lm` takes a user's pretrained causal LM by path or hub id;
- `generate`: the naive, KV-cache, sampling, batched and speculative loops, request checks,
  perplexity, exact match and character accuracy;
- `runtime`: int8 dynamic and int8/int4 weight-only quantization, ONNX export with past
  key/values and a greedy loop over an ONNX Runtime session;
- `evaluate`: the variants measured side by side;
- `serving`: `ComposePipeline`, code in, completed line and timings out, for `deploylab.serve`.

Example:
    >>> from deploylab.cases import compose
    >>> pair = compose.train_pair()                     # ~10 min on 2 cores, then cached
    >>> tasks = compose.completion_tasks(pair.tokenizer, compose.source_split().held_out)
    >>> compose.kv_cache(pair.target, tasks[0].prompt_ids, 32).tokens_per_s
"""

from .data import (
    CompletionTask,
    ComposeError,
    SourceFile,
    Split,
    completion_tasks,
    encode_files,
    lm_windows,
    newline_id,
    source_split,
    tokenizer,
)
from .evaluate import ALL_VARIANTS, ISSUE_VARIANTS, Variant, build_variants, compare
from .generate import (
    Generation,
    Sampling,
    char_accuracy,
    check_request,
    complete_line,
    exact_match,
    hf_generate,
    kv_cache,
    line_quality,
    naive,
    perplexity,
    speculative,
)
from .model import (
    ModelPair,
    ModelSizes,
    TrainSettings,
    build_model,
    held_out_stream,
    load_causal_lm,
    param_count,
    train_pair,
)
from .runtime import OnnxDecoder, export_decoder, int8_dynamic, model_size_mb, weight_only

__all__ = [
    "ALL_VARIANTS", "ISSUE_VARIANTS", "ComposeError", "CompletionTask", "Generation",
    "ModelPair", "ModelSizes", "OnnxDecoder", "Sampling", "SourceFile", "Split",
    "TrainSettings", "Variant", "build_model", "build_variants", "char_accuracy",
    "check_request", "compare", "complete_line", "completion_tasks", "encode_files",
    "exact_match", "export_decoder", "held_out_stream", "hf_generate", "int8_dynamic",
    "kv_cache", "line_quality", "lm_windows", "load_causal_lm", "model_size_mb", "naive",
    "newline_id", "param_count", "perplexity", "prefetch", "source_split", "speculative",
    "tokenizer", "train_pair", "weight_only",
]


def prefetch():
    """Train (or find cached) the full pair and export its ONNX decoders (the target in fp32
    and int8, the draft): what the notebook, the bench and the server load."""
    pair = train_pair(progress=False)
    return [pair.folder, export_decoder(pair.target), export_decoder(pair.target, int8=True),
            export_decoder(pair.draft)]
