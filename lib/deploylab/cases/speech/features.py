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
           "mel_to_hz", "spec_augment"]


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


def spec_augment(x, generator, *, warp: float = 0.1, shift: float = 0.1, freq_mask: int = 4,
                 time_mask: int = 8):
    """Training-time augmentation of a log-mel batch [B, 1, mels, frames] (torch).

    Per clip: the mel axis stretched by up to +-`warp` about its low end (vocal-tract length
    perturbation: a longer or shorter vocal tract moves every formant by one factor), a shift
    in time by up to `shift` of the clip, then one band of up to `freq_mask` mel bins and
    one stretch of up to `time_mask` frames set to the clip's floor (SpecAugment, Park et
    al. 2019). Held-out speakers differ from training ones mostly in formants and timing,
    which is what this varies.
    """
    import torch
    import torch.nn.functional as F

    b, _, m, t = x.shape
    u = lambda: torch.rand(b, generator=generator) * 2 - 1  # noqa: E731 (uniform in [-1, 1])
    scale = 1 + u() * warp
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 0, 2] = u() * shift * 2       # grid units: the clip spans [-1, 1]
    theta[:, 1, 1] = 1 / scale
    theta[:, 1, 2] = 1 / scale - 1         # keeps the lowest mel bin where it is
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    floor = x.amin(dim=(2, 3), keepdim=True)
    out = F.grid_sample(x - floor, grid, align_corners=False) + floor  # outside: the floor

    def band(size: int, width: int):
        start = torch.randint(0, size, (b, 1), generator=generator)
        stop = start + torch.randint(0, width + 1, (b, 1), generator=generator)
        i = torch.arange(size)[None]
        return (i >= start) & (i < stop)

    masked = band(m, freq_mask)[:, None, :, None] | band(t, time_mask)[:, None, None, :]
    return torch.where(masked, floor, out)
