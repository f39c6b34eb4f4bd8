"""Pruning that shows what it buys: sparse masks, and structured removal that shrinks the model.

Two kinds, one verb (`prune_(model, config)`, in place):

- `MagnitudeConfig`: unstructured magnitude pruning. The smallest weights become zero, layer
  by layer or ranked over the whole model (global). The tensors keep their shapes, so a dense
  runtime (torch, ONNX Runtime) runs the model **exactly as fast as before**: the zeros are
  still multiplied. What sparsity buys without a sparse kernel is storage: `save_sparse`
  writes only the surviving values plus a one-bit-per-weight mask (safetensors), which is
  about (1 - sparsity) x 4 + 1/8 bytes per weight instead of 4.
- `StructuredConfig`: removes whole units (attention heads and FFN neurons of BERT-like
  encoders, output channels of CNN convolutions). The result is a smaller *dense* model with
  thinner matrices: it is faster in every runtime, exports to ONNX and quantizes like any
  other model.

Around them: `sensitivity_scan` (which layers tolerate pruning), `recover_` (a short
fine-tune after pruning, plain or distilled from the unpruned model, optionally growing the
sparsity gradually) and `save_pruned`/`load_pruned` (safetensors plus the kept units).

Example:
    >>> from deploylab import prune
    >>> report = prune.prune_(model, prune.StructuredConfig.share(0.4))  # 40% heads and FFN
    >>> report.params_after / report.params_before
    >>> report = prune.prune_(other, prune.MagnitudeConfig(0.9))         # 90% zeros
    >>> prune.save_sparse(other, "model.sparse.safetensors")
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DeploylabError

__all__ = [
    "PruneError",
    "MagnitudeConfig",
    "StructuredConfig",
    "RecoveryConfig",
    "PruneReport",
    "prune_",
    "recover_",
    "sensitivity_scan",
    "prunable_layers",
    "layer_groups",
    "sparsity",
    "count_params",
    "save_sparse",
    "load_sparse",
    "save_dense",
    "save_pruned",
    "load_pruned",
    "encoder_training_data",
    "clone",
    "minilm_pruned",
]

MB = 1e6  # sizes are reported in decimal megabytes, as DESIGN.md's 90.4 MB for MiniLM


class PruneError(DeploylabError):
    """A pruning request that cannot be carried out (bad amount, unknown layer, model kind)."""


def _check_amount(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise PruneError(f"pruning amount {name}={value!r} must be a number in [0, 1) (the "
                         "fraction removed; 1 would remove everything)")
    return float(value)


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class MagnitudeConfig:
    """Unstructured magnitude pruning: zero the smallest-|w| weights.

    Args:
        amount (float): fraction of weights zeroed, in [0, 1). The final sparsity, not an
            increment: pruning an already 50% sparse layer to 0.5 changes nothing.
        scope (str, default "layer"): "layer" prunes `amount` of every layer (uniform);
            "global" ranks all chosen weights together, so layers with many small weights
            lose more (weights of different layers must then be on comparable scales).
        layers (tuple[str, ...] | None, default None): module names to prune (see
            `prunable_layers`); None takes every Linear, Conv and Embedding weight.

    Example:
        >>> prune_(model, MagnitudeConfig.global_(0.8))
    """

    amount: float
    scope: str = "layer"
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_amount("amount", self.amount)
        if self.scope not in ("layer", "global"):
            raise PruneError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        if self.layers is not None:
            if isinstance(self.layers, str) or not all(isinstance(n, str) for n in self.layers):
                raise PruneError(f"layers must be a tuple of module names, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(self.layers))

    @classmethod
    def layerwise(cls, amount: float, layers: Sequence[str] | None = None) -> MagnitudeConfig:
        """The same fraction in every layer."""
        return cls(amount, "layer", None if layers is None else tuple(layers))

    @classmethod
    def global_(cls, amount: float, layers: Sequence[str] | None = None) -> MagnitudeConfig:
        """One magnitude threshold for the whole model."""
        return cls(amount, "global", None if layers is None else tuple(layers))


@dataclass(frozen=True)
class StructuredConfig:
    """Structured pruning: remove whole units, producing a smaller dense model.

    Args:
        heads (float, default 0.0): fraction of attention heads removed in every layer of a
            BERT-like encoder (rounded; at least one head stays).
        ffn (float, default 0.0): fraction of FFN (intermediate) neurons removed per layer.
        channels (float, default 0.0): fraction of output channels removed from every
            convolution of a CNN whose `features` is a Sequential of Conv2d layers followed
            by a `classifier` starting with Flatten and Linear (the kit's `DigitsCNN`).
        importance (str, default "auto"): how units are ranked. "magnitude": weight norms
            (a head by its value and output projections, a neuron by its input row times
            its output column, a channel by its filter's L1 norm); "activation": mean
            activation on `calibration` inputs times the outgoing weights' norm (better:
            it sees what the data actually uses); "auto": activation when calibration
            inputs are given, else magnitude.
        calibration (object, default None): inputs for activation importance: a list of
            tokenizer outputs (dicts of tensors) for encoders, an image tensor for CNNs.

    Example:
        >>> prune_(model, StructuredConfig.share(0.4, calibration=batches))
    """

    heads: float = 0.0
    ffn: float = 0.0
    channels: float = 0.0
    importance: str = "auto"
    calibration: object = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("heads", "ffn", "channels"):
            _check_amount(name, getattr(self, name))
        if self.importance not in ("auto", "magnitude", "activation"):
            raise PruneError(f"importance must be 'auto', 'magnitude' or 'activation', got "
                             f"{self.importance!r}")
        if self.importance == "activation" and self.calibration is None:
            raise PruneError("importance='activation' needs calibration inputs; pass "
                             "calibration=... or use importance='magnitude'")

    @classmethod
    def share(cls, amount: float, **kw) -> StructuredConfig:
        """The same share of heads and FFN neurons (a transformer shrunk evenly)."""
        return cls(heads=amount, ffn=amount, **kw)

    @classmethod
    def cnn(cls, amount: float, **kw) -> StructuredConfig:
        """A share of every convolution's output channels."""
        return cls(channels=amount, **kw)

    @property
    def use_activations(self) -> bool:
        return self.importance == "activation" or (self.importance == "auto"
                                                   and self.calibration is not None)


@dataclass(frozen=True)
class RecoveryConfig:
    """A short fine-tune after pruning (`recover_`).

    Args:
        steps (int, default 200): optimizer steps (encoders); CNNs use `epochs`.
        epochs (int, default 5): passes over the digits' training split (CNNs).
        lr (float, default 1e-4): peak learning rate (AdamW for encoders, Adam for CNNs;
            CNNs usually want ~1e-3).
        batch_size (int, default 32): texts (or images) per step.
        max_length (int, default 64): tokens per text while training.
        mode (str, default "distill"): "distill" matches the unpruned teacher's outputs
            (embeddings, or soft targets for classifiers); "plain" trains on the task's
            labels (query->docstring pairs with in-batch negatives; digit labels).
        gradual (bool, default False): with a `MagnitudeConfig` passed to `recover_`, grow
            the sparsity from 0 to its amount over the first 2/3 of the steps (cubic
            schedule) instead of pruning at once; gentler on quality.
        seed (int, default 0): data order and initial state.
        progress (bool, default True): a tqdm bar.
    """

    steps: int = 200
    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    mode: str = "distill"
    gradual: bool = False
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "epochs", "batch_size", "max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PruneError(f"{name} must be an int >= 1, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise PruneError(f"lr must be > 0, got {self.lr!r}")
        if self.mode not in ("distill", "plain"):
            raise PruneError(f"mode must be 'distill' or 'plain', got {self.mode!r}")

    @classmethod
    def quick(cls, **kw) -> RecoveryConfig:
        """A few steps: smoke runs and tests."""
        return cls(**{"steps": 4, "epochs": 1, "batch_size": 8, "max_length": 32,
                      "progress": False, **kw})


# ----------------------------------------------------------------------------- report


@dataclass
class PruneReport:
    """What `prune_` did.

    Attributes:
        method (str): "magnitude" or "structured".
        params_before (int): parameters before.
        params_after (int): parameters after (structured); for magnitude pruning the count
            is unchanged and `nonzero_after` says how many are left.
        nonzero_after (int): non-zero parameters after.
        layers (dict[str, dict]): per layer (or unit group): before, after, sparsity.
        masks (dict[str, torch.Tensor]): magnitude pruning's keep-masks (bool, weight shape),
            for `recover_` to keep the zeros zero.
        kept (dict[str, list[int]]): structured pruning's kept unit indices per group, so
            `load_pruned` can rebuild the same shapes.
    """

    method: str
    params_before: int
    params_after: int
    nonzero_after: int
    layers: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict, repr=False)
    kept: dict = field(default_factory=dict, repr=False)

    @property
    def sparsity(self) -> float:
        """Zeros among the parameters, counted against the *original* parameter count."""
        return 1.0 - self.nonzero_after / self.params_before

    def table(self):
        """The per-layer figures as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame.from_dict(self.layers, orient="index")


# ----------------------------------------------------------------------------- helpers


def _prunable_types():
    import torch.nn as nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)


def prunable_layers(model) -> list[str]:
    """Names of the modules whose weights magnitude pruning can zero (Linear, Conv, Embedding).

    Returns:
        list[str]: in model order, e.g. "encoder.layer.0.attention.self.query".
    """
    types = _prunable_types()
    return [n for n, m in model.named_modules() if isinstance(m, types) and n]


def layer_groups(model) -> dict[str, list[str]]:
    """Prunable layers grouped the way people reason about them, for `sensitivity_scan`.

    BERT-like encoders: "embeddings", then per layer "L.attention" (q, k, v, output) and
    "L.ffn" (intermediate, output). Other models: one group per prunable layer.

    Returns:
        dict[str, list[str]]: group name -> module names.
    """
    groups: dict[str, list[str]] = {}
    for name in prunable_layers(model):
        parts = name.split(".")
        if "embeddings" in parts:
            key = "embeddings"
        elif "layer" in parts and parts[parts.index("layer") + 1].isdigit():
            i = parts[parts.index("layer") + 1]
            key = f"{i}.attention" if "attention" in parts else f"{i}.ffn"
        else:
            key = name
        groups.setdefault(key, []).append(name)
    return groups


def count_params(model) -> int:
    """Parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())


