"""Generation, written out so each technique is visible: the naive decoder (the whole
sequence recomputed for every new token), the KV-cache decoder (the prompt once, then one
token per step), sampling, batching, and speculative decoding with a draft model; plus the
measurements (time to first token, tokens per second) and the quality figures (held-out
perplexity, next-line exact match, character accuracy).

Every loop takes any transformers causal LM (the kit's own or a user's) and checks its
request first: an empty prompt, a prompt that leaves no room in the context, and a
non-positive `max_new_tokens` are `ComposeError`s that say what to change.

Greedy decoding gives the same tokens with and without the cache, and with speculative
decoding (the draft only proposes; the target decides every token): the tests check it.

Example:
    >>> out = kv_cache(pair.target, prompt_ids, 32)
    >>> out.ids, out.ttft_ms, out.tokens_per_s
    >>> spec = speculative(pair.target, pair.draft, prompt_ids, 32, k=4)
    >>> spec.acceptance_rate
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import CompletionTask, ComposeError

__all__ = ["Generation", "Sampling", "char_accuracy", "check_request", "complete_line",
           "exact_match", "hf_generate", "kv_cache", "line_quality", "naive", "perplexity",
           "speculative"]


@dataclass
class Generation:
    """What one generation produced and how long it took.

    Attributes:
        ids (list[list[int]]): new tokens per prompt (a stop token included).
        ttft_ms (float): time to first token: the prompt's forward pass and the first pick.
        total_ms (float): the whole generation.
        proposed, accepted (int): draft tokens proposed and accepted (speculative only).
        target_calls (int): forward passes of the (target) model.
    """

    ids: list[list[int]]
    ttft_ms: float
    total_ms: float
    proposed: int = 0
    accepted: int = 0
    target_calls: int = 0

    @property
    def new_tokens(self) -> int:
        return sum(len(r) for r in self.ids)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / (self.total_ms / 1e3) if self.total_ms > 0 else math.nan

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None


@dataclass(frozen=True)
class Sampling:
    """Sampling instead of greedy picks: softmax(logits / temperature) over the top_k.

    Args:
        temperature (float, default 0.8): > 0; lower is closer to greedy.
        top_k (int, default 40): candidates kept per step.
        seed (int, default 0): the generator's seed, so a sampled completion repeats.
    """

    temperature: float = 0.8
    top_k: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ComposeError(f"temperature must be > 0 (use greedy decoding for 0), got "
                               f"{self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ComposeError(f"top_k must be an int >= 1, got {self.top_k!r}")


def _context(model) -> int:
    return int(model.config.max_position_embeddings)


def check_request(prompt_ids, max_new_tokens, context: int, *, truncate: bool = False
                  ) -> list[list[int]]:
    """Validate one generation request and return its prompt(s) as lists of ids.

    Args:
        prompt_ids: one prompt (a sequence of ints) or several (a sequence of sequences).
        max_new_tokens (int): >= 1.
        context (int): the model's longest sequence (prompt + completion).
        truncate (bool, default False): keep the last tokens of a prompt that is too long
            (what an editor does with a long file) instead of refusing it.

    Raises:
        ComposeError: empty prompt, prompt too long for the context, bad max_new_tokens.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise ComposeError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if max_new_tokens < 1:
        raise ComposeError(f"max_new_tokens must be >= 1 (got {max_new_tokens}): ask for at "
                           "least one new token")
    if max_new_tokens >= context:
        raise ComposeError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in "
                           f"the model's context of {context} tokens; ask for fewer")
    prompts = [prompt_ids] if len(prompt_ids) == 0 or np.isscalar(prompt_ids[0]) else prompt_ids
    out = []
    for p in prompts:
        p = [int(t) for t in p]
        if not p:
            raise ComposeError("the prompt is empty: give at least one token of code to "
                               "complete (for a blank file, start from a newline)")
        room = context - int(max_new_tokens)
        if len(p) > room:
            if not truncate:
                raise ComposeError(f"the prompt has {len(p)} tokens but only {room} fit with "
                                   f"max_new_tokens={max_new_tokens} in the model's context of "
                                   f"{context}; shorten it, ask for fewer new tokens, or pass "
                                   "truncate=True to keep its last tokens")
            p = p[-room:]
        out.append(p)
    if len({len(p) for p in out}) > 1:
        raise ComposeError("prompts of a batch must have the same length for these loops; "
                           "use hf_generate (left padding) for ragged batches")
    return out


