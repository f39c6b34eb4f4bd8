"""Audio in and out: WAV bytes to float32 16 kHz mono, with clear refusals.

The spotter was trained on 16 kHz mono, so that is what it accepts; anything else is refused
with an error that says what to do (resampling silently would hide a wrong microphone
setting, and averaging stereo would hide a wrong channel). Each error has a short `reason`
the server returns with its 4xx.

Example:
    >>> audio = load_wav(open("command.wav", "rb").read())
    >>> wav = encode_wav(audio)            # and back
"""

from __future__ import annotations

import io
import wave

import numpy as np

from ...errors import DeploylabError

__all__ = ["MAX_SECONDS", "MIN_SECONDS", "SAMPLE_RATE", "AudioError", "AudioTooLongError",
           "AudioTooShortError", "EmptyAudioError", "NotAudioError", "SampleRateError",
           "SampleWidthError", "StereoAudioError", "check_audio", "encode_wav", "load_wav"]

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.5  # shorter than half a second cannot hold a spoken command
MAX_SECONDS = 600.0


class AudioError(DeploylabError):
    reason = "bad_audio"


class EmptyAudioError(AudioError):
    reason = "empty_audio"


class NotAudioError(AudioError):
    reason = "not_audio"


class SampleRateError(AudioError):
    reason = "wrong_sample_rate"


class StereoAudioError(AudioError):
    reason = "not_mono"


class SampleWidthError(AudioError):
    reason = "not_16_bit"


class AudioTooShortError(AudioError):
    reason = "audio_too_short"


class AudioTooLongError(AudioError):
    reason = "audio_too_long"


def check_audio(audio, *, min_seconds: float = MIN_SECONDS,
                max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """A float32 mono array checked for shape and length (values in [-1, 1] expected)."""
    x = np.asarray(audio)
    if x.size == 0:
        raise EmptyAudioError("the audio is empty: send at least "
                              f"{min_seconds:g} s of 16 kHz mono speech")
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise StereoAudioError(f"audio must be mono (one channel), got shape {x.shape}; "
                               "pick one channel (x[:, 0]) or mix them (x.mean(axis=1))")
    if not np.issubdtype(x.dtype, np.number):
        raise NotAudioError(f"audio must be numbers, got dtype {x.dtype}")
    seconds = len(x) / SAMPLE_RATE
    if seconds < min_seconds:
        raise AudioTooShortError(f"the audio is {seconds:.3f} s long; send at least "
                                 f"{min_seconds:g} s (a command takes ~0.5 s)")
    if seconds > max_seconds:
        raise AudioTooLongError(f"the audio is {seconds:.0f} s long; send at most "
                                f"{max_seconds:g} s per request (split longer recordings)")
    return x.astype(np.float32)


def load_wav(data: bytes, **limits) -> np.ndarray:
    """16-bit PCM WAV bytes (16 kHz, mono) -> float32 in [-1, 1].

    Raises:
        EmptyAudioError, NotAudioError, SampleRateError, StereoAudioError,
        SampleWidthError, AudioTooShortError, AudioTooLongError: each says what to send.
    """
    if not data:
        raise EmptyAudioError("the request holds no bytes: send a 16 kHz mono 16-bit WAV file")
    try:
        with wave.open(io.BytesIO(bytes(data)), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, ValueError, RuntimeError) as e:
        # wave raises a bare RuntimeError when a chunk's declared size does not fit the file
        why = str(e) or "a chunk's size runs past the end of the file"
        raise NotAudioError(f"these bytes are not a WAV file ({why}); send "
                            "16-bit PCM WAV (e.g. ffmpeg -i in.mp3 -ar 16000 -ac 1 out.wav)"
                            ) from None
    if channels != 1:
        raise StereoAudioError(f"the WAV has {channels} channels; send mono "
                               "(ffmpeg ... -ac 1)")
    if rate != SAMPLE_RATE:
        raise SampleRateError(f"the WAV is sampled at {rate} Hz; the spotter needs "
                              f"{SAMPLE_RATE} Hz (resample: ffmpeg ... -ar 16000, or "
                              "scipy.signal.resample_poly)")
    if width != 2:
        raise SampleWidthError(f"the WAV has {8 * width}-bit samples; send 16-bit PCM "
                               "(ffmpeg ... -sample_fmt s16)")
    if not frames:
        raise EmptyAudioError("the WAV holds no samples: send at least "
                              f"{limits.get('min_seconds', MIN_SECONDS):g} s of speech")
    if len(frames) % 2:
        raise NotAudioError(f"the WAV's samples end half-way through one ({len(frames)} "
                            "bytes of 16-bit samples): the file looks cut short; send it whole")
    return check_audio(np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0,
                       **limits)


def encode_wav(audio, sample_rate: int = SAMPLE_RATE) -> bytes:
    """float audio in [-1, 1] ([samples] or [samples, channels]) -> 16-bit PCM WAV bytes."""
    x = np.asarray(audio, dtype=np.float32)
    channels = 1 if x.ndim == 1 else x.shape[1]
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
