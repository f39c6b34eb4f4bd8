"""The streaming spotter as a servable pipeline: a recording with commands gets detections
with times; each kind of bad audio gets its 4xx (in-process, as a replica answers) and the
next request succeeds. One end-to-end Ray test (slow) checks the same over HTTP."""

import base64

import httpx
import numpy as np
import pytest

from deploylab import serve
from deploylab.cases import speech
from deploylab.serve.client import InferenceError


@pytest.fixture(scope="module")
def trained():
    ds = speech.build(speech.SpeechConfig.smoke(), progress=False)
    return ds, speech.train_all(ds, speech.TrainConfig.smoke(), progress=False)


@pytest.fixture(scope="module")
def client(trained):
    ds, run = trained
    pipe = speech.SpeechPipeline(run.paths["student-int8"], ds.labels, threshold=0.3,
                                 max_seconds=10.0)
    return serve.LocalClient(serve.ModelSpec("kws", "1", pipe, max_batch_size=1))


@pytest.fixture(scope="module")
def recording(trained):
    return speech.make_recording(trained[0].config, 8.0, seed=5)


def _good(client, recording):
    out = client.infer("kws", {"audio": [speech.encode_request(recording.audio)]})
    n = len(out["words"])
    assert all(len(out[k]) == n for k in ("time_s", "start_s", "end_s", "scores"))
    assert all(0 <= t <= recording.seconds for t in out["time_s"])
    assert all(w in speech.COMMANDS for w in out["words"])
    return out


def test_a_recording_gets_commands_with_times(client, recording):
    _good(client, recording)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wav(seconds=1.0, rate=16000, channels=1):
    x = np.zeros((int(seconds * rate), channels), np.float32) if channels > 1 else \
        np.zeros(int(seconds * rate), np.float32)
    return speech.encode_wav(x, rate)


BAD = {"empty": ("", 400), "not base64": ("@@@", 400),
       "not audio": (_b64(b"hello, I am text"), 400),
       "too short": (_b64(_wav(0.1)), 400),
       "other sample rate": (_b64(_wav(1.0, rate=44100)), 400),
       "stereo": (_b64(_wav(1.0, channels=2)), 400),
       "too long": (_b64(_wav(11.0)), 413)}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_audio_gets_a_4xx_and_the_next_request_works(client, recording, name):
    data, status = BAD[name]
    with pytest.raises(InferenceError) as info:
        client.infer("kws", {"audio": [data]})
    assert info.value.status == status and str(info.value)
    _good(client, recording)


def test_two_recordings_in_one_request_are_refused(trained, recording):
    ds, run = trained
    pipe = speech.SpeechPipeline(run.paths["student-int8"], ds.labels)
    clip = speech.encode_request(recording.audio)
    status, body = speech.local_infer(pipe, [clip, clip])
    assert status == 400 and "one recording" in body["error"]
    status, out = speech.local_infer(pipe, [clip])
    assert status == 200 and set(out) == {"words", "time_s", "start_s", "end_s", "scores"}


@pytest.mark.slow
def test_over_http_bad_audio_gets_a_4xx_and_the_server_keeps_serving(trained, recording):
    ds, run = trained
    spec = serve.ModelSpec("kws", "1", speech.SpeechPipeline(run.paths["student-int8"],
                                                             ds.labels), max_batch_size=1)
    with serve.start(spec, threads=1, max_body_bytes=32 << 20) as server:
        for name in ("not audio", "other sample rate", "stereo"):
            body = {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1],
                                "data": [BAD[name][0]]}]}
            r = httpx.post(f"{server.url}/v2/models/kws/infer", json=body, trust_env=False,
                           timeout=60)
            assert r.status_code == 400 and r.json()["error"], name
        with server.client() as c:
            out = c.infer("kws", {"audio": np.array([speech.encode_request(recording.audio)],
                                                    dtype=object)})
        assert len(out["words"]) == len(out["time_s"])