def _picker(sampling: Sampling | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, V) logits -> (B,) next tokens."""
    if sampling is None:
        return lambda logits: logits.argmax(-1)
    gen = torch.Generator().manual_seed(sampling.seed)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        top = torch.topk(logits.float() / sampling.temperature, sampling.top_k, dim=-1)
        choice = torch.multinomial(F.softmax(top.values, -1), 1, generator=gen)
        return top.indices.gather(-1, choice).squeeze(-1)
    return pick


def _finish(ids: torch.Tensor, stop: int | None) -> list[list[int]]:
    """(B, n) new tokens -> lists, each cut after its first stop token."""
    rows = []
    for row in ids.tolist():
        if stop is not None and stop in row:
            row = row[:row.index(stop) + 1]
        rows.append(row)
    return rows


@torch.no_grad()
def naive(model, prompt_ids, max_new_tokens: int, *, stop: int | None = None,
          sampling: Sampling | None = None, truncate: bool = False) -> Generation:
    """Generation without a cache: every step runs the model over the whole sequence so far.

    The cost of step t grows with prompt + t tokens (and attention with its square): what
    `use_cache=False` does in transformers, the baseline every other technique beats.

    Args:
        model: a causal LM (`model(input_ids=...).logits`).
        prompt_ids: one prompt's ids, or a batch of equal-length prompts.
        max_new_tokens (int): tokens to generate (fewer if every row reached `stop`).
        stop (int | None, default None): a token that ends a row (the newline id: one line).
        sampling (Sampling | None, default None): None is greedy.
        truncate (bool, default False): see `check_request`.
    """
    prompts = check_request(prompt_ids, max_new_tokens, _context(model), truncate=truncate)
    pick, seq = _picker(sampling), torch.tensor(prompts)
    start, ttft, new = time.perf_counter(), None, []
    for _ in range(max_new_tokens):
        nxt = pick(model(input_ids=seq, use_cache=False).logits[:, -1])
        ttft = ttft or (time.perf_counter() - start) * 1e3
        new.append(nxt)
        seq = torch.cat([seq, nxt[:, None]], 1)
        if stop is not None and bool((torch.stack(new, 1) == stop).any(1).all()):
            break
    total = (time.perf_counter() - start) * 1e3
    return Generation(_finish(torch.stack(new, 1), stop), ttft, total, target_calls=len(new))


@torch.no_grad()
def kv_cache(model, prompt_ids, max_new_tokens: int, *, stop: int | None = None,
             sampling: Sampling | None = None, truncate: bool = False) -> Generation:
    """Generation with a key/value cache: the prompt in one forward pass (prefill), then one
    token per step that attends to the cached keys and values of everything before it.

    Arguments as `naive`; batches of equal-length prompts run together (batching).
    """
    from transformers import DynamicCache

    prompts = check_request(prompt_ids, max_new_tokens, _context(model), truncate=truncate)
    pick, cache = _picker(sampling), DynamicCache()
    start = time.perf_counter()
    logits = model(input_ids=torch.tensor(prompts), cache=cache,
                   use_cache=True).logits[:, -1]
    nxt = pick(logits)
    ttft, new = (time.perf_counter() - start) * 1e3, [nxt]
    while len(new) < max_new_tokens:
        if stop is not None and bool((torch.stack(new, 1) == stop).any(1).all()):
            break
        logits = model(input_ids=nxt[:, None], cache=cache, use_cache=True).logits
        nxt = pick(logits[:, -1])
        new.append(nxt)
    total = (time.perf_counter() - start) * 1e3
    return Generation(_finish(torch.stack(new, 1), stop), ttft, total, target_calls=len(new))


def _crop(cache, keep: int) -> None:
    """Drop cached positions beyond the first `keep` (transformers 5: `crop(-n)` removes n)."""
    extra = cache.get_seq_length() - keep
    if extra > 0:
        cache.crop(-extra)


def _feed(model, cache, ids: Sequence[int]) -> torch.Tensor:
    """Run `ids` through `model` on top of `cache`; (len(ids), V) logits."""
    return model(input_ids=torch.tensor([list(ids)]), cache=cache,
                 use_cache=True).logits[0]


class _TorchCache:
    """A torch causal LM with its key/value cache, as speculative decoding drives it (the
    ONNX Runtime twin is `runtime.OnnxDecoder.new_cache()`)."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model, self.cache = model, DynamicCache()
        self.context = _context(model)

    def __len__(self) -> int:
        return self.cache.get_seq_length()

    def picks(self, ids: Sequence[int]) -> list[int]:
        """Feed `ids` on top of the cache; the greedy pick after each of them."""
        return _feed(self.model, self.cache, ids).argmax(-1).tolist()

    def crop(self, keep: int) -> None:
        _crop(self.cache, keep)