def _nonzero(model) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def sparsity(model, layers: Iterable[str] | None = None) -> float:
    """Fraction of zeros among the weights of `layers` (default: every prunable layer)."""
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else prunable_layers(model)
    total = sum(modules[n].weight.numel() for n in names)
    zeros = sum(int((modules[n].weight == 0).sum()) for n in names)
    return zeros / total if total else 0.0


def _resolve_layers(model, names: Sequence[str] | None) -> list[str]:
    available = prunable_layers(model)
    if names is None:
        return available
    missing = [n for n in names if n not in set(available)]
    if missing:
        hint = ", ".join(available[:6]) + (", ..." if len(available) > 6 else "")
        raise PruneError(f"no prunable layer named {missing[0]!r} in this "
                         f"{type(model).__name__}; prunable layers are {hint} "
                         f"(see prune.prunable_layers(model))")
    return list(names)


# --------------------------------------------------------------------- the verb: prune_

_HANDLERS: dict[type, Callable] = {}


def _handles(config_type: type):
    def register(fn):
        _HANDLERS[config_type] = fn
        return fn

    return register


def prune_(model, config) -> PruneReport:
    """Prune a torch model in place.

    Args:
        model (torch.nn.Module): the model; for `StructuredConfig`, a BERT-like encoder
            (transformers BertModel or a model holding one) or a CNN like `cnn.DigitsCNN`.
        config (MagnitudeConfig | StructuredConfig): what to remove.

    Returns:
        PruneReport: parameters before and after, per-layer figures, masks or kept units.

    Raises:
        PruneError: an unknown layer name, or a structure this function cannot shrink.
    """
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise PruneError(f"no pruning handler for {type(config).__name__}; use one of "
                         f"{', '.join(t.__name__ for t in _HANDLERS)}")
    return handler(model, config)


