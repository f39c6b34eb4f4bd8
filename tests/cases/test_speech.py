"""Speech case study: deterministic synthesis, the speaker-independent split, log-mel against
an independent reference on a fixture tone, ONNX parity of both models, BN folding, the
detection score by hand, the VAD on speech vs silence, and clear refusals of bad audio."""

import io
import wave

import numpy as np
import pytest
import torch

from deploylab.cases import speech
from deploylab.cases.speech import synth
from deploylab.errors import DeploylabError


@pytest.fixture(scope="module")
def ds():
    return speech.build(speech.SpeechConfig.smoke(), progress=False)


# ------------------------------------------------------------------------- synthesis


def test_synthesis_is_deterministic_for_a_voice_text_and_parameters():
    a = synth.Utterance("en-us+f2", rate=150, pitch=40)  # f2 is breathy: it draws rand()
    b = synth.Utterance("en-gb-scotland+m3", rate=200, pitch=70, amplitude=120)
    first = synth.synthesize_many([("left", a), ("stop now", b), ("left", a)], workers=2)
    again = synth.synthesize_many([("stop now", b), ("left", a)], workers=1)
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[0], again[1])
    assert np.array_equal(first[1], again[0])
    assert first[0].dtype == np.float32 and 0.2 < len(first[0]) / synth.SAMPLE_RATE < 1.5
    faster = synth.synthesize("left", synth.Utterance("en-us+f2", rate=300, pitch=40))
    assert len(faster) < len(first[0])


@pytest.mark.parametrize("kwargs", [{"voice": "xx-yy"}, {"voice": "en-us+nobody"},
                                    {"voice": "en-us", "rate": 10},
                                    {"voice": "en-us", "pitch": 101}])
def test_bad_utterances_are_refused_clearly(kwargs):
    with pytest.raises(synth.SynthError, match=r"voice|rate|pitch"):
        synth.Utterance(**kwargs)


# ------------------------------------------------------------------------- data


def test_no_voice_is_in_both_train_and_test(ds):
    train = set(ds.voices_train) - {""}
    test = set(ds.voices_test) - {""}
    assert train and test and not train & test
    held = set(ds.config.held_out)
    assert all(v.split("+")[1] in held for v in test)
    assert not any(v.split("+")[1] in held for v in train)


def test_every_class_is_present_and_the_cache_is_reused(ds):
    counts = ds.counts()
    assert list(counts.index) == list(ds.labels) and (counts > 0).all().all()
    assert ds.x_train.shape[1:] == (1, 40, 98) and len(ds.y_test) == len(ds.audio_test)
    again = speech.build(speech.SpeechConfig.smoke(), progress=False)
    assert again.path == ds.path and torch.equal(again.x_test, ds.x_test)
    other = speech.SpeechConfig.smoke(seed=1)
    assert speech.data.cache_file(other) != ds.path


def test_bad_data_configs_are_refused():
    with pytest.raises(speech.DataError, match="unknown-class"):
        speech.SpeechConfig(commands=("yes", "dog"))
    with pytest.raises(speech.DataError, match="held_out"):
        speech.SpeechConfig(held_out=("nobody",))


def test_augmentations_keep_length_and_hit_the_snr():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(8000) / 5).astype(np.float32) * 0.5
    assert len(speech.data.speed(x, 1.1)) == round(8000 / 1.1)
    assert len(speech.data.fit_clip(x, rng)) == 16000
    noisy = speech.data.add_noise(x, 10.0, rng, kind="white")
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((noisy - x) ** 2))
    assert abs(snr - 10.0) < 0.5
    assert speech.data.reverb(x, 0.4, rng).shape == x.shape


def test_each_take_is_a_new_prosody_and_takes_multiply_the_commands():
    config = speech.SpeechConfig.smoke()
    one = speech.data._utterances(config, "test")
    three = speech.data._utterances(speech.SpeechConfig.smoke(takes=3), "test")
    assert len(three) == len(one) + 2 * len(config.commands) * len(config.voices("test"))
    yes = [u for label, _, u in three if label == "yes" and u.voice == three[0][2].voice]
    assert len(yes) == 3 and len({(u.rate, u.pitch, u.range, u.amplitude) for u in yes}) > 1
    with pytest.raises(speech.DataError, match="takes"):
        speech.SpeechConfig(takes=0)


# ------------------------------------------------------------------------- features


