"""The two keyword spotters: a wav2vec2-style transformer teacher and a DS-CNN student.

Both take log-mel features [batch, 1, 40, 98] (one second) and return class logits.

- `Wav2Vec2Teacher`: the transformer encoder of wav2vec 2.0, built from transformers'
  `Wav2Vec2Config` (its convolutional relative position embedding, stable pre-LayerNorm
  layers), fed log-mel frames through a linear projection instead of wav2vec2's learned
  convolutional waveform front end: that front end needs hours of audio and GPU days to
  learn, the mel front end is free. Adjacent frames are stacked in pairs (49 tokens per
  second, wav2vec2's own 20 ms token rate). Mean pooling and a linear head classify.
- `DSCNN`: "Hello Edge" (Zhang et al. 2017) depthwise-separable CNN: one full convolution
  (9x3 over mel bins x frames, a chosen stride), then blocks of depthwise 3x3 + pointwise
  1x1 convolutions, each followed by batch norm and ReLU, global average pooling and a
  linear layer. `fold_batchnorm` merges each BN into its convolution before export or
  quantization.

Example:
    >>> teacher = Wav2Vec2Teacher(n_classes=12, hidden=128, layers=4)
    >>> student = DSCNN(n_classes=12, channels=64, blocks=4)
    >>> student(torch.zeros(1, 1, 40, 98)).shape
    torch.Size([1, 12])
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["DSCNN", "Wav2Vec2Teacher", "count_parameters", "fold_batchnorm"]


class Wav2Vec2Teacher(nn.Module):
    """Log-mel frames -> transformers' Wav2Vec2 encoder -> mean pool -> logits.

    Args:
        n_classes (int): output classes.
        n_mels (int, default 40): feature bins.
        hidden (int, default 128): model width (wav2vec2-base: 768).
        layers (int, default 4): transformer layers (base: 12).
        heads (int, default 4): attention heads.
        ffn (int, default 256): feed-forward width (base: 3072).
        stack (int, default 2): frames per token.
        dropout (float, default 0.1): hidden and attention dropout while training.
    """

    def __init__(self, n_classes: int, n_mels: int = 40, *, hidden: int = 128, layers: int = 4,
                 heads: int = 4, ffn: int = 256, stack: int = 2, dropout: float = 0.1):
        super().__init__()
        from transformers import Wav2Vec2Config
        from transformers.models.wav2vec2.modeling_wav2vec2 import (
            Wav2Vec2EncoderStableLayerNorm,
        )

        self.w2v2_config = cfg = Wav2Vec2Config(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=ffn, hidden_dropout=dropout, attention_dropout=dropout,
            activation_dropout=0.0, layerdrop=0.0, num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=8, do_stable_layer_norm=True, num_labels=n_classes)
        cfg._attn_implementation = "eager"  # exports to plain MatMul/Softmax
        self.stack = stack
        self.norm = nn.LayerNorm(n_mels * stack)
        self.project = nn.Linear(n_mels * stack, hidden)
        self.encoder = Wav2Vec2EncoderStableLayerNorm(cfg)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x):  # x: [B, 1, mels, frames]
        b, _, m, t = x.shape
        t = t - t % self.stack
        tokens = x[:, 0, :, :t].transpose(1, 2).reshape(b, t // self.stack, m * self.stack)
        h = self.encoder(self.project(self.norm(tokens))).last_hidden_state  # [B, T/2, H]
        return self.head(h.mean(dim=1))


def _conv_bn(cin: int, cout: int, kernel, stride, groups: int = 1) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class DSCNN(nn.Module):
    """Hello Edge DS-CNN.

    Args:
        n_classes (int): output classes.
        channels (int, default 64): feature maps (DS-CNN-S: 64, -M: 172, -L: 276).
        blocks (int, default 4): depthwise-separable blocks (S: 4, L: 5).
        first_stride (tuple, default (2, 2)): stride of the first convolution
            (mel bins, frames); the first block strides by 2 again.
        dropout (float, default 0.1): before the classifier.
    """

    def __init__(self, n_classes: int, *, channels: int = 64, blocks: int = 4,
                 first_stride: tuple[int, int] = (2, 2), dropout: float = 0.1):
        super().__init__()
        layers = [_conv_bn(1, channels, (9, 3), first_stride)]
        for i in range(blocks):
            stride = (2, 2) if i == 0 else (1, 1)
            layers += [_conv_bn(channels, channels, (3, 3), stride, groups=channels),
                       _conv_bn(channels, channels, (1, 1), (1, 1))]
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x):  # x: [B, 1, mels, frames]
        h = self.features(x).mean(dim=(2, 3))  # [B, channels]
        return self.head(self.drop(h))


def fold_batchnorm(model: DSCNN) -> DSCNN:
    """A copy with each BatchNorm folded into the convolution before it (eval mode)."""
    model = copy.deepcopy(model).eval()
    for block in model.features:
        conv, bn = block[0], block[1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, groups=conv.groups, bias=True)
        with torch.no_grad():
            fused.weight.copy_(conv.weight * scale[:, None, None, None])
            fused.bias.copy_(bn.bias - bn.running_mean * scale)
        block[0], block[1] = fused, nn.Identity()
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
