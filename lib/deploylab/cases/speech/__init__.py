"""The speech case study: voice commands on a tiny budget.

A Speech-Commands-style data set synthesized with libespeak-ng, a wav2vec2-style transformer
teacher, a "Hello Edge" DS-CNN student distilled from it and quantized to int8, and a
streaming spotter gated by the pretrained Silero VAD, served through `deploylab.serve`.

- `synth`: eSpeak NG through ctypes, deterministic per voice, text and parameters;
- `data`: synthesis over many voices, augmentation, the speaker-independent split, cache;
- `features`: log-mel in NumPy;
- `models`: `Wav2Vec2Teacher`, `DSCNN`, `fold_batchnorm`;
- `training`: teacher training, distillation, ONNX export, PTQ and QAT (cached);
- `evaluate`: the variant table, per-class accuracy, noise sweeps, the streaming score;
- `streaming`: the long recording, `SileroVad`, `StreamingSpotter`, `score`, `sweep`,
  `calibrate` (per-word thresholds);
- `audio`: WAV in and out with clear refusals; `serving`: `SpeechPipeline`.

Example:
    >>> from deploylab.cases import speech
    >>> ds = speech.build(speech.SpeechConfig.smoke())
    >>> run = speech.train_all(ds, speech.TrainConfig.smoke())
    >>> table, timings, _ = speech.compare(run.paths, ds)
"""

from .audio import (
                   AudioError,
                   AudioTooLongError,
                   AudioTooShortError,
                   EmptyAudioError,
                   NotAudioError,
                   SampleRateError,
                   SampleWidthError,
                   StereoAudioError,
                   check_audio,
                   encode_wav,
                   load_wav,
)
from .data import (
                   COMMANDS,
                   SILENCE,
                   UNKNOWN,
                   UNKNOWN_WORDS,
                   DataError,
                   SpeechConfig,
                   SpeechData,
                   build,
                   noisy_test_features,
)
from .evaluate import (
                   SMOKE_VALIDATION,
                   VALIDATION,
                   calibrated_thresholds,
                   compare,
                   confusion,
                   per_class_accuracy,
                   snr_sweep,
                   streaming_eval,
)
from .features import FeatureConfig, log_mel, log_mel_batch, mel_filterbank
from .models import DSCNN, Wav2Vec2Teacher, count_parameters, fold_batchnorm
from .serving import SpeechPipeline, encode_request, local_infer
from .streaming import (
                   Detection,
                   Recording,
                   SileroVad,
                   StreamingSpotter,
                   calibrate,
                   make_recording,
                   score,
                   sweep,
)
from .synth import SynthError, Utterance, all_voices, synthesize, synthesize_many
from .training import QUANT_MODES, TrainConfig, TrainedModels, TrainingError, train_all

__all__ = [
    "COMMANDS", "DSCNN", "QUANT_MODES", "SILENCE", "SMOKE_VALIDATION", "UNKNOWN",
    "UNKNOWN_WORDS", "VALIDATION", "AudioError",
    "AudioTooLongError", "AudioTooShortError", "DataError", "Detection", "EmptyAudioError",
    "FeatureConfig", "NotAudioError", "Recording", "SampleRateError", "SampleWidthError",
    "SileroVad", "SpeechConfig", "SpeechData", "SpeechPipeline", "StereoAudioError",
    "StreamingSpotter", "SynthError", "TrainConfig", "TrainedModels", "TrainingError",
    "Utterance", "Wav2Vec2Teacher", "all_voices", "build", "calibrate",
    "calibrated_thresholds", "check_audio", "compare", "confusion", "count_parameters",
    "encode_request", "encode_wav", "fold_batchnorm",
    "load_wav", "local_infer", "log_mel", "log_mel_batch", "make_recording", "mel_filterbank",
    "noisy_test_features", "per_class_accuracy", "prefetch", "score", "snr_sweep",
    "streaming_eval", "sweep", "synthesize", "synthesize_many", "train_all",
]


def prefetch(smoke: bool = False) -> dict:
    """Build and cache the default data set, models and the int8 spotter's per-word
    thresholds (what the notebook and the bench use), so a workshop room runs from cache.
    Returns the model paths."""
    ds = build(SpeechConfig.smoke() if smoke else SpeechConfig(), progress=False)
    run = train_all(ds, TrainConfig.smoke() if smoke else TrainConfig(), progress=False)
    calibrated_thresholds(run.paths["student-int8"], ds,
                          **(SMOKE_VALIDATION if smoke else VALIDATION))
    return {k: str(v) for k, v in run.paths.items()}