def test_spec_augment_warps_shifts_and_masks_each_clip_on_its_own():
    from deploylab.cases.speech.features import spec_augment

    x = torch.full((64, 1, 40, 98), -5.0)
    x[:, :, 10, :] = 3.0  # one loud mel band
    x[:, :, :, 50] = 1.0  # one loud frame
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    y = spec_augment(x, gen(), freq_mask=0, time_mask=0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert y.min() >= -5.0 - 1e-5 and y.max() <= 3.0 + 1e-5  # nothing beyond the input's range
    band = y[:, 0, :, 20:40].mean(-1).argmax(-1)  # where the loud band went, per clip
    frame = y[:, 0, 25:35, :].mean(-2).argmax(-1)
    assert (band - 10).abs().max() <= 2 and len(set(band.tolist())) > 1  # warp: +-10%
    assert (frame - 50).abs().max() <= 10 and len(set(frame.tolist())) > 3  # shift: +-10%
    noise = torch.rand(64, 1, 40, 98)
    masked = spec_augment(noise, gen(), warp=0, shift=0)
    floor = masked == noise.amin(dim=(2, 3), keepdim=True)
    rows, cols = floor.all(-1)[:, 0].sum(-1), floor.all(-2)[:, 0].sum(-1)  # masked bins, frames
    assert rows.max() <= 4 and cols.max() <= 8 and rows.float().mean() > 1
    assert len(set(rows.tolist())) > 2 and len(set(cols.tolist())) > 2  # each clip its own
    kept = ~(floor.all(-1, keepdim=True) | floor.all(-2, keepdim=True))
    assert torch.allclose(masked[kept], noise[kept], atol=1e-5)  # the rest untouched
    assert torch.equal(spec_augment(x, gen()), spec_augment(x, gen()))  # the generator decides
    quiet = spec_augment(x, gen(), warp=0, shift=0, freq_mask=0, time_mask=0)
    assert torch.allclose(quiet, x, atol=1e-5)


def _reference_log_mel(x, sr=16000, n_fft=512, win=400, hop=160, n_mels=40, fmin=20.0,
                       fmax=7600.0):
    """The textbook computation, written independently: a DFT by its definition, filters
    built one by one from the HTK mel formula."""
    n = np.arange(win)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)
    k = np.arange(n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(k, np.arange(n_fft)) / n_fft)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    pts = inv(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = k * sr / n_fft
    bank = np.zeros((n_mels, len(k)))
    for i in range(n_mels):
        lo, c, hi = pts[i], pts[i + 1], pts[i + 2]
        for j, f in enumerate(freqs):
            if lo < f <= c:
                bank[i, j] = (f - lo) / (c - lo)
            elif c < f < hi:
                bank[i, j] = (hi - f) / (hi - c)
    frames = 1 + (len(x) - win) // hop
    out = np.zeros((n_mels, frames))
    for t in range(frames):
        seg = np.zeros(n_fft)
        seg[:win] = x[t * hop:t * hop + win] * window
        power = np.abs(dft @ seg) ** 2
        out[:, t] = np.log(bank @ power + 1e-6)
    return out


def test_log_mel_matches_a_reference_computation_on_a_fixture_tone():
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t) + 0.1 * np.sin(2 * np.pi * 250 * t))
    ours = speech.log_mel(tone.astype(np.float32))
    ref = _reference_log_mel(tone)
    assert ours.shape == ref.shape == (40, 98)
    loud = ref > np.log(1e-3)  # compare where there is energy; float32 vs float64 below
    assert np.abs(ours[loud] - ref[loud]).max() < 1e-3
    assert np.abs(ours - ref).max() < 0.05
    centres = speech.features.mel_to_hz(np.linspace(speech.features.hz_to_mel(20),
                                                    speech.features.hz_to_mel(7600), 42))[1:-1]
    assert abs(centres[ours.mean(1).argmax()] - 1000) < 120  # the tone's filter is loudest


def test_short_audio_is_refused_by_the_features():
    with pytest.raises(ValueError, match="at least 400"):
        speech.log_mel(np.zeros(100, np.float32))


# ------------------------------------------------------------------------- models


