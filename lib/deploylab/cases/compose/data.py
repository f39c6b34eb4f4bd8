"""The code-completion case study's data: standard-library source split by file, a byte-level
BPE tokenizer trained on the training files, token streams and next-line completion tasks.

The split is by file (a module is wholly in train or wholly held out), decided by a hash of
its name, so the same Python gives the same split on every machine and a held-out file's
lines were never seen in training. The tokenizer isolates every newline as its own token
before the byte-level BPE: a completion prompt that ends at a line break then tokenizes
exactly as it did in training, and "stop at the end of the line" is one token id.

Example:
    >>> files = source_split()
    >>> tok = tokenizer(vocab_size=4096)
    >>> tok.decode(tok.encode(files.train[0].text).ids) == files.train[0].text
    True
    >>> tasks = completion_tasks(tok, files.held_out, n=200, context_tokens=192)
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._files import atomic_path
from ...errors import DeploylabError
from ...settings import cache_dir

__all__ = ["ComposeError", "CompletionTask", "SourceFile", "Split", "completion_tasks",
           "encode_files", "lm_windows", "newline_id", "source_split", "tokenizer"]

HELD_OUT_FRACTION = 0.1
NEWLINE = "\n"


class ComposeError(DeploylabError):
    """A prompt, generation setting or model that the code-completion case cannot use."""


@dataclass(frozen=True)
class SourceFile:
    """One standard-library module's source."""

    module: str
    text: str


@dataclass(frozen=True)
class Split:
    """Training and held-out files (whole files, disjoint)."""

    train: list[SourceFile]
    held_out: list[SourceFile]

    @property
    def key(self) -> str:
        """Digest of every file's name and text: caches built on this split know it."""
        h = hashlib.sha256()
        for part, files in (("train", self.train), ("held_out", self.held_out)):
            for f in files:
                h.update(f"{part}\0{f.module}\0{f.text}\0".encode())
        return h.hexdigest()[:16]


