"""Sentence embeddings from a transformer encoder, the way all-MiniLM-L6-v2 was trained:
mean of the last hidden states over real (unpadded) tokens, then L2-normalized.

Example:
    >>> from deploylab import assets
    >>> from deploylab.cases.sentence_encoder import encode
    >>> tokenizer, model = assets.load_encoder("minilm")
    >>> vectors = encode(model, tokenizer, ["open a file", "sort a list"])   # (2, 384)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mean_pool", "encode"]


def mean_pool(hidden, attention_mask):
    """Average token vectors over the attention mask and L2-normalize.

    Args:
        hidden (torch.Tensor): (batch, tokens, dim) last hidden states.
        attention_mask (torch.Tensor): (batch, tokens), 1 for real tokens.

    Returns:
        torch.Tensor: (batch, dim) unit vectors.
    """
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    summed = (hidden * mask).sum(dim=1)
    return torch.nn.functional.normalize(summed / mask.sum(dim=1).clamp(min=1e-9), dim=-1)


def encode(model, tokenizer, texts: Sequence[str], *, batch_size: int = 32,
           max_length: int = 128, progress: bool = False) -> np.ndarray:
    """Embed texts in batches, without gradients.

    Args:
        model: a transformers encoder (returns `last_hidden_state`).
        tokenizer: its tokenizer.
        texts (Sequence[str]): the texts.
        batch_size (int, default 32): texts per forward pass.
        max_length (int, default 128): tokens kept per text (the rest is truncated).
        progress (bool, default False): show a tqdm progress bar.

    Returns:
        np.ndarray: (len(texts), dim) float32 unit vectors.
    """
    import torch

    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, "
                         f"{max_length}")
    starts = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch")
    chunks = []
    with torch.inference_mode():
        for i in starts:
            batch = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            chunks.append(mean_pool(hidden, batch["attention_mask"]).float().numpy())
    dim = model.config.hidden_size
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
