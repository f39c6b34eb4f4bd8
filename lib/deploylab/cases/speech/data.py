"""A Speech-Commands-style data set, synthesized, augmented and split by speaker.

Classes: `_silence_` (noise only), `_unknown_` (other words) and the command words. Each
*voice* (accent + variant, see `synth`) says every command with its own rate, pitch, range
and amplitude, and a few unknown words; each utterance becomes `copies` one-second clips,
each with its own augmentation: speed perturbation (0.9-1.1x), a random position in the
second (time shift), reverberation (a synthetic room impulse response) for half of them and
background noise (white, pink, brown, hum or babble) at an SNR drawn from graded levels.

The split is by variant: every voice of a held-out variant is in the test set and no voice
of it in training, so test accuracy is accuracy on speakers never heard in training. Test
clips get one fixed noise level (`test_snr_db`, the "default noise level" of the targets)
and no speed change or reverberation.

Everything derives from `SpeechConfig` and its seed; the built set is cached under
`cache_dir("speech")` keyed by the config, so re-runs load it in a second.

Example:
    >>> from deploylab.cases.speech import data
    >>> ds = data.build(data.SpeechConfig.smoke())
    >>> ds.x_train.shape, ds.labels
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..._files import atomic_path
from ...errors import DeploylabError
from ...settings import cache_dir
from . import synth
from .features import FeatureConfig, log_mel_batch

__all__ = ["COMMANDS", "NOISES", "SILENCE", "UNKNOWN", "UNKNOWN_WORDS", "DataError",
           "SpeechConfig", "SpeechData", "add_noise", "build", "colored_noise", "fit_clip",
           "noise_clip", "noisy_test_features", "reverb", "room_impulse", "speed"]

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree",
                 "wow", "zero", "one", "two", "three", "four", "five", "six", "seven",
                 "eight", "nine", "learn", "follow", "forward", "backward", "visual", "under",
                 "later", "open", "water", "window")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
NOISES = ("white", "pink", "brown", "hum", "babble")
CLIP = 16_000  # one second at 16 kHz
VERSION = 3  # bump when the recipe changes, so caches rebuild


class DataError(DeploylabError):
    """A data-set config that cannot be built."""


@dataclass(frozen=True)
class SpeechConfig:
    """What to synthesize and how to split it.

    Args:
        commands (tuple[str, ...], default COMMANDS): the words to spot (>= 2).
        held_out (tuple[str, ...]): voice variants used only for testing.
        accents (tuple[str, ...], default synth.ACCENTS): accents every variant speaks in.
        variants (tuple[str, ...], default synth.VARIANTS): all variants (train + test).
        takes (int, default 6): times each voice says each command, each take with its
            own rate, pitch, range and amplitude.
        unknown_per_voice (int, default 12): unknown words each voice says.
        copies (int, default 1): augmented clips per training utterance (new takes teach a
            held-out voice more than new augmentations of the same take).
        silence_fraction (float, default 0.08): share of `_silence_` clips.
        train_snr_db (tuple[float, ...]): noise levels drawn for training (inf: clean).
        test_snr_db (float, default 10.0): the test set's noise level.
        seed (int, default 0): everything random derives from it.
    """

    commands: tuple[str, ...] = COMMANDS
    held_out: tuple[str, ...] = ("f3", "m4", "klatt3", "anika", "edward", "travis")
    accents: tuple[str, ...] = synth.ACCENTS
    variants: tuple[str, ...] = synth.VARIANTS
    takes: int = 6
    unknown_per_voice: int = 12
    copies: int = 1
    silence_fraction: float = 0.08
    train_snr_db: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, float("inf"))
    test_snr_db: float = 10.0
    seed: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        for name in ("commands", "held_out", "accents", "variants", "train_snr_db"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(set(self.commands)) < 2 or len(set(self.commands)) != len(self.commands):
            raise DataError(f"commands must be >= 2 distinct words, got {self.commands!r}")
        clash = set(self.commands) & set(UNKNOWN_WORDS)
        if clash:
            raise DataError(f"{sorted(clash)} are unknown-class words; pick other commands")
        missing = set(self.held_out) - set(self.variants)
        if not self.held_out or missing or len(set(self.held_out)) >= len(set(self.variants)):
            raise DataError(f"held_out must be a non-empty proper subset of variants "
                            f"{self.variants}; got {self.held_out!r}")
        for v in self.variants:
            synth.Utterance(f"{self.accents[0]}+{v}")  # unknown names fail here, clearly
        if self.copies < 1 or self.takes < 1 or self.unknown_per_voice < 0:
            raise DataError("copies and takes must be >= 1 and unknown_per_voice >= 0")

    @classmethod
    def smoke(cls, **kw) -> SpeechConfig:
        """A few voices and one copy: builds in seconds, for CI and smoke runs."""
        return cls(**{"accents": ("en-us", "en-gb-x-rp"), "takes": 1, "unknown_per_voice": 2,
                      "variants": ("f1", "f2", "m1", "m2", "m3", "klatt", "f3", "m4"),
                      "held_out": ("f3", "m4"), **kw})

    @property
    def labels(self) -> tuple[str, ...]:
        return (SILENCE, UNKNOWN, *self.commands)

    def key(self) -> str:
        text = json.dumps({"v": VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def voices(self, split: str) -> list[str]:
        held = split == "test"
        return [f"{a}+{v}" for v in self.variants if (v in self.held_out) == held
                for a in self.accents]


@dataclass
class SpeechData:
    """A built data set (arrays as torch tensors where the trainers want them).

    Attributes:
        x_train, x_test (torch.Tensor): [N, 1, n_mels, 98] float32 log-mel.
        y_train, y_test (torch.Tensor): [N] int64 class indices into `labels`.
        voices_train, voices_test (np.ndarray): the voice of each clip ("" for silence).
        audio_test (np.ndarray): [N_test, 16000] int16, the test clips (for listening).
        clean_test (np.ndarray): the same before noise was added (for noise sweeps).
        labels (tuple[str, ...]): class names.
        config (SpeechConfig): what was built.
        path (Path): the cache file.
    """

    x_train: object
    y_train: object
    x_test: object
    y_test: object
    voices_train: np.ndarray
    voices_test: np.ndarray
    audio_test: np.ndarray
    clean_test: np.ndarray
    labels: tuple[str, ...]
    config: SpeechConfig
    path: Path

    def __repr__(self) -> str:
        return (f"SpeechData(train={len(self.y_train)}, test={len(self.y_test)}, "
                f"classes={len(self.labels)}, voices={len(set(self.voices_train)) - 1}+"
                f"{len(set(self.voices_test)) - 1})")

    def split(self, name: str):
        """(x, y) of "train" or "test" (what the kit's classifier trainers read)."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)

    def counts(self):
        """A table of clips per class and split."""
        import pandas as pd

        rows = {s: np.bincount(np.asarray(y), minlength=len(self.labels))
                for s, y in (("train", self.y_train), ("test", self.y_test))}
        return pd.DataFrame(rows, index=list(self.labels))


# ----------------------------------------------------------------------- augmentation


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of a kind in NOISES (babble: several modulated speech-band noises)."""
    if kind == "hum":
        t = np.arange(n) / synth.SAMPLE_RATE
        f0 = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        x = x + 0.1 * rng.standard_normal(n)
    elif kind == "babble":
        spec = np.fft.rfft(rng.standard_normal((4, n)))
        f = np.fft.rfftfreq(n, 1 / synth.SAMPLE_RATE)
        spec *= np.exp(-0.5 * ((f - 500) / 400) ** 2)  # speech band
        env = np.abs(np.fft.irfft(np.fft.rfft(rng.standard_normal((4, n))) *
                                  (np.fft.rfftfreq(n) < 8 / synth.SAMPLE_RATE), n))
        x = (np.fft.irfft(spec, n) * (0.2 + env / (env.max(1, keepdims=True) + 1e-9))).sum(0)
    else:
        exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[kind]
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        x = np.fft.irfft(spec / f ** exponent, n)
    x = np.asarray(x, dtype=np.float64)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


@lru_cache(maxsize=2)
def _noise_bank(seconds: int = 30) -> dict[str, np.ndarray]:
    """30 s of each noise, made once per process; clips are random slices of it (what
    Speech Commands does with its _background_noise_ recordings), far cheaper than a fresh
    noise per clip."""
    rng = np.random.default_rng(20_17)
    return {k: colored_noise(k, seconds * synth.SAMPLE_RATE, rng) for k in NOISES}


def noise_clip(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of unit-RMS noise of a kind: a random slice of the bank (fresh if longer)."""
    bank = _noise_bank()[kind]
    if n > len(bank) // 2:
        return colored_noise(kind, n, rng)
    start = int(rng.integers(0, len(bank) - n))
    return bank[start:start + n]


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator,
              kind: str | None = None) -> np.ndarray:
    """x plus noise at `snr_db` relative to x's RMS over its loud part (inf: x unchanged)."""
    if not np.isfinite(snr_db):
        return x
    kind = kind or str(rng.choice(NOISES))
    loud = x[np.abs(x) > 0.1 * (np.abs(x).max() + 1e-9)]
    rms = np.sqrt(np.mean(loud ** 2)) if loud.size else 0.01
    return x + noise_clip(kind, len(x), rng) * rms * 10 ** (-snr_db / 20)