@_handles(MagnitudeConfig)
def _magnitude(model, config: MagnitudeConfig) -> PruneReport:
    import torch

    names = _resolve_layers(model, config.layers)
    modules = dict(model.named_modules())
    before = count_params(model)
    masks: dict = {}
    with torch.no_grad():
        if config.scope == "global":
            flat = torch.cat([modules[n].weight.detach().abs().flatten() for n in names])
            k = int(config.amount * flat.numel())
            threshold = torch.kthvalue(flat, k).values if k > 0 else flat.new_tensor(-1.0)
            for n in names:
                masks[n] = modules[n].weight.abs() > threshold
        else:
            for n in names:
                w = modules[n].weight
                k = int(config.amount * w.numel())
                keep = torch.ones(w.numel(), dtype=torch.bool)
                if k > 0:  # exactly k zeros, ties broken by position
                    keep[torch.argsort(w.detach().abs().flatten(), stable=True)[:k]] = False
                masks[n] = keep.view_as(w)
        layers = {}
        for n in names:
            w = modules[n].weight
            w.mul_(masks[n])
            layers[n] = {"weights": w.numel(), "nonzero": int(masks[n].sum()),
                         "sparsity": 1.0 - float(masks[n].float().mean())}
    return PruneReport("magnitude", before, before, _nonzero(model), layers, masks)


# ------------------------------------------------------------------ structured: encoders


def _bert_layers(model):
    """The ModuleList of BERT-like layers inside `model` (model.encoder.layer)."""
    for name, m in model.named_modules():
        if name.endswith("encoder.layer") and hasattr(m, "__getitem__"):
            first = m[0] if len(m) else None
            if first is not None and hasattr(first, "attention") and hasattr(
                    first, "intermediate"):
                return m
    return None


def _slice_linear(lin, out_idx=None, in_idx=None):
    """A new Linear keeping output rows `out_idx` and input columns `in_idx`."""
    import torch

    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if out_idx is not None:
        w, b = w[out_idx], (b[out_idx] if b is not None else None)
    if in_idx is not None:
        w = w[:, in_idx]
    new = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new.to(lin.weight.dtype)


def _head_columns(heads: Sequence[int], size: int):
    import torch

    return torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads])


