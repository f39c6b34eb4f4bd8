"""The OCR pipeline behind the server, end to end on loopback: one server for the module
(Ray starts once). A good image is read; each bad input gets a 4xx with its reason and the
next request succeeds."""

import base64
import io

import httpx
import numpy as np
import pytest

from deploylab import serve
from deploylab.cases import ocr
from deploylab.cases.ocr.serving import OcrPipeline, encode_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    spec = serve.ModelSpec("ocr", "1", OcrPipeline(ocr.OcrConfig.fast(rec_batch=4)),
                           max_batch_size=4)
    s = serve.start(spec, threads=2, max_body_bytes=4 << 20)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sample():
    return next(x for x in ocr.make_benchmark(12, seed=0, strength="none")
                if x.meta["size"] >= 20)


def _post(server, *images):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                        "data": list(images)}]}
    return httpx.post(f"{server.url}/v2/models/ocr/infer", json=body, trust_env=False,
                      timeout=60)


def _good(server, sample):
    with server.client() as c:
        out = c.infer("ocr", {"image": np.array([encode_image(sample.image)], dtype=object)})
    assert out["boxes"].shape[1:] == (4, 2) and len(out["text"]) == len(out["scores"])
    assert len(out["text"]) >= 1
    return out


def test_a_good_image_is_read(server, sample):
    out = _good(server, sample)
    words = " ".join(out["text"]).split()
    truth = [w for line in sample.lines for w in line.word_list]
    assert len(set(words) & set(truth)) >= len(truth) // 2


def _png(mode, size):
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


BAD = {"empty": ("", 400), "not base64": ("@@@", 400),
       "not an image": (base64.b64encode(b"hello, I am text").decode(), 400),
       "unsupported mode": (_png("I;16", (16, 16)), 400),
       "huge": (_png("L", (12_000, 8)), 413)}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_get_a_4xx_and_the_server_keeps_serving(server, sample, name):
    data, status = BAD[name]
    r = _post(server, data)
    assert r.status_code == status, r.text
    assert r.json()["error"]
    _good(server, sample)


def test_two_images_in_one_request_are_refused(server, sample):
    img = encode_image(sample.image)
    r = _post(server, img, img)
    assert r.status_code == 400 and "one image" in r.json()["error"]
    _good(server, sample)