def test_onnx_exports_of_teacher_and_student_match_torch(tmp_path, ds):
    cfg = speech.TrainConfig.smoke()
    teacher, student = cfg.teacher(len(ds.labels)).eval(), cfg.student(len(ds.labels)).eval()
    paths = speech.training.export_models({"t": teacher, "s": student}, tmp_path)
    assert all(r.ok for r in speech.training.export_models.reports.values())
    x = ds.x_test[:8]
    for name, model in (("t", teacher), ("s", speech.fold_batchnorm(student))):
        got = speech.training.onnx_logits(paths[name])(x.numpy())
        with torch.no_grad():
            want = model(x).numpy()
        assert np.abs(got - want).max() < 1e-4, name
        assert (got.argmax(1) == want.argmax(1)).all()


def test_folding_batchnorm_keeps_the_outputs():
    torch.manual_seed(0)
    model = speech.DSCNN(12, channels=16, blocks=2)
    model.train()
    model(torch.randn(32, 1, 40, 98))  # move the running statistics off their defaults
    model.eval()
    x = torch.randn(4, 1, 40, 98)
    with torch.no_grad():
        assert torch.allclose(speech.fold_batchnorm(model)(x), model(x), atol=1e-5)


def test_bad_training_configs_are_refused():
    with pytest.raises(speech.TrainingError, match="quant_mode"):
        speech.TrainConfig(quant_mode="int4")
    with pytest.raises(speech.TrainingError, match="multiple"):
        speech.TrainConfig(teacher_hidden=100, teacher_heads=3)
    with pytest.raises(speech.TrainingError, match="student_stride"):
        speech.TrainConfig(student_stride=(8, 2))
    a, b = speech.TrainConfig(), speech.TrainConfig(student_stride=[2, 4])
    assert b.student_stride == (2, 4) and a.key("d", "student") != b.key("d", "student")


# ------------------------------------------------------------------------- streaming


def test_detections_are_scored_with_a_time_tolerance():
    truth = [{"word": "yes", "start": 1.0, "end": 1.4}, {"word": "go", "start": 5.0, "end": 5.3},
             {"word": "up", "start": 9.0, "end": 9.3}]
    det = speech.Detection
    dets = [det("yes", 1.7, 1.5, 1.8, 0.9),   # 0.3 s after the end: a hit
            det("go", 6.2, 6.0, 6.3, 0.9),    # 0.9 s late: a false alarm, go missed
            det("up", 9.1, 9.0, 9.2, 0.8), det("up", 9.2, 9.1, 9.3, 0.8)]  # one hit, one extra
    s = speech.score(dets, truth, seconds=3600.0, tolerance_s=0.5)
    assert (s["hits"], s["false_alarms"], s["missed"]) == (2, 2, 1)
    assert s["precision"] == 0.5 and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["false_alarms_per_hour"] == 2.0


def _fake_posteriors(labels, word_at=(20, 23), level=0.6):
    """40 windows 0.1 s apart; `word` ("yes") holds `level` in windows [a, b), silence elsewhere."""
    centres = 0.5 + 0.1 * np.arange(40)
    post = np.zeros((40, len(labels)), np.float32)
    post[:, 0] = 1.0
    a, b = word_at
    post[a:b, 0], post[a:b, labels.index("yes")] = 1 - level, level
    return centres, post


def test_smoothing_and_threshold_decide_what_fires(ds):
    labels = list(ds.labels)
    spot = speech.StreamingSpotter(lambda x: None, labels, vad=False)
    centres, post = _fake_posteriors(labels)
    # three windows at 0.6: unsmoothed they pass 0.5; averaged over 9 they reach 0.6 * 3 / 9
    one = spot.decide(centres, post, smooth=1, threshold=0.5)
    assert [(d.word, round(d.time_s, 2)) for d in one] == [("yes", round(centres[20], 2))]
    assert spot.decide(centres, post, smooth=9, threshold=0.5) == []
    (d,) = spot.decide(centres, post, smooth=9, threshold=0.2)
    assert d.word == "yes" and d.score == pytest.approx(0.6 * 3 / 9, abs=1e-6)
    assert spot.smooth == 9 and spot.threshold == 0.5  # the overrides did not stick
    for bad in ({"smooth": 0}, {"smooth": 2.5}, {"threshold": 0.0}, {"threshold": 1.5}):
        with pytest.raises(ValueError, match=r"smooth|threshold"):
            spot.decide(centres, post, **bad)
    with pytest.raises(ValueError, match="hop_s"):
        speech.StreamingSpotter(lambda x: None, labels, vad=False, hop_s=0.0)