def _keep_heads(layer, keep: Sequence[int]) -> None:
    """Rebuild a BERT layer's attention with only the heads in `keep` (sorted)."""
    att = layer.attention.self
    cols = _head_columns(keep, att.attention_head_size)
    # q, k, v: (all_head_size, hidden) -> rows of kept heads; output: columns of kept heads
    att.query = _slice_linear(att.query, out_idx=cols)
    att.key = _slice_linear(att.key, out_idx=cols)
    att.value = _slice_linear(att.value, out_idx=cols)
    layer.attention.output.dense = _slice_linear(layer.attention.output.dense, in_idx=cols)
    att.num_attention_heads = len(keep)
    att.all_head_size = len(keep) * att.attention_head_size


def _keep_neurons(layer, keep) -> None:
    """Rebuild a BERT layer's FFN with only the intermediate neurons in `keep`."""
    layer.intermediate.dense = _slice_linear(layer.intermediate.dense, out_idx=keep)
    layer.output.dense = _slice_linear(layer.output.dense, in_idx=keep)


def _encoder_scores(model, layers, config: StructuredConfig):
    """Per layer: (head scores (heads,), neuron scores (ffn,)); higher = more important."""
    import torch

    heads, neurons = [], []
    for layer in layers:
        att = layer.attention.self
        n, d = att.num_attention_heads, att.attention_head_size
        w_o = layer.attention.output.dense.weight.detach()  # (hidden, heads*d)
        w_v = att.value.weight.detach()  # (heads*d, hidden)
        heads.append(torch.stack([w_v[h * d:(h + 1) * d].norm() * w_o[:, h * d:(h + 1) * d].norm()
                                  for h in range(n)]))
        w_in = layer.intermediate.dense.weight.detach()  # (ffn, hidden)
        w_out = layer.output.dense.weight.detach()  # (hidden, ffn)
        neurons.append(w_in.norm(dim=1) * w_out.norm(dim=0))
    if config.use_activations:
        heads, neurons = _encoder_activation_scores(model, layers, config.calibration)
    return heads, neurons