def _held_out(module: str) -> bool:
    digest = int(hashlib.sha256(module.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < HELD_OUT_FRACTION


def source_split(max_file_chars: int = 60_000, *, max_files: int | None = None) -> Split:
    """The standard library's public pure-Python modules, split ~90/10 by a hash of the name.

    Args:
        max_file_chars (int, default 60000): larger files (a few generated tables and huge
            modules such as `pydoc_data`) are left out so no single file dominates.
        max_files (int | None, default None): keep about this many training files (and a
            tenth as many held-out ones), evenly spaced by name: smoke runs.

    Returns:
        Split: files sorted by module name in each part.
    """
    from ...stdlib_corpus import source_files

    train, held = [], []
    for module, path in source_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text.strip() or len(text) > max_file_chars:
            continue
        (held if _held_out(module) else train).append(SourceFile(module, text))
    if max_files is not None:
        train = train[::max(1, len(train) // max_files)][:max_files]
        n_held = max(2, max_files // 10)
        held = held[::max(1, len(held) // n_held)][:n_held]
    return Split(train, held)


# -------------------------------------------------------------------------- tokenizer


def _tokenizer_file(split: Split, vocab_size: int) -> Path:
    v = sys.version_info
    return cache_dir("compose") / (f"bpe-{vocab_size}-py{v.major}.{v.minor}.{v.micro}-"
                                   f"{split.key}.json")


def _train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Newlines isolated first, then GPT-2's byte-level split: every byte is representable,
    # so any text (tabs, non-ASCII, odd whitespace) round-trips exactly.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(NEWLINE, behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer(vocab_size: int = 4096, split: Split | None = None):
    """A byte-level BPE tokenizer trained on the training files, cached.

    Args:
        vocab_size (int, default 4096): tokens, including the one special token
            `<|endoftext|>` (id 0), which separates files.
        split (Split | None, default None): `source_split()` if None.

    Returns:
        tokenizers.Tokenizer: `encode(text).ids`, `decode(ids)`; round-trips any text.
    """
    from tokenizers import Tokenizer

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 300:
        raise ComposeError(f"vocab_size must be an int >= 300 (256 bytes plus merges), got "
                           f"{vocab_size!r}")
    split = split or source_split()
    file = _tokenizer_file(split, vocab_size)
    if not file.is_file():
        tok = _train_tokenizer([f.text for f in split.train], vocab_size)
        with atomic_path(file) as tmp:
            tok.save(str(tmp))
    return Tokenizer.from_file(str(file))


def newline_id(tok) -> int:
    """The id of the newline token (the end of a completed line)."""
    ids = tok.encode(NEWLINE).ids
    if len(ids) != 1:
        raise ComposeError("this tokenizer does not keep a newline as one token; train it "
                           "with `tokenizer()`")
    return ids[0]


def encode_files(tok, files: list[SourceFile]) -> np.ndarray:
    """All files' token ids in one stream, each file followed by `<|endoftext|>` (id 0)."""
    eot = tok.token_to_id("<|endoftext|>")
    chunks = []
    for enc in tok.encode_batch([f.text for f in files]):
        chunks.append(np.asarray([*enc.ids, eot], dtype=np.int32))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int32)


def lm_windows(stream: np.ndarray, length: int, n: int | None = None, *,
               seed: int | None = None) -> np.ndarray:
    """Windows of `length` + 1 tokens (inputs and their next-token targets).

    Args:
        stream (np.ndarray): token ids.
        length (int): context length of a window.
        n (int | None, default None): how many; None: every non-overlapping window.
        seed (int | None, default None): None takes consecutive windows from the start;
            a seed samples random offsets (training batches).

    Returns:
        np.ndarray: int64 (n, length + 1).
    """
    if len(stream) < length + 2:
        raise ComposeError(f"a token stream of {len(stream)} tokens is too short for windows "
                           f"of {length}; use more files or a shorter context")
    if seed is None:
        starts = np.arange(0, len(stream) - length - 1, length)[:n]
    else:
        starts = np.random.default_rng(seed).integers(0, len(stream) - length - 1, size=n)
    return np.stack([stream[s:s + length + 1] for s in starts]).astype(np.int64)


# ---------------------------------------------------------------------- completions


@dataclass(frozen=True)
class CompletionTask:
    """Complete the next line: `prompt_ids` end with a newline, `target` is the next line
    (indentation included, no newline)."""

    module: str
    line_no: int
    prompt_ids: list[int]
    target: str

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


def _good_line(line: str) -> bool:
    body = line.strip()
    return len(body) >= 8 and not body.startswith("#")


def completion_tasks(tok, files: list[SourceFile], n: int = 200, *, context_tokens: int = 192,
                     seed: int = 0) -> list[CompletionTask]:
    """Next-line completion tasks from (held-out) files: the `context_tokens` tokens of code
    before a line, and that line to be predicted.

    Lines are drawn with a seed among those with at least 8 characters that are not comments
    and have at least `context_tokens` tokens before them, spread over the files in turn.

    Args:
        tok: the case's tokenizer.
        files (list[SourceFile]): where the tasks come from (the held-out split).
        n (int, default 200): tasks.
        context_tokens (int, default 192): prompt length in tokens (a realistic editor
            context; the naive decoder's cost grows with it).
        seed (int, default 0): the draw.

    Returns:
        list[CompletionTask]
    """
    rng = random.Random(seed)
    candidates: list[list[tuple[str, int, list[int], str]]] = []
    for f in files:
        lines = f.text.split(NEWLINE)
        ids = tok.encode(f.text).ids
        # token index of each line start: newline tokens are isolated, so line k starts
        # right after the k-th newline token.
        nl = newline_id(tok)
        starts = [0] + [i + 1 for i, t in enumerate(ids) if t == nl]
        options = [(f.module, k, ids[starts[k] - context_tokens:starts[k]], lines[k])
                   for k in range(1, min(len(lines), len(starts)))
                   if starts[k] >= context_tokens and _good_line(lines[k])]
        rng.shuffle(options)
        if options:
            candidates.append(options)
    tasks: list[CompletionTask] = []
    while len(tasks) < n and any(candidates):
        for options in candidates:
            if options and len(tasks) < n:
                m, k, p, t = options.pop()
                tasks.append(CompletionTask(m, k + 1, list(p), t))
    if len(tasks) < n:
        raise ComposeError(f"only {len(tasks)} completion tasks with {context_tokens} tokens "
                           f"of context in these files; ask for fewer or a shorter context")
    return tasks


def describe(split: Split, tok) -> str:
    """One line on the split, for notebooks: files and characters per part."""
    chars = {k: sum(len(f.text) for f in getattr(split, k)) for k in ("train", "held_out")}
    return json.dumps({"train_files": len(split.train), "held_out_files": len(split.held_out),
                       "train_chars": chars["train"], "held_out_chars": chars["held_out"],
                       "vocab_size": tok.get_vocab_size()})