def room_impulse(rt60: float, rng: np.random.Generator, length_s: float = 0.3) -> np.ndarray:
    """A synthetic room: a direct path then exponentially decaying noise (60 dB at rt60)."""
    n = int(length_s * synth.SAMPLE_RATE)
    t = np.arange(n) / synth.SAMPLE_RATE
    h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.3
    h[:int(0.002 * synth.SAMPLE_RATE)] = 0  # first reflections arrive after ~2 ms
    h[0] = 1.0
    return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)


def reverb(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    y = fftconvolve(x, room_impulse(rt60, rng))[:len(x)]
    return (y * (np.abs(x).max() / (np.abs(y).max() + 1e-9))).astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play x `factor` times faster (pitch moves with it, like tape): linear resampling."""
    n = max(1, round(len(x) / factor))
    return np.interp(np.arange(n) * factor, np.arange(len(x)), x).astype(np.float32)


def fit_clip(x: np.ndarray, rng: np.random.Generator | None, n: int = CLIP) -> np.ndarray:
    """Place x in an n-sample clip: at a random offset (rng) or centred (None); longer
    sounds are cut around their loudest stretch."""
    if len(x) > n:
        energy = np.convolve(x ** 2, np.ones(n // 4), mode="valid")
        centre = int(np.argmax(energy)) + n // 8
        start = int(np.clip(centre - n // 2, 0, len(x) - n))
        return x[start:start + n]
    out = np.zeros(n, np.float32)
    room = n - len(x)
    start = int(rng.integers(0, room + 1)) if rng is not None else room // 2
    out[start:start + len(x)] = x
    return out


# ---------------------------------------------------------------------- building


def _rng(config: SpeechConfig, *names) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, (config.seed, *names))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _utterances(config: SpeechConfig, split: str) -> list[tuple[str, str, synth.Utterance]]:
    """(label, word, utterance) for every voice of a split, each with its own prosody."""
    out = []
    for voice in config.voices(split):
        rng = _rng(config, "prosody", voice)
        words = [(w, w) for w in config.commands for _ in range(config.takes)]
        unknown = rng.choice(UNKNOWN_WORDS, size=config.unknown_per_voice, replace=False)
        words += [(UNKNOWN, str(w)) for w in unknown]
        for label, word in words:
            u = synth.Utterance(voice, rate=int(rng.integers(120, 230)),
                                pitch=int(rng.integers(20, 80)),
                                range=int(rng.integers(20, 90)),
                                amplitude=int(rng.integers(60, 160)))
            out.append((label, word, u))
    return out


def _augment(x: np.ndarray, rng: np.random.Generator, config: SpeechConfig,
             train: bool) -> tuple[np.ndarray, np.ndarray]:
    """(clip before noise, clip with noise)."""
    if train:
        x = speed(x, float(rng.uniform(0.9, 1.1)))
        if rng.random() < 0.5:
            x = reverb(x, float(rng.uniform(0.15, 0.7)), rng)
    clip = fit_clip(x, rng) * float(rng.uniform(0.3, 1.0) if train else 1.0)
    snr = float(rng.choice(config.train_snr_db)) if train else config.test_snr_db
    return clip, add_noise(clip, snr, rng)


def _silence(rng: np.random.Generator) -> np.ndarray:
    level = 10 ** rng.uniform(-4, -1)  # from near-digital silence to loud background
    return noise_clip(str(rng.choice(NOISES)), CLIP, rng) * level


def _to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def _split(config: SpeechConfig, split: str, progress: bool) -> dict[str, np.ndarray]:
    plan = _utterances(config, split)
    audio = synth.synthesize_many([(w, u) for _, w, u in plan], progress=progress)
    train = split == "train"
    index = {name: i for i, name in enumerate(config.labels)}
    clips, clean, labels, voices = [], [], [], []
    for (label, _, u), x in zip(plan, audio, strict=True):
        for c in range(config.copies if train else 1):
            rng = _rng(config, split, u, label, c)
            before, after = _augment(x, rng, config, train)
            clips.append(_to_int16(after))
            clean.append(_to_int16(before))
            labels.append(index[label])
            voices.append(u.voice)
    n_sil = round(len(clips) * config.silence_fraction / (1 - config.silence_fraction))
    for i in range(n_sil):
        clips.append(_to_int16(_silence(_rng(config, split, "silence", i))))
        clean.append(clips[-1])
        labels.append(index[SILENCE])
        voices.append("")
    wav = np.stack(clips)
    with threadpool_limits(1, user_api="blas"):  # idle OpenBLAS workers spin on 2 cores
        feats = np.concatenate([log_mel_batch(wav[i:i + 256].astype(np.float32) / 32768,
                                              config.features) for i in range(0, len(wav), 256)])
    return {"x": feats.astype(np.float16), "y": np.asarray(labels, np.int64),
            "voices": np.asarray(voices), "audio": wav, "clean": np.stack(clean)}


def noisy_test_features(ds: SpeechData, snr_db: float, *, seed: int = 0):
    """The test clips again with noise at `snr_db` (same voices and positions): [N,1,40,98]."""
    import torch

    rows = []
    for i, clip in enumerate(ds.clean_test.astype(np.float32) / 32768):
        rng = _rng(ds.config, "sweep", seed, i)
        rows.append(clip if ds.y_test[i] == 0 else add_noise(clip, snr_db, rng))
    x = np.stack(rows)
    feats = np.concatenate([log_mel_batch(x[i:i + 256], ds.config.features)
                            for i in range(0, len(x), 256)])
    return torch.from_numpy(feats)[:, None]


def cache_file(config: SpeechConfig) -> Path:
    return cache_dir("speech") / f"commands-{config.key()}.npz"


def build(config: SpeechConfig | None = None, *, progress: bool = True) -> SpeechData:
    """Synthesize, augment, featurize and split (or load the cached result).

    Args:
        config (SpeechConfig | None, default None): `SpeechConfig()` if None.
        progress (bool, default True): tqdm bars while synthesizing.

    Returns:
        SpeechData
    """
    import torch

    config = config or SpeechConfig()
    path = cache_file(config)
    if not path.is_file():
        parts = {s: _split(config, s, progress) for s in ("train", "test")}
        with atomic_path(path) as tmp:
            np.savez(tmp, **{f"{k}_{s}": v for s, p in parts.items() for k, v in p.items()
                             if s == "test" or k not in ("audio", "clean")})
    z = np.load(path)
    return SpeechData(
        x_train=torch.from_numpy(z["x_train"].astype(np.float32))[:, None],
        y_train=torch.from_numpy(z["y_train"]),
        x_test=torch.from_numpy(z["x_test"].astype(np.float32))[:, None],
        y_test=torch.from_numpy(z["y_test"]),
        voices_train=z["voices_train"], voices_test=z["voices_test"],
        audio_test=z["audio_test"], clean_test=z["clean_test"], labels=config.labels,
        config=config, path=path)
