"""Making the decoder cheaper to run: int8 dynamic quantization, int8/int4 weight-only
quantization, and ONNX export with past key/values driven by a greedy loop over an ONNX
Runtime session (in fp32, dynamic int8, or int4/int8 weight-only `MatMulNBits`).

Which int8 path, and why:
- `int8_dynamic` uses `torch.ao.quantization.quantize_dynamic` (fbgemm kernels). That API is
  deprecated in torch 2.13, and DESIGN.md prefers torchao; but torchao's
  `Int8DynamicActivationInt8WeightConfig` runs its CPU fallback per call and was ~6x slower
  than fp32 per decoded token for this model on this machine, while fbgemm's fused kernels
  are one op per layer. The kit's `quantize(model, DynamicInt8Config(backend="torchao"))`
  is one switch away and measured in the notebook.
- `weight_only` uses the kit's `quantize(model, WeightOnlyConfig(bits, backend="torchao"))`:
  int8 runs here; int4 needs torchao's optional `mslk` kernels, which this CPU-only install
  lacks, so it raises `BackendUnsupportedError` with that reason (the bench keeps a skipped
  row).
Without VNNI (this CPU has AVX2 only) int8 matrix products go through 16-bit pair sums and
gain little over fp32; at batch 1 a decoder step is a chain of small matrix-vector products
whose cost is mostly per-call overhead, where quantizing the activations adds work.

Example:
    >>> q = int8_dynamic(pair.target)
    >>> onnx_path = export_decoder(pair.target)
    >>> dec = OnnxDecoder(onnx_path)
    >>> dec.greedy(prompt_ids, 32).ids
"""

from __future__ import annotations

import copy
import hashlib
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..._files import atomic_path
from ...settings import cache_dir
from .data import ComposeError
from .generate import Generation, check_request

__all__ = ["OnnxDecoder", "export_decoder", "int8_dynamic", "model_size_mb", "weight_only"]


def int8_dynamic(model):
    """A copy of `model` with every `nn.Linear` in int8 (weights per channel, activations
    quantized per call): fbgemm kernels through `torch.ao.quantization.quantize_dynamic`.

    The input embedding stays fp32 (a lookup, no matrix product); the output projection,
    tied to it in the float model, becomes its own int8 copy.
    """
    with warnings.catch_warnings():  # the torch.ao deprecation notice: see the module doc
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(),
                                                   {torch.nn.Linear}, dtype=torch.qint8)
    return q.eval()


def weight_only(model, bits: int = 8):
    """int8 or int4 weight-only quantization through the kit's torchao backend.

    Raises:
        deploylab.quantize.BackendUnsupportedError: where torchao's kernels for `bits` do
            not run on this machine (int4 on a CPU without torchao's `mslk` kernels).
    """
    from ... import quantize as q

    return q.quantize(model, q.WeightOnlyConfig(bits=bits, block_size=32,
                                                backend="torchao")).module.eval()


def model_size_mb(model) -> float:
    """Bytes of the model's state (quantized weights packed) in MB, tied weights once."""
    import io

    buf = io.BytesIO()
    state = model.state_dict()
    seen, keep = set(), {}
    for k, v in state.items():
        key = (v.data_ptr(), tuple(v.shape)) if isinstance(v, torch.Tensor) else (k,)
        if key not in seen:
            seen.add(key)
            keep[k] = v
    torch.save(keep, buf)
    return len(buf.getvalue()) / 1e6


# ------------------------------------------------------------------------------ ONNX