def _new_cache(model):
    return model.new_cache() if hasattr(model, "new_cache") else _TorchCache(model)


@torch.no_grad()
def speculative(target, draft, prompt_ids, max_new_tokens: int, *, k: int = 4,
                stop: int | None = None, truncate: bool = False) -> Generation:
    """Greedy speculative decoding at batch 1: the draft proposes `k` tokens one by one (cheap),
    the target checks them all in one forward pass and keeps the longest prefix it agrees
    with, plus its own next token. The output is the target's greedy output; the speed-up
    is the accepted tokens per target call.

    Args:
        target, draft: causal LMs with the same tokenizer: torch models, or `OnnxDecoder`s
            (ONNX Runtime sessions), in any mix.
        prompt_ids: one prompt.
        max_new_tokens (int): at most this many tokens.
        k (int, default 4): draft tokens per round.
        stop (int | None, default None): a token that ends generation.
        truncate (bool, default False): see `check_request`.

    Returns:
        Generation: with `proposed`, `accepted` (so `acceptance_rate`) and `target_calls`.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ComposeError(f"k (draft tokens per round) must be an int >= 1, got {k!r}")
    t_cache, d_cache = _new_cache(target), _new_cache(draft)
    (prompt,) = check_request(prompt_ids, max_new_tokens, t_cache.context, truncate=truncate)
    start = time.perf_counter()
    seq = [*prompt, t_cache.picks(prompt)[-1]]
    ttft, calls, proposed, accepted = (time.perf_counter() - start) * 1e3, 1, 0, 0
    n_prompt = len(prompt)
    while len(seq) - n_prompt < max_new_tokens and seq[-1] != stop:
        # Invariant: both caches hold a prefix of seq; the last token is in neither.
        room = max_new_tokens - (len(seq) - n_prompt)
        guesses: list[int] = []
        pending = seq[len(d_cache):]
        for _ in range(min(k, room - 1)):
            guesses.append(d_cache.picks(pending)[-1])
            pending = guesses[-1:]
            if guesses[-1] == stop:
                break
        # the target's pick after the last token and after each guess, in one call
        picks = t_cache.picks(seq[-1:] + guesses)
        calls += 1
        n = 0
        while n < len(guesses) and guesses[n] == picks[n]:
            n += 1
        proposed, accepted = proposed + len(guesses), accepted + n
        seq += [*guesses[:n], picks[n]]
        t_cache.crop(len(seq) - 1)
        d_cache.crop(len(seq) - 1)
    total = (time.perf_counter() - start) * 1e3
    new = seq[n_prompt:]
    if stop is not None and stop in new:
        new = new[:new.index(stop) + 1]
    return Generation([new], ttft, total, proposed, accepted, calls)


@torch.no_grad()
def hf_generate(model, prompt_ids, max_new_tokens: int, *, assistant=None, use_cache: bool = True,
                sampling: Sampling | None = None, stop: int | None = None) -> Generation:
    """The same through transformers' `generate()` (greedy or sampling, `use_cache`, assisted
    generation with `assistant=draft`), for comparison with the loops above. A batch of
    equal-length prompts runs together.
    """
    prompts = check_request(prompt_ids, max_new_tokens, _context(model))
    ids = torch.tensor(prompts)
    kw = {"do_sample": sampling is not None}
    if sampling is not None:
        torch.manual_seed(sampling.seed)
        kw.update(temperature=sampling.temperature, top_k=sampling.top_k)
    else:
        kw.update(temperature=None, top_k=None, top_p=None)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         min_new_tokens=0, use_cache=use_cache, assistant_model=assistant,
                         eos_token_id=stop, pad_token_id=0, **kw)
    total = (time.perf_counter() - start) * 1e3
    return Generation(_finish(out[:, ids.shape[1]:], stop), math.nan, total)


# ------------------------------------------------------------------------------ quality


@torch.no_grad()
def perplexity(model, windows: np.ndarray, batch_size: int = 8) -> float:
    """exp(mean next-token cross-entropy) over held-out windows.

    Args:
        model: a causal LM.
        windows (np.ndarray): (n, length + 1) token ids (`data.lm_windows`); every token
            after the first of a window is predicted from the ones before it.
        batch_size (int, default 8): windows per forward pass.

    Returns:
        float: perplexity (1 is perfect; the vocabulary size is a uniform guess).
    """
    if len(windows) == 0:
        raise ComposeError("perplexity needs at least one window of held-out tokens")
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = torch.as_tensor(np.asarray(windows[i:i + batch_size]), dtype=torch.long)
        logits = model(input_ids=w[:, :-1], use_cache=False).logits.float()
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       w[:, 1:].reshape(-1), reduction="sum"))
        count += w[:, 1:].numel()
    return math.exp(total / count)


def exact_match(prediction: str, target: str) -> bool:
    """The completed line equals the real one (trailing whitespace ignored)."""
    return prediction.rstrip() == target.rstrip()


def char_accuracy(prediction: str, target: str) -> float:
    """Characters right at their position, over the longer of the two lines (so both missing
    and extra characters cost): a fraction in [0, 1]; 1.0 for two empty lines."""
    p, t = prediction.rstrip(), target.rstrip()
    if not p and not t:
        return 1.0
    return sum(a == b for a, b in zip(p, t, strict=False)) / max(len(p), len(t))


def complete_line(generate: Callable[..., Generation], tok, task: CompletionTask,
                  max_new_tokens: int = 32) -> tuple[str, Generation]:
    """One next-line completion: generate until the newline token (or `max_new_tokens`) and
    decode the line. `generate(prompt_ids, max_new_tokens, stop=...)` is one of the loops
    with its models bound (functools.partial)."""
    from .data import newline_id

    nl = newline_id(tok)
    out = generate(task.prompt_ids, max_new_tokens, stop=nl)
    ids = out.ids[0]
    return tok.decode(ids[:-1] if ids and ids[-1] == nl else ids), out


def line_quality(generate: Callable[..., Generation], tok, tasks: Sequence[CompletionTask],
                 max_new_tokens: int = 32, *, progress: bool = False) -> dict:
    """Next-line exact match and character accuracy over tasks.

    Returns:
        dict: exact_match, char_accuracy (fractions), completions (list of str), tasks (n),
        and acceptance_rate for speculative decoding (None otherwise).
    """
    items = tasks
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(tasks, desc="complete lines", unit="line", leave=False)
    preds, proposed, accepted = [], 0, 0
    for t in items:
        text, out = complete_line(generate, tok, t, max_new_tokens)
        preds.append(text)
        proposed, accepted = proposed + out.proposed, accepted + out.accepted
    em = [exact_match(p, t.target) for p, t in zip(preds, tasks, strict=True)]
    ca = [char_accuracy(p, t.target) for p, t in zip(preds, tasks, strict=True)]
    return {"exact_match": float(np.mean(em)), "char_accuracy": float(np.mean(ca)),
            "completions": preds, "tasks": len(tasks),
            "acceptance_rate": accepted / proposed if proposed else None}
