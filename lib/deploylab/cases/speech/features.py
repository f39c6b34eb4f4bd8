"""Log-mel features in NumPy (torchaudio does not install beside torch 2.13.0).

The front end of the Speech Commands and "Hello Edge" keyword spotters: 16 kHz audio,
25 ms Hann windows every 10 ms (400 samples, hop 160, FFT 512), power spectrum, 40 triangular
mel filters (HTK mel scale, 20 Hz..7.6 kHz, unit height), natural log with a 1e-6 floor.
A 1-second clip gives 98 frames (no padding: a frame only where a full window fits), so the
models see [batch, 1, 40, 98].

Example:
    >>> from deploylab.cases.speech import features
    >>> feats = features.log_mel(np.zeros(16000, np.float32))
    >>> feats.shape
    (40, 98)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft

__all__ = ["FeatureConfig", "hz_to_mel", "log_mel", "log_mel_batch", "mel_filterbank",
           "mel_to_hz"]


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel parameters (the defaults are the keyword-spotting standard)."""

    sample_rate: int = 16_000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 7600.0
    floor: float = 1e-6

    def frames(self, n_samples: int) -> int:
        """Frames of a clip of n_samples (98 for one second)."""
        return max(0, 1 + (n_samples - self.win_length) // self.hop_length)


def hz_to_mel(f):
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, equally spaced on the mel scale."""
    freqs = np.linspace(0, config.sample_rate / 2, config.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(config.f_min), hz_to_mel(config.f_max),
                                  config.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0, np.minimum(up, down)).astype(np.float32)


@lru_cache(maxsize=8)
def _window(config: FeatureConfig) -> np.ndarray:
    return np.hanning(config.win_length + 1)[:-1].astype(np.float32)  # periodic Hann


def log_mel_batch(audio: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """[batch, samples] float audio -> [batch, n_mels, frames] float32 log-mel."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"audio must be [batch, samples], got shape {x.shape}")
    n = config.frames(x.shape[1])
    if n < 1:
        raise ValueError(f"a clip needs at least {config.win_length} samples, got {x.shape[1]}")
    # frames as a strided view: [batch, frames, win_length], no copy until the window
    idx = np.arange(config.win_length)[None] + config.hop_length * np.arange(n)[:, None]
    frames = x[:, idx] * _window(config)
    spec = scipy.fft.rfft(frames, n=config.n_fft, axis=-1, workers=1)  # complex64
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    mel = power @ mel_filterbank(config).T  # [batch, frames, n_mels]
    return np.log(mel + config.floor).transpose(0, 2, 1).astype(np.float32)


def log_mel(audio: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """One clip [samples] -> [n_mels, frames]."""
    return log_mel_batch(np.asarray(audio)[None], config)[0]