def test_a_word_said_twice_fires_twice_and_one_wobbly_word_once(ds):
    labels = list(ds.labels)
    spot = speech.StreamingSpotter(lambda x: None, labels, vad=False)
    yes = labels.index("yes")
    centres, post = _fake_posteriors(labels, word_at=(10, 13), level=0.9)
    post[18:21, 0], post[18:21, yes] = 0.1, 0.9  # "yes" again 0.8 s later
    twice = spot.decide(centres, post, smooth=3, threshold=0.5)
    assert [(d.word, round(d.time_s, 2)) for d in twice] == [("yes", 1.6), ("yes", 2.4)]
    # one utterance whose posterior wobbles by less than `dip` is one detection
    centres, post = _fake_posteriors(labels, word_at=(10, 16), level=0.9)
    post[13, 0], post[13, yes] = 0.15, 0.85
    (d,) = spot.decide(centres, post, smooth=1, threshold=0.5)
    assert d.word == "yes" and (d.start_s, d.end_s) == (centres[10], centres[15])
    with pytest.raises(ValueError, match="dip"):
        speech.StreamingSpotter(lambda x: None, labels, vad=False, dip=0.0)


def test_sweep_scores_every_pair_from_one_pass(ds, monkeypatch):
    labels = list(ds.labels)
    spot = speech.StreamingSpotter(lambda x: None, labels, vad=False)
    centres, post = _fake_posteriors(labels)
    calls = []
    monkeypatch.setattr(spot, "posteriors",
                        lambda audio: calls.append(1) or (centres, post, {}))
    rec = speech.Recording(np.zeros(16000 * 5, np.float32),
                           [{"kind": "command", "word": "yes", "start": 2.4, "end": 2.8}], 0)
    rows = speech.sweep(spot, rec, smooths=(1, 9), thresholds=(0.3, 0.5))
    assert len(calls) == 1 and len(rows) == 4
    f1 = {(r["smooth"], r["threshold"]): r["f1"] for r in rows}
    assert f1 == {(1, 0.3): 1.0, (1, 0.5): 1.0, (9, 0.3): 0.0, (9, 0.5): 0.0}
    # several recordings pool their hits: a recording with a command nobody said halves recall
    other = speech.Recording(rec.audio, [{"kind": "command", "word": "no", "start": 0.6,
                                          "end": 0.9}], 1)
    (pooled,) = speech.sweep(spot, [rec, other], smooths=(1,), thresholds=(0.5,))
    assert len(calls) == 3 and pooled["commands"] == 2
    assert (pooled["precision"], pooled["recall"]) == (0.5, 0.5)
    assert pooled["false_alarms_per_hour"] == pytest.approx(1 / (10 / 3600))
    with pytest.raises(ValueError, match="at least one"):
        speech.sweep(spot, [])


def test_per_word_thresholds_let_a_weak_word_fire_alone(ds):
    labels = list(ds.labels)
    centres, post = _fake_posteriors(labels)  # "yes" averages to 0.2 over 9 windows
    plain = speech.StreamingSpotter(lambda x: None, labels, vad=False)
    assert plain.decide(centres, post) == []
    spot = speech.StreamingSpotter(lambda x: None, labels, vad=False, thresholds={"yes": 0.2})
    (d,) = spot.decide(centres, post)
    assert d.word == "yes" and d.score == pytest.approx(0.2, abs=1e-6)
    assert spot.decide(centres, post, threshold=0.5) == []  # a global override sets all
    assert plain.decide(centres, post, thresholds={"yes": 0.2}) == [d]
    with pytest.raises(ValueError, match="not commands"):
        speech.StreamingSpotter(lambda x: None, labels, vad=False, thresholds={"maybe": 0.3})
    with pytest.raises(ValueError, match="threshold"):
        plain.decide(centres, post, thresholds={"yes": 1.5})