class _FlatCache(torch.nn.Module):
    """The decoder with its cache as plain tensors: (input_ids, past_0_key, past_0_value,
    ...) -> (logits, present_0_key, present_0_value, ...), each past/present (1, heads,
    positions, head_dim). Positions follow from the past length, so no other input."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(self, input_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        n_past = past[0].shape[2]
        positions = torch.arange(n_past, n_past + input_ids.shape[1]).unsqueeze(0)
        out = self.model(input_ids=input_ids, cache=cache, position_ids=positions,
                         use_cache=True)
        flat = []
        for i in range(self.layers):
            layer = cache.layers[i]  # updated in place
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def _shape(model) -> tuple[int, int, int]:
    cfg = model.config
    heads = cfg.num_key_value_heads or cfg.num_attention_heads
    return cfg.num_hidden_layers, heads, cfg.hidden_size // cfg.num_attention_heads


def _digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().numpy().tobytes())
    return h.hexdigest()[:16]


def export_decoder(model, path: str | Path | None = None, *, int8: bool = False,
                   weight_only_bits: int | None = None) -> Path:
    """Export a causal LM with past key/values to ONNX (cached by the weights' digest), with
    a parity check against torch on a prefill and a cached step; `int8=True` adds ONNX
    Runtime dynamic int8 quantization of its MatMuls, `weight_only_bits=4` (or 8) stores
    their weights in 4 (8) bits per block of 32 for ORT's `MatMulNBits`, the activations
    staying float (both through `deploylab.quantize`).

    Args:
        model: a transformers causal LM with a `DynamicCache` (LLaMA-style here).
        path (str | Path | None, default None): output file; None caches by weight digest.
        int8 (bool, default False): also quantize (returns the int8 file).
        weight_only_bits (int | None, default None): 4 or 8: weight-only instead.

    Returns:
        Path: the .onnx file.
    """
    if int8 and weight_only_bits:
        raise ComposeError("pick one of int8 (dynamic) and weight_only_bits, not both")
    from transformers import DynamicCache  # noqa: F401  (imported for the tracer's sake)

    layers, heads, head_dim = _shape(model)
    out = Path(path) if path else cache_dir("compose", "onnx") / f"decoder-{_digest(model)}.onnx"
    if not out.is_file():
        wrapper = _FlatCache(copy.deepcopy(model).eval())
        wrapper.model.config._attn_implementation = "eager"
        ids = torch.randint(0, model.config.vocab_size, (1, 3))
        past = [torch.randn(1, heads, 5, head_dim) for _ in range(2 * layers)]
        names = [f"past_{i}_{kv}" for i in range(layers) for kv in ("key", "value")]
        outs = ["logits"] + [n.replace("past", "present") for n in names]
        axes = {"input_ids": {1: "new"}, "logits": {1: "new"}}
        axes.update({n: {2: "past"} for n in names})
        axes.update({n: {2: "total"} for n in outs[1:]})
        with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (ids, *past), str(tmp), dynamo=False,
                              input_names=["input_ids", *names], output_names=outs,
                              dynamic_axes=axes, opset_version=17)
        _parity(model, out)
    from ... import quantize as q

    if weight_only_bits:
        return q.quantize(out, q.WeightOnlyConfig(bits=weight_only_bits)).path
    if not int8:
        return out
    return q.quantize(out, q.DynamicInt8Config.for_this_cpu(op_types=("MatMul", "Gemm"))).path


def _parity(model, path: Path, tol: float = 1e-3) -> None:
    from .generate import kv_cache

    prompt = list(range(1, 12))
    ref = kv_cache(model, prompt, 6).ids
    got = OnnxDecoder(path).greedy(prompt, 6).ids
    if ref != got:
        path.unlink(missing_ok=True)
        raise ComposeError(f"the ONNX decoder's greedy tokens {got} differ from torch's {ref}; "
                           "nothing was kept")


class OnnxDecoder:
    """Greedy generation over an ONNX Runtime session of `export_decoder`'s graph: the
    prompt runs once with an empty past, then one token per call with the presents fed
    back as pasts.

    Args:
        path (str | Path): the .onnx file.
        threads (int, default 2): intra-op threads.
        context (int | None, default None): the model's context (for request checks); None
            reads nothing and allows 256.
    """

    def __init__(self, path, *, threads: int = 2, context: int | None = None):
        from ...export import session

        self.path = Path(path)
        self.session = session(self.path, threads=threads)
        self.context = context or 256
        pasts = [i for i in self.session.get_inputs() if i.name.startswith("past_")]
        self.past_names = [i.name for i in pasts]
        self.heads, self.head_dim = pasts[0].shape[1], pasts[0].shape[3]

    def greedy(self, prompt_ids, max_new_tokens: int, *, stop: int | None = None,
               truncate: bool = False) -> Generation:
        """As `generate.kv_cache` (greedy, batch 1), through ONNX Runtime."""
        (prompt,) = check_request(prompt_ids, max_new_tokens, self.context, truncate=truncate)
        cache = self.new_cache()
        start, new, ttft = time.perf_counter(), [], 0.0
        ids = prompt
        while len(new) < max_new_tokens:
            nxt = cache.picks(ids)[-1]
            ttft = ttft or (time.perf_counter() - start) * 1e3
            new.append(nxt)
            if nxt == stop:
                break
            ids = [nxt]
        return Generation([new], ttft, (time.perf_counter() - start) * 1e3,
                          target_calls=len(new))

    def __call__(self, prompt_ids, max_new_tokens: int, *, stop: int | None = None,
                 truncate: bool = False) -> Generation:
        return self.greedy(prompt_ids, max_new_tokens, stop=stop, truncate=truncate)

    def new_cache(self) -> _OnnxCache:
        """An empty key/value cache over this session, as `generate.speculative` drives it."""
        return _OnnxCache(self)


class _OnnxCache:
    """The past key/values of one sequence, fed back to an `OnnxDecoder`'s session."""

    def __init__(self, decoder: OnnxDecoder):
        self.decoder, self.context, self.length = decoder, decoder.context, 0
        empty = np.zeros((1, decoder.heads, 0, decoder.head_dim), np.float32)
        self.pasts = dict.fromkeys(decoder.past_names, empty)

    def __len__(self) -> int:
        return self.length

    def logits(self, ids) -> np.ndarray:
        """Feed `ids` on top of the pasts; (len(ids), V) logits, the pasts extended."""
        logits, *presents = self.decoder.session.run(
            None, {"input_ids": np.asarray([list(ids)], np.int64), **self.pasts})
        self.pasts = dict(zip(self.decoder.past_names, presents, strict=True))
        self.length += len(ids)
        return logits[0]

    def picks(self, ids) -> list[int]:
        """Feed `ids` on top of the pasts; the greedy pick after each of them."""
        return self.logits(ids).argmax(-1).tolist()

    def crop(self, keep: int) -> None:
        if self.length > keep:  # a rejected guess: its positions leave the pasts
            self.pasts = {n: np.ascontiguousarray(p[:, :, :keep]) for n, p in self.pasts.items()}
            self.length = keep
