"""Listening and looking at the speech case study: audio players, spectrograms, a clip
browser and the streaming timeline.

Example:
    >>> from deploylab.widgets import speech as sw
    >>> sw.player(ds.audio_test[0])                 # an ipywidgets.Audio
    >>> sw.clip_browser(ds, predict=onnx_logits(path))
"""

from __future__ import annotations

import numpy as np

__all__ = ["clip_browser", "player", "players", "plot_log_mel", "plot_timeline"]


def player(audio, sample_rate: int = 16_000, *, autoplay: bool = False):
    """An ipywidgets.Audio playing float or int16 samples (16 kHz mono by default)."""
    import ipywidgets as w

    from ..cases.speech.audio import encode_wav

    x = np.asarray(audio)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768
    return w.Audio(value=encode_wav(x, sample_rate), format="wav", autoplay=autoplay)


def players(clips: dict, sample_rate: int = 16_000):
    """A row of labelled players: {caption: samples}."""
    import ipywidgets as w

    return w.HBox([w.VBox([w.Label(str(k)), player(v, sample_rate)]) for k, v in clips.items()])


def plot_log_mel(feats, ax=None, *, title: str = "", hop_s: float = 0.01):
    """A [mels, frames] log-mel as an image, time in seconds."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    f = np.asarray(feats).reshape(-1, np.asarray(feats).shape[-1])
    ax.imshow(f, origin="lower", aspect="auto", cmap="magma",
              extent=(0, f.shape[1] * hop_s, 0, f.shape[0]))
    ax.set(xlabel="seconds", ylabel="mel bin", title=title)
    return ax


def clip_browser(ds, predict=None):
    """Pick a test clip by class and voice: hear it, see its log-mel, see the prediction."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    y = np.asarray(ds.y_test)
    label = w.Dropdown(options=list(ds.labels), description="class")
    index = w.IntSlider(0, 0, 0, description="example")
    out = w.Output()

    def show(*_):
        rows = np.nonzero(y == ds.labels.index(label.value))[0]
        index.max = max(0, len(rows) - 1)
        if not len(rows):
            return
        i = int(rows[min(index.value, len(rows) - 1)])
        guess = ""
        if predict is not None:
            guess = f" | predicted: {ds.labels[int(predict(ds.x_test[i:i + 1].numpy()).argmax())]}"
        with out:
            out.clear_output(wait=True)
            _fig, ax = plt.subplots(figsize=(6, 2.2))
            plot_log_mel(ds.x_test[i], ax, title=f"{ds.voices_test[i] or 'noise'}{guess}")
            plt.show()
            display(player(ds.audio_test[i]))

    label.observe(show, "value")
    index.observe(show, "value")
    show()
    return w.VBox([w.HBox([label, index]), out])


def plot_timeline(recording, result=None, vad=None, *, start: float = 0.0,
                  seconds: float = 30.0, ax=None):
    """Waveform with true commands (green), other sounds (grey), detections (red) and the
    VAD's speech probability, over [start, start + seconds]."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    sr = 16_000
    a, b = int(start * sr), int(min(len(recording.audio), (start + seconds) * sr))
    t = np.arange(a, b) / sr
    ax.plot(t[::8], recording.audio[a:b:8], color="0.6", lw=0.5)
    for e in recording.events:
        if e["end"] < start or e["start"] > start + seconds:
            continue
        color = "tab:green" if e["kind"] == "command" else "0.85"
        ax.axvspan(e["start"], e["end"], color=color, alpha=0.35)
        if e["kind"] == "command":
            ax.text(e["start"], 0.9, e["word"], color="tab:green", fontsize=8)
    if vad is not None:
        tv = (np.arange(len(vad)) + 0.5) * 512 / sr
        keep = (tv >= start) & (tv <= start + seconds)
        ax.plot(tv[keep], vad[keep] * 0.8 - 1.0, color="tab:blue", lw=1, label="VAD p(speech)")
    for d in (result.detections if result is not None else []):
        if start <= d.time_s <= start + seconds:
            ax.axvline(d.time_s, color="tab:red", lw=1)
            ax.text(d.time_s, -0.95 if vad is None else 0.75, d.word, color="tab:red",
                    fontsize=8)
    ax.set(xlim=(start, start + seconds), ylim=(-1.05, 1.05), xlabel="seconds")
    return ax