def test_calibrate_lowers_the_bar_only_where_it_finds_more_commands(ds, monkeypatch):
    labels = list(ds.labels)
    spot = speech.StreamingSpotter(lambda x: None, labels, vad=False)
    centres, post = _fake_posteriors(labels)  # a true "yes" that averages to 0.2
    no = labels.index("no")
    post[30:33, 0], post[30:33, no] = 0.55, 0.45  # a "no" nobody said: averages to 0.15
    calls = []
    monkeypatch.setattr(spot, "posteriors",
                        lambda audio: calls.append(1) or (centres, post, {}))
    rec = speech.Recording(np.zeros(16000 * 5, np.float32),
                           [{"kind": "command", "word": "yes", "start": 2.4, "end": 2.8}], 0)
    chosen = speech.calibrate(spot, rec, grid=(0.1, 0.3, 0.5))
    assert len(calls) == 1 and set(chosen) == set(labels[2:])
    assert chosen["yes"] == 0.1  # found only below 0.2
    assert chosen["no"] == 0.5  # at 0.1 it would fire falsely; ties go to the global bar
    assert all(t == 0.5 for w, t in chosen.items() if w != "yes")
    tuned = speech.StreamingSpotter(lambda x: None, labels, vad=False, thresholds=chosen)
    assert [d.word for d in tuned.decide(centres, post)] == ["yes"]
    with pytest.raises(ValueError, match="rounds"):
        speech.calibrate(spot, rec, rounds=0)
    with pytest.raises(ValueError, match="at least one"):
        speech.calibrate(spot, [])
    with pytest.raises(ValueError, match="seed 0 is the reported"):
        speech.calibrated_thresholds("never-read.onnx", ds, seeds=(0, 1))


def test_the_recording_has_truth_inside_it_and_silero_hears_speech(ds):
    rec = speech.make_recording(ds.config, 20.0, seed=3)
    assert rec.truth and all(0 <= e["start"] < e["end"] <= rec.seconds for e in rec.events)
    assert all(a["end"] < b["start"] for a, b in zip(rec.events, rec.events[1:], strict=False))
    assert {e["word"] for e in rec.truth} <= set(ds.config.commands)
    vad = speech.SileroVad()
    word = rec.truth[0]
    probs = vad.probabilities(rec.audio)
    chunk = speech.SileroVad.chunk / 16000
    during = probs[int(word["start"] / chunk):int(word["end"] / chunk) + 1].max()
    pairs = zip(rec.events, rec.events[1:], strict=False)
    quiet = [e for e in pairs if e[1]["start"] - e[0]["end"] > 1.2]
    gap = quiet[0] if quiet else None
    assert during > 0.5
    if gap:
        a, b = int((gap[0]["end"] + 0.4) / chunk), int((gap[1]["start"] - 0.3) / chunk)
        assert probs[a:b].max() < during


# ------------------------------------------------------------------------- bad audio


def _wav(x, rate=16000, channels=1, width=2):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(x * rate) * channels, dtype=f"<i{width}").tobytes()
                      if width > 1 else bytes(int(x * rate) * channels))
    return buf.getvalue()


BAD_AUDIO = {
    "empty": (b"", speech.EmptyAudioError, "no bytes"),
    "no samples": (_wav(0.0), speech.EmptyAudioError, "no samples"),
    "too short": (_wav(0.2), speech.AudioTooShortError, "at least"),
    "other sample rate": (_wav(1.0, rate=8000), speech.SampleRateError, "16000 Hz"),
    "stereo": (_wav(1.0, channels=2), speech.StereoAudioError, "mono"),
    "8-bit": (_wav(1.0, width=1), speech.SampleWidthError, "16-bit"),
    "not audio": (b"hello, I am a text file, not a recording", speech.NotAudioError, "WAV"),
    "cut short": (_wav(1.0)[:-1], speech.NotAudioError, "cut short"),  # was numpy's ValueError
    # a byte slipped into the fmt chunk: the next chunk's size is garbage, and wave's seek
    # past the end raised a bare RuntimeError
    "garbled header": (_wav(1.0)[:27] + b"\x85" + _wav(1.0)[27:], speech.NotAudioError,
                       "runs past the end"),
}


@pytest.mark.parametrize("name", list(BAD_AUDIO))
def test_bad_audio_gets_a_clear_error(name):
    data, error, words = BAD_AUDIO[name]
    with pytest.raises(error, match=words) as info:
        speech.load_wav(data)
    assert isinstance(info.value, DeploylabError) and info.value.reason


def test_good_audio_round_trips_and_arrays_are_checked():
    x = (np.sin(np.arange(16000) / 3) * 0.5).astype(np.float32)
    back = speech.load_wav(speech.encode_wav(x))
    assert back.shape == x.shape and np.abs(back - x).max() < 1e-4
    with pytest.raises(speech.StereoAudioError):
        speech.check_audio(np.zeros((16000, 2)))
    with pytest.raises(speech.EmptyAudioError):
        speech.check_audio(np.zeros(0))
