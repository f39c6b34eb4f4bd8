"""Speech from libespeak-ng (shipped inside `espeakng-loader`), called through ctypes.

eSpeak NG keeps state between utterances (its pitch-flutter counter runs on across calls, so
the same word spoken twice in one process differs by a few samples). Determinism for a voice,
text and parameters therefore comes from a small *zygote* process: it initializes the library
once, loads the English dictionary, and forks a fresh child per utterance, so every utterance
starts from the same state. Forking a process that holds only ctypes and eSpeak costs ~1 ms;
the kernel or a server holding torch is never forked.

A voice is an accent (`en-us`, `en-gb-scotland`, ...) plus a variant (`f3`, `klatt2`, ...),
written `"en-us+f3"`; rate is words per minute (80..450), pitch and range 0..100, amplitude
0..200 (eSpeak's own units). Output: float32 mono at 16 kHz in [-1, 1] (eSpeak speaks at
22.05 kHz; `resample_poly` by 320/441).

Example:
    >>> from deploylab.cases.speech import synth
    >>> audio = synth.synthesize("left", synth.Utterance.default("en-us+f3"))
    >>> len(audio) / synth.SAMPLE_RATE   # seconds
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...errors import DeploylabError

__all__ = ["ACCENTS", "ESPEAK_RATE", "SAMPLE_RATE", "VARIANTS", "SynthError", "Utterance",
           "all_voices", "synthesize", "synthesize_many"]

SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050
WORKER = Path(__file__).with_name("_espeak_worker.py")
# English accents eSpeak ships; each is a different phoneme set and intonation
ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# voice variants (formant, breathiness, vocal tract): the "speakers". Robotic and
# whispered ones are left out: a keyword spotter for people need not hear robots.
VARIANTS = ("f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
            "klatt", "klatt2", "klatt3", "adam", "anika", "Andrea", "belinda", "benjamin",
            "caleb", "david", "edward", "linda", "max", "michel", "steph", "travis", "zac")


class SynthError(DeploylabError):
    """The synthesizer could not run or was asked for something it does not have."""


@dataclass(frozen=True)
class Utterance:
    """What to say and how (eSpeak's units).

    Args:
        voice (str): "accent+variant", e.g. "en-us+f3" (see `all_voices()`).
        rate (int, default 160): words per minute, 80..450.
        pitch (int, default 50): base pitch, 0..100.
        range (int, default 50): pitch range (intonation), 0..100.
        amplitude (int, default 100): loudness, 0..200.
    """

    voice: str
    rate: int = 160
    pitch: int = 50
    range: int = 50
    amplitude: int = 100

    def __post_init__(self) -> None:
        accent, _, variant = self.voice.partition("+")
        if accent not in ACCENTS or (variant and variant not in _variant_files()):
            raise SynthError(f"unknown voice {self.voice!r}: use 'accent+variant' with an "
                             f"accent in {ACCENTS} and a variant such as {VARIANTS[:4]} "
                             "(all_voices() lists them)")
        for name, lo, hi in (("rate", 80, 450), ("pitch", 0, 100), ("range", 0, 100),
                             ("amplitude", 0, 200)):
            v = getattr(self, name)
            if not isinstance(v, int) or not lo <= v <= hi:
                raise SynthError(f"{name} must be an int in {lo}..{hi}, got {v!r}")

    @classmethod
    def default(cls, voice: str = "en-us") -> Utterance:
        return cls(voice)


def _data_path() -> Path:
    try:
        import espeakng_loader
    except ImportError:
        raise SynthError("espeakng-loader is not installed: pip install "
                         "espeakng-loader==0.2.4 (it ships libespeak-ng and its data)") from None
    return Path(espeakng_loader.get_data_path())


_VARIANTS_CACHE: set[str] | None = None


def _variant_files() -> set[str]:
    global _VARIANTS_CACHE
    if _VARIANTS_CACHE is None:
        _VARIANTS_CACHE = {p.name for p in (_data_path() / "voices" / "!v").iterdir()}
    return _VARIANTS_CACHE


def all_voices(accents: Sequence[str] = ACCENTS, variants: Sequence[str] = VARIANTS) -> list[str]:
    """Every "accent+variant" voice of these accents and variants (240 by default)."""
    return [f"{a}+{v}" for v in variants for a in accents]


class _Zygote:
    """One worker process: requests as JSON lines on stdin, int16 PCM (22.05 kHz) back on
    stdout as length-prefixed frames."""

    def __init__(self):
        import espeakng_loader

        # run as a plain script: importing the deploylab package would load torch in every
        # worker (seconds each), and a small process forks faster
        env = {**os.environ, "DEPLOYLAB_ESPEAK_LIB": espeakng_loader.get_library_path(),
               "DEPLOYLAB_ESPEAK_DATA": espeakng_loader.get_data_path()}
        self.proc = subprocess.Popen([sys.executable, "-S", "-s", str(WORKER)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def send(self, text: str, u: Utterance) -> None:
        self.proc.stdin.write((json.dumps({"text": text, **asdict(u)}) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self) -> np.ndarray:
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise SynthError("the eSpeak worker died; check that libespeak-ng loads "
                             "(python -c 'import espeakng_loader; espeakng_loader.load_library()')")
        (n,) = struct.unpack("<q", head)
        if n < 0:
            raise SynthError(self.proc.stdout.read(-n).decode())
        return np.frombuffer(self.proc.stdout.read(n), dtype=np.int16)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def to_16k(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM at 22.05 kHz -> float32 in [-1, 1] at 16 kHz (polyphase, 320/441)."""
    from scipy.signal import resample_poly

    x = pcm.astype(np.float32) / 32768.0
    return resample_poly(x, 320, 441).astype(np.float32)


def synthesize_many(requests: Sequence[tuple[str, Utterance]], *, workers: int = 2,
                    progress: bool = False) -> list[np.ndarray]:
    """Speak many (text, utterance) pairs, in `workers` processes, in order.

    Returns:
        list[np.ndarray]: float32 16 kHz audio, one per request; identical for identical
        requests, whatever else was spoken before.
    """
    if not requests:
        return []
    for text, u in requests:
        if not isinstance(u, Utterance) or not isinstance(text, str) or not text.strip():
            raise SynthError(f"each request is (non-empty text, Utterance), got {(text, u)!r}")
    _data_path()
    pool = [_Zygote() for _ in range(max(1, min(workers, len(requests))))]
    out: list[np.ndarray | None] = [None] * len(requests)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), desc="synthesizing", leave=False)
    try:
        # keep every worker one request ahead, so both cores speak while Python resamples
        pending = []
        it = iter(enumerate(requests))
        for z in pool:
            nxt = next(it, None)
            if nxt is not None:
                z.send(*nxt[1])
                pending.append((z, nxt[0]))
        while pending:
            z, i = pending.pop(0)
            pcm = z.receive()
            nxt = next(it, None)
            if nxt is not None:
                z.send(*nxt[1])
                pending.append((z, nxt[0]))
            out[i] = to_16k(pcm)
            if bar is not None:
                bar.update()
    finally:
        for z in pool:
            z.close()
        if bar is not None:
            bar.close()
    return out


def synthesize(text: str, utterance: Utterance | str = "en-us") -> np.ndarray:
    """One utterance as float32 16 kHz audio (starts a worker: batch with `synthesize_many`)."""
    u = Utterance(utterance) if isinstance(utterance, str) else utterance
    return synthesize_many([(text, u)], workers=1)[0]