def _encoder_activation_scores(model, layers, batches):
    """Mean contribution of each head and neuron to the residual stream on real inputs."""
    import torch

    if isinstance(batches, Mapping):
        batches = [batches]
    heads = [torch.zeros(la.attention.self.num_attention_heads) for la in layers]
    neurons = [torch.zeros(la.intermediate.dense.out_features) for la in layers]
    state = {"mask": None, "tokens": 0.0}
    hooks = []

    def head_hook(i):
        def hook(module, args):
            ctx = args[0]  # (B, T, heads*d), the attention output before the projection
            att = layers[i].attention.self
            d = att.attention_head_size
            w = module.weight  # (hidden, heads*d)
            m = state["mask"]  # (B, T, 1)
            for h in range(att.num_attention_heads):
                out = ctx[..., h * d:(h + 1) * d] @ w[:, h * d:(h + 1) * d].T  # (B, T, hidden)
                heads[i][h] += float((out.norm(dim=-1, keepdim=True) * m).sum())
        return hook

    def ffn_hook(i):
        def hook(module, args, output):
            m = state["mask"]  # (B, T, 1); output: (B, T, ffn) after GELU
            w_out = layers[i].output.dense.weight  # (hidden, ffn)
            neurons[i] += (output.abs() * m).sum(dim=(0, 1)) * w_out.norm(dim=0)
        return hook

    for i, layer in enumerate(layers):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(head_hook(i)))
        hooks.append(layer.intermediate.register_forward_hook(ffn_hook(i)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                state["mask"] = batch["attention_mask"].unsqueeze(-1).float()
                model(**batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return heads, neurons


def _keep_top(scores, amount: float, minimum: int = 1) -> list[int]:
    import torch

    n = len(scores)
    keep = max(minimum, n - round(amount * n))
    return sorted(torch.argsort(scores, descending=True, stable=True)[:keep].tolist())


def _structured_encoder(model, layers, config: StructuredConfig) -> PruneReport:
    before = count_params(model)
    heads, neurons = _encoder_scores(model, layers, config)
    report_layers, kept = {}, {}
    for i, layer in enumerate(layers):
        n_heads = layer.attention.self.num_attention_heads
        n_ffn = layer.intermediate.dense.out_features
        if config.heads > 0:
            keep = _keep_top(heads[i], config.heads)
            _keep_heads(layer, keep)
            kept[f"{i}.heads"] = keep
        if config.ffn > 0:
            keep = _keep_top(neurons[i], config.ffn)
            _keep_neurons(layer, keep)
            kept[f"{i}.ffn"] = keep
        report_layers[f"layer {i}"] = {
            "heads_before": n_heads, "heads_after": layer.attention.self.num_attention_heads,
            "ffn_before": n_ffn, "ffn_after": layer.intermediate.dense.out_features}
    _sync_config(model, layers)
    after = count_params(model)
    return PruneReport("structured", before, after, _nonzero(model), report_layers, kept=kept)


def _sync_config(model, layers) -> None:
    """Record the new sizes in the model's config when every layer agrees (export tools and
    `save_pretrained` read them); per-layer sizes live in `PruneReport.kept`."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return
    cfg = model.config = copy.deepcopy(cfg)  # never change a config other models share
    ffn = {la.intermediate.dense.out_features for la in layers}
    if len(ffn) == 1:
        cfg.intermediate_size = ffn.pop()
    cfg.pruned_heads = {}  # transformers' own bookkeeping; we track kept heads ourselves


# ------------------------------------------------------------------------ structured: CNN


def _cnn_parts(model):
    import torch.nn as nn

    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not isinstance(classifier, nn.Sequential):
        return None
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    first_linear = next((i for i, m in enumerate(classifier) if isinstance(m, nn.Linear)), None)
    if not convs or first_linear is None:
        return None
    return features, classifier, convs, first_linear


def _slice_conv(conv, out_idx=None, in_idx=None):
    import torch

    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else None
    if out_idx is not None:
        w, b = w[out_idx], (b[out_idx] if b is not None else None)
    if in_idx is not None:
        w = w[:, in_idx]
    new = torch.nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=b is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def _channel_scores(model, features, convs, config: StructuredConfig):
    import torch

    scores = [features[i].weight.detach().abs().sum(dim=(1, 2, 3)) for i in convs]  # L1
    if not config.use_activations:
        return scores
    acts = {}
    hooks = [features[i + 1].register_forward_hook(  # the ReLU after each conv
        lambda m, a, out, i=i: acts.__setitem__(i, out.detach().abs().mean(dim=(0, 2, 3))))
        for i in convs]
    try:
        with torch.no_grad():
            model.eval()(config.calibration)
    finally:
        for h in hooks:
            h.remove()
    return [acts[i] for i in convs]


def _apply_cnn_keep(parts, keeps: list[list[int]]) -> None:
    """Keep output channels `keeps[k]` of the k-th conv, and the matching inputs downstream."""
    features, classifier, convs, lin_i = parts
    for k, i in enumerate(convs):
        conv, keep = features[i], keeps[k]
        features[i] = _slice_conv(conv, out_idx=keep)
        if k + 1 < len(convs):  # the next conv reads these channels
            features[convs[k + 1]] = _slice_conv(features[convs[k + 1]], in_idx=keep)
        else:  # the classifier reads them flattened channel-major: channel c owns
            lin = classifier[lin_i]  # columns c*S .. (c+1)*S-1, S = spatial positions
            per = lin.in_features // conv.out_channels
            classifier[lin_i] = _slice_linear(lin, in_idx=[c * per + s for c in keep
                                                           for s in range(per)])


def _structured_cnn(model, parts, config: StructuredConfig) -> PruneReport:
    features, _, convs, _ = parts
    before = count_params(model)
    scores = _channel_scores(model, features, convs, config)
    keeps = [_keep_top(s, config.channels) for s in scores]
    report_layers = {f"features.{i}": {"channels_before": features[i].out_channels,
                                       "channels_after": len(keeps[k])}
                     for k, i in enumerate(convs)}
    _apply_cnn_keep(parts, keeps)
    kept = {f"features.{i}": keeps[k] for k, i in enumerate(convs)}
    after = count_params(model)
    return PruneReport("structured", before, after, _nonzero(model), report_layers, kept=kept)


@_handles(StructuredConfig)
def _structured(model, config: StructuredConfig) -> PruneReport:
    layers = _bert_layers(model)
    if layers is not None and (config.heads > 0 or config.ffn > 0):
        if config.channels > 0:
            raise PruneError("channels applies to CNNs; this is a transformer encoder: use "
                             "heads= and ffn=")
        return _structured_encoder(model, layers, config)
    parts = _cnn_parts(model)
    if parts is not None and config.channels > 0:
        return _structured_cnn(model, parts, config)
    kind = "a transformer encoder" if layers is not None else (
        "a CNN" if parts is not None else f"a {type(model).__name__}")
    raise PruneError(f"nothing to remove from {kind} with heads={config.heads}, "
                     f"ffn={config.ffn}, channels={config.channels}: encoders take heads/ffn, "
                     "CNNs (features + classifier Sequentials) take channels")


# ------------------------------------------------------------------ sensitivity scan


def sensitivity_scan(model, evaluate: Callable[[object], float], *,
                     amounts: Sequence[float] = (0.5, 0.7, 0.9),
                     groups: Mapping[str, Sequence[str]] | None = None,
                     progress: bool = False):
    """How much each layer (group) tolerates magnitude pruning, one group at a time.

    Each group is pruned alone at each amount, evaluated, and restored, so the model is
    unchanged afterwards.

    Args:
        model (torch.nn.Module): the model.
        evaluate (Callable[[nn.Module], float]): a quality figure, higher is better (task
            accuracy, recall, or cosine fidelity to the unpruned model's outputs).
        amounts (Sequence[float], default (0.5, 0.7, 0.9)): sparsities tried, each in [0, 1).
        groups (Mapping[str, Sequence[str]] | None, default None): group name -> layer
            names; None uses `layer_groups(model)`.
        progress (bool, default False): a tqdm bar over groups.

    Returns:
        pandas.DataFrame: index = group, one column per amount, plus "baseline".
    """
    import pandas as pd
    import torch

    amounts = [_check_amount("amounts", a) for a in amounts]
    groups = dict(groups) if groups is not None else layer_groups(model)
    for names in groups.values():
        _resolve_layers(model, list(names))
    modules = dict(model.named_modules())
    base = float(evaluate(model))
    items = groups.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="sensitivity", unit="group")
    rows = {}
    for gname, names in items:
        saved = {n: modules[n].weight.detach().clone() for n in names}
        row = {"baseline": base}
        try:
            for a in amounts:
                prune_(model, MagnitudeConfig(a, "layer", tuple(names)))
                row[a] = float(evaluate(model))
                with torch.no_grad():
                    for n in names:
                        modules[n].weight.copy_(saved[n])
        finally:
            with torch.no_grad():
                for n in names:
                    modules[n].weight.copy_(saved[n])
        rows[gname] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# ------------------------------------------------------------------------ recovery


def encoder_training_data(n: int | None = None, seed: int = 0):
    """Texts and (query, docstring) pairs of the stdlib task's *train* split, for recovery
    and distillation (evaluation uses the test split, so nothing leaks).

    Args:
        n (int | None, default None): cap on pairs (seeded sample); None keeps all (~4,500).
        seed (int, default 0): sampling seed.

    Returns:
        tuple[list[str], list[tuple[str, str]]]: texts (queries and docstrings), pairs.
    """
    import random

    from .tasks import docstring_retrieval

    task = docstring_retrieval(None, split="train")
    pairs = [(q, task.documents[a]) for q, a in zip(task.queries, task.answers, strict=True)]
    if n is not None and n < len(pairs):
        pairs = random.Random(seed).sample(pairs, n)
    texts = [t for pair in pairs for t in pair]
    return texts, pairs


def recover_(model, config: RecoveryConfig, *, teacher=None, tokenizer=None, data=None,
             report: PruneReport | None = None, schedule: MagnitudeConfig | None = None
             ) -> list[dict]:
    """Fine-tune a pruned model briefly, in place, so it regains quality.

    Zeros stay zero: magnitude masks (from `report`, or re-derived each step when
    `schedule` grows the sparsity gradually) are re-applied after every step. Structured
    models just train: their removed units no longer exist.

    Args:
        model (torch.nn.Module): the pruned model (an encoder or a classifier).
        config (RecoveryConfig): steps, learning rate, mode.
        teacher (torch.nn.Module | None): the unpruned model, needed for mode="distill".
        tokenizer: the encoder's tokenizer (encoders only).
        data: encoders: (texts, pairs) as `encoder_training_data` returns (default: that);
            classifiers: a `cnn.Digits`.
        report (PruneReport | None): from `prune_`, whose masks keep the zeros.
        schedule (MagnitudeConfig | None): with `config.gradual`, the target sparsity,
            reached after 2/3 of the steps (cubic schedule) and then held.

    Returns:
        list[dict]: the loss curve (per step for encoders, per epoch for classifiers).
    """
    from . import _compress_fit as fit

    if config.mode == "distill" and teacher is None:
        raise PruneError("mode='distill' needs the unpruned model: recover_(..., teacher=...)"
                         " or RecoveryConfig(mode='plain')")
    masks = report.masks if report is not None else None
    step_masks = None
    if schedule is not None:
        if not config.gradual:
            masks = prune_(model, schedule).masks
        else:
            ramp = max(1, (2 * config.steps) // 3)
            every = max(1, ramp // 10)  # re-rank ~10 times on the way (sorting is not free)
            held: dict = {}

            def step_masks(step):
                if step % every == 0 or step == ramp - 1 or "masks" not in held:
                    amount = min(fit.cubic_sparsity(schedule.amount, step, ramp),
                                 schedule.amount)
                    cfg = MagnitudeConfig(amount, schedule.scope, schedule.layers)
                    held["masks"] = prune_(model, cfg).masks
                return held["masks"]
    if _bert_layers(model) is None:  # a classifier
        if data is None:
            raise PruneError("recovering a classifier needs data=cnn.load_digits_split()")
        return fit.fit_classifier(model, data, epochs=config.epochs, lr=config.lr,
                                  batch_size=config.batch_size,
                                  teacher=teacher if config.mode == "distill" else None,
                                  masks=masks, seed=config.seed, progress=config.progress,
                                  desc="recovery")
    if tokenizer is None:
        raise PruneError("recovering an encoder needs its tokenizer: recover_(..., tokenizer=)")
    texts, pairs = data if data is not None else encoder_training_data(seed=config.seed)
    common = dict(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                  max_length=config.max_length, masks=masks, schedule=step_masks,
                  seed=config.seed, progress=config.progress, desc="recovery")
    if config.mode == "plain":
        return fit.fit_encoder(model, tokenizer, pairs=pairs, **common)
    import random

    needed = config.steps * config.batch_size
    if len(texts) > needed:  # only what the steps will see (seeded)
        texts = random.Random(config.seed).sample(list(texts), needed)
    # the unpruned model's embeddings, computed once (sorted by length: little padding)
    targets = fit.teacher_embeddings(teacher, tokenizer, texts, config.max_length)
    return fit.fit_encoder(model, tokenizer, texts=texts, targets=targets, **common)


# ----------------------------------------------------------------------------- storage


def _state(model) -> dict:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def save_dense(model, path: str | os.PathLike) -> Path:
    """Write the state dict as plain safetensors (the baseline size to compare with).

    Returns:
        Path: the file.
    """
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = _dedupe(_state(model))
    save_file(state, str(out))
    return out


def _dedupe(state: dict) -> dict:
    """safetensors refuses tensors sharing memory (tied weights): store each once."""
    seen, out = {}, {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        out[k] = v.clone() if key is None else v
    return out


def save_sparse(model, path: str | os.PathLike, *, min_sparsity: float = 0.05) -> Path:
    """Write a model's weights in a sparse safetensors file: for each tensor with at least
    `min_sparsity` zeros, the non-zero values (same dtype) and a packed bitmask (1 bit per
    weight); other tensors dense. Loading (`load_sparse`) restores the dense tensors.

    This is a *storage* format. Dense runtimes (torch, ONNX Runtime on CPU) still compute
    with every zero, so the unpacked model runs no faster; only sparse kernels (block-sparse
    or 2:4 hardware) turn sparsity into speed.

    Args:
        model (torch.nn.Module | dict): a module or a state dict.
        path (str | PathLike): the file to write.
        min_sparsity (float, default 0.05): below this the dense tensor is smaller.

    Returns:
        Path: the file; `measure.size_on_disk(path)` is the compressed size.
    """
    import torch
    from safetensors.torch import save_file

    state = model if isinstance(model, Mapping) else _dedupe(_state(model))
    tensors, layout = {}, {}
    for name, t in state.items():
        t = t.detach().contiguous()
        zeros = float((t == 0).float().mean()) if t.numel() else 0.0
        if t.ndim >= 2 and zeros >= min_sparsity:
            flat = t.flatten()
            nz = flat != 0
            bits = np.packbits(nz.numpy().astype(np.uint8))  # 1 bit per weight
            tensors[f"{name}::values"] = flat[nz].clone()
            tensors[f"{name}::mask"] = torch.from_numpy(bits)
            layout[name] = {"shape": list(t.shape), "format": "bitmask"}
        else:
            tensors[name] = t
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"deploylab.sparse": json.dumps(layout)})
    return out


def load_sparse(path: str | os.PathLike) -> dict:
    """Read a `save_sparse` file back into a dense state dict (load it with
    `model.load_state_dict(state, strict=False)`, tied weights being stored once).

    Returns:
        dict[str, torch.Tensor]: dense tensors.
    """
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        layout = json.loads((f.metadata() or {}).get("deploylab.sparse", "{}"))
        raw = {k: f.get_tensor(k) for k in f.keys()}
    state = {k: v for k, v in raw.items() if "::" not in k}
    for name, info in layout.items():
        n = int(np.prod(info["shape"]))
        nz = np.unpackbits(raw[f"{name}::mask"].numpy())[:n].astype(bool)
        values = raw[f"{name}::values"]
        dense = torch.zeros(n, dtype=values.dtype)
        dense[torch.from_numpy(nz)] = values
        state[name] = dense.view(info["shape"])
    return state


def save_pruned(model, folder: str | os.PathLike, report: PruneReport,
                extra: dict | None = None) -> Path:
    """Save a structurally pruned model: `model.safetensors` and `pruned.json` (the kept
    units, so `load_pruned` rebuilds the same shapes from the original architecture).

    Returns:
        Path: the folder.
    """
    from ._files import write_atomic

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_dense(model, out / "model.safetensors")
    write_atomic(out / "pruned.json", json.dumps({"kept": report.kept, **(extra or {})},
                                                 indent=1))
    return out


def load_pruned(base, folder: str | os.PathLike):
    """Rebuild a `save_pruned` model: shrink `base` (the unpruned architecture, any
    weights) to the kept units, then load the saved weights. `base` is changed in place.

    Returns:
        tuple: (the model in eval mode, the extra fields saved beside it).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    info = json.loads((folder / "pruned.json").read_text())
    kept = info.pop("kept")
    layers = _bert_layers(base)
    if layers is not None:
        for key, keep in kept.items():
            i, kind = key.split(".")
            (_keep_heads if kind == "heads" else _keep_neurons)(layers[int(i)], keep)
        _sync_config(base, layers)
    else:
        parts = _cnn_parts(base)
        if parts is None:
            raise PruneError(f"cannot rebuild a {type(base).__name__} from {folder}")
        _apply_cnn_keep(parts, [kept[f"features.{i}"] for i in parts[2]])
    _, unexpected = base.load_state_dict(load_file(str(folder / "model.safetensors")),
                                               strict=False)
    if unexpected:
        raise PruneError(f"{folder} does not match this architecture: unexpected {unexpected[:3]}")
    return base.eval(), info


def clone(model):
    """A deep copy (pruning is in place; keep the original for comparison)."""
    return copy.deepcopy(model)


# ------------------------------------------------------------------ the chapter's models


def _calibration_batches(tokenizer, texts: Sequence[str], n_batches: int = 8,
                         batch_size: int = 16, max_length: int = 128) -> list:
    return [tokenizer(list(texts[i * batch_size:(i + 1) * batch_size]), padding=True,
                      truncation=True, max_length=max_length, return_tensors="pt")
            for i in range(n_batches)]


def _cache_key(**fields) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def minilm_pruned(kind: str = "structured", amount: float = 0.4,
                  recovery: RecoveryConfig | None = None, *, cache: bool = True,
                  teacher: tuple | None = None):
    """all-MiniLM-L6-v2 pruned and recovered, built once and cached under
    `cache_dir("pruned")` so the chapter and the `prune` benchmark share it.

    - "structured": `StructuredConfig.share(amount)` (heads and FFN neurons ranked by their
      activations on train-split texts), then `recover_` distilled from the original;
      cached as safetensors + kept units.
    - "unstructured": layer-wise magnitude pruning to `amount`, grown gradually during a
      distilled recovery; cached in the sparse format (`save_sparse`).

    Args:
        kind (str, default "structured"): "structured" or "unstructured".
        amount (float, default 0.4): share removed, in [0, 1).
        recovery (RecoveryConfig | None): None: 100 distilled steps (gradual for
            unstructured), what the `prune` benchmark uses.
        cache (bool, default True): reuse (and write) the cached model.
        teacher (tuple | None, default None): an already loaded (tokenizer, MiniLM) pair (not
            changed); None loads it.

    Returns:
        tuple: (tokenizer, model, teacher, info): info has "history" (the recovery loss
        curve), "seconds", "file" (what is on disk: the size to report) and "from_cache".
    """
    import time

    from .assets import load_encoder
    from .settings import cache_dir

    if kind not in ("structured", "unstructured"):
        raise PruneError(f"kind must be 'structured' or 'unstructured', got {kind!r}")
    _check_amount("amount", amount)
    recovery = recovery or RecoveryConfig(steps=100, gradual=kind == "unstructured")
    tokenizer, teacher = teacher or load_encoder("all-MiniLM-L6-v2")
    teacher.eval()
    fields = {k: getattr(recovery, k) for k in recovery.__dataclass_fields__ if k != "progress"}
    key = _cache_key(kind=kind, amount=amount, v=1, **fields)
    folder = cache_dir("pruned") / f"minilm-{kind}-{round(amount * 100)}-{key}"
    model = clone(teacher)
    meta_file = folder / "info.json"
    if cache and meta_file.is_file():
        info = json.loads(meta_file.read_text())
        if kind == "structured":
            model, _ = load_pruned(model, folder)
        else:
            model.load_state_dict(load_sparse(folder / "model.sparse.safetensors"), strict=False)
        return tokenizer, model.eval(), teacher, {**info, "file": folder / info["file"],
                                                  "from_cache": True}
    start = time.perf_counter()
    texts, pairs = encoder_training_data(seed=recovery.seed)
    if kind == "structured":
        cal = _calibration_batches(tokenizer, texts[1::2])  # docstrings (odd positions)
        report = prune_(model, StructuredConfig.share(amount, calibration=cal))
        history = recover_(model, recovery, teacher=teacher, tokenizer=tokenizer,
                           data=(texts, pairs))
    else:
        history = recover_(model, recovery, teacher=teacher, tokenizer=tokenizer,
                           data=(texts, pairs), schedule=MagnitudeConfig(amount))
    info = {"history": history, "seconds": time.perf_counter() - start, "kind": kind,
            "amount": amount, "params": count_params(model), "nonzero": _nonzero(model)}
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "structured":
            save_pruned(model, folder, report)
            info["file"] = "model.safetensors"
        else:
            save_sparse(model, folder / "model.sparse.safetensors")
            info["file"] = "model.sparse.safetensors"
        from ._files import write_atomic

        write_atomic(meta_file, json.dumps(info))
        info = {**info, "file": folder / info["file"]}
    return tokenizer, model.eval(), teacher, {**info, "from_cache": False}
