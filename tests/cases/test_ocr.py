"""The OCR case study: generated benchmark, metrics on hand-computed fixtures, the pipeline's
pieces, the graph pass and int8 parity, and clear errors for bad images."""

import dataclasses
import io

import numpy as np
import pytest

from deploylab.cases import ocr
from deploylab.cases.ocr import metrics as m
from deploylab.errors import DeploylabError

WORDS = ("alpha", "Beta", "gamma", "delta42", "epsilon", "zeta", "Theta", "iota", "kappa",
         "lambda", "mu", "Omicron")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------------- benchmark


def test_a_sample_is_a_pure_function_of_seed_index_and_strength():
    a = ocr.make_sample(3, seed=7, strength="medium", words=WORDS)
    b = ocr.make_sample(3, seed=7, strength="medium", words=WORDS)
    c = ocr.make_sample(3, seed=8, strength="medium", words=WORDS)
    assert np.array_equal(a.image, b.image) and a.meta == b.meta
    assert [(line.text, line.quad) for line in a.lines] == [(line.text, line.quad)
                                                            for line in b.lines]
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (480, 640, 3) and a.image.dtype == np.uint8
    assert all(w in WORDS for line in a.lines for w in line.word_list)


def test_the_cache_returns_what_was_rendered_and_prefixes_agree(tmp_cache):
    fresh = ocr.make_benchmark(3, seed=2, strength="high", words=WORDS, cache=False)
    cached = ocr.make_benchmark(3, seed=2, strength="high", words=WORDS)
    again = ocr.make_benchmark(2, seed=2, strength="high", words=WORDS)  # from the cache
    assert list(tmp_cache.rglob("*.png")) and not list(tmp_cache.rglob(".*tmp*"))
    for x, y, z in zip(fresh, cached, again, strict=False):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.image, z.image)
        assert x.meta == y.meta == z.meta
        assert [line.text for line in x.lines] == [line.text for line in z.lines]


def _plain_samples(n):
    out, i = [], 0
    while len(out) < n:
        s = ocr.make_sample(i, seed=11, strength="none", words=WORDS)
        if s.meta["background"] == "plain":
            out.append(s)
        i += 1
    return out


def _inside(quad, xs, ys, pad=1.5):
    q = np.array(quad)
    return ((xs >= q[:, 0].min() - pad) & (xs <= q[:, 0].max() + pad)
            & (ys >= q[:, 1].min() - pad) & (ys <= q[:, 1].max() + pad))


def test_ground_truth_boxes_contain_the_rendered_text():
    for s in _plain_samples(4):
        assert s.meta["rotation_deg"] == 0 and s.meta["jpeg_quality"] is None
        img = s.image.astype(int)
        # the plain background varies only down the rows: ink is what differs from its row
        ink = np.abs(img - np.median(img, axis=1, keepdims=True)).max(axis=2) > 60
        ys, xs = np.nonzero(ink)
        covered = np.zeros(len(xs), dtype=bool)
        for line in s.lines:
            inside = _inside(line.quad, xs, ys)
            assert inside.any(), f"no ink inside the box of {line.text!r}"
            covered |= inside
            assert len(line.words) == len(line.word_list)
            for word in line.words:
                assert _inside(word, xs, ys).any()
        assert covered.all(), f"{(~covered).sum()} ink pixels outside every box"


def test_rotated_boxes_stay_on_the_canvas_and_turn_with_the_image():
    for i in range(6):
        s = ocr.make_sample(i, seed=4, strength="high", words=WORDS)
        pts = np.array([p for line in s.lines for p in line.quad])
        assert (pts >= -1).all() and (pts[:, 0] <= 641).all() and (pts[:, 1] <= 481).all()
        top = np.array(s.lines[0].quad)
        slope = np.degrees(np.arctan2(top[1, 1] - top[0, 1], top[1, 0] - top[0, 0]))
        assert slope == pytest.approx(-s.meta["rotation_deg"], abs=0.01)


def test_unknown_strength_and_font_are_refused():
    with pytest.raises(ValueError, match="strength"):
        ocr.make_sample(0, strength="extreme", words=WORDS)
    with pytest.raises(DeploylabError, match="unknown font"):
        ocr.font_path("Comic Sans")
    assert all(ocr.font_path(f).is_file() for f in ocr.FONTS)


# ---------------------------------------------------------------------------- metrics


def test_string_metrics_match_hand_computed_values():
    assert m.edit_distance("kitten", "sitting") == 3
    assert m.edit_distance("", "abc") == 3 and m.edit_distance("abc", "abc") == 0
    assert m.lcs_length("a b c d".split(), "a x c d".split()) == 3
    assert m.cer(["helo wrld"], ["hello world"]) == pytest.approx(2 / 11)
    assert m.cer(["ab", "xyz"], ["ab", "xy"]) == pytest.approx(1 / 4)  # summed, then divided
    r = m.recognition_scores(["a x c d", "hello  world"], ["a b c d", "hello world"])
    assert r["word_accuracy"] == pytest.approx(5 / 6)
    assert r["word_precision"] == pytest.approx(5 / 6)
    assert r["line_accuracy"] == 0.5 and r["words"] == 6


SQ = [[0, 0], [2, 0], [2, 1], [0, 1]]


def test_polygon_iou_on_fixtures():
    assert m.polygon_iou(SQ, [[1, 0], [3, 0], [3, 1], [1, 1]]) == pytest.approx(1 / 3)
    assert m.polygon_iou(SQ, SQ[::-1]) == pytest.approx(1.0)  # orientation does not matter
    assert m.polygon_iou(SQ, [[5, 5], [6, 5], [6, 6], [5, 6]]) == 0.0
    diamond = [[1, -1], [2, 0], [1, 1], [0, 0]]  # square of area 2 turned 45 degrees
    unit = [[0, -1], [2, -1], [2, 1], [0, 1]]  # 2x2 square holding it
    assert m.polygon_area(diamond) == pytest.approx(2.0)
    assert m.polygon_iou(diamond, unit) == pytest.approx(2 / 4)


def test_matching_is_one_to_one_and_detection_scores_follow():
    truth = [SQ, [[0, 5], [2, 5], [2, 6], [0, 6]]]
    preds = [SQ, [[0.1, 0], [2, 0], [2, 1], [0.1, 1]], [[9, 9], [10, 9], [10, 10], [9, 10]]]
    pairs = m.match(preds, truth)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0)]  # the second copy finds no free truth
    s = m.detection_scores([preds], [truth])
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 1)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 2)
    assert s["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    narrow = [[0, 0], [0.9, 0], [0.9, 1], [0, 1]]  # IoU 0.45 with SQ
    assert m.match([narrow], [SQ]) == []
    assert len(m.match([narrow], [SQ], iou=0.44)) == 1


def test_end_to_end_joins_a_split_line_and_counts_misses():
    line, other = [[0, 0], [10, 0], [10, 1], [0, 1]], [[0, 5], [10, 5], [10, 6], [0, 6]]
    left, right = [[0, 0], [5, 0], [5, 1], [0, 1]], [[5, 0], [10, 0], [10, 1], [5, 1]]
    pred = [([right, left, [[50, 50], [51, 50], [51, 51], [50, 51]]], ["world", "hello", "x"])]
    s = m.end_to_end(pred, [([line, other], ["hello world", "missed line"])])
    assert s["word_accuracy"] == pytest.approx(2 / 4)  # the missed line scores zero
    assert s["word_precision"] == pytest.approx(2 / 3)  # "x" counts against precision
    assert s["line_accuracy"] == 0.5


# --------------------------------------------------------------------- pipeline pieces


def test_ctc_decoding_collapses_repeats_and_drops_blanks():
    charset = ["blank", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 3, 0, 2]  # a a _ a b b ' ' _ b -> "aab b"
    probs = np.full((1, len(steps), 4), 0.01, np.float32)
    probs[0, np.arange(len(steps)), steps] = 0.97
    (text, score), = ocr.ctc_decode(probs, charset)
    assert text == "aab b" and score == pytest.approx(0.97)


def test_crops_batch_by_width_and_detector_inputs_are_multiples_of_32():
    from deploylab.cases.ocr.engine import det_input, rec_inputs

    crops = [np.zeros((20, w, 3), np.uint8) for w in (400, 100, 410, 200, 405)]
    batches = rec_inputs(crops, 4)
    assert sorted(i for idx, _ in batches for i in idx) == [0, 1, 2, 3, 4]
    widths = {tuple(idx): x.shape[3] for idx, x in batches}
    assert widths[(1,)] == 320 and widths[(3,)] == 480  # >= 320, PaddleOCR's rule
    assert widths[(0, 4, 2)] == 984  # the three similar crops share one batch
    assert [len(idx) for idx, _ in rec_inputs(crops, 1)] == [1] * 5
    img = np.zeros((480, 640, 3), np.uint8)
    assert det_input(img, 736, "min").shape == (1, 3, 736, 992)
    assert det_input(img, 640, "max").shape == (1, 3, 480, 640)
    assert det_input(img, 320, "max").shape == (1, 3, 256, 320)
    # a thin strip: "min" would scale 1 x 2000 px by 736 (12 GiB); the long side stops at 4000
    assert det_input(np.zeros((1, 2000, 3), np.uint8), 736, "min").shape == (1, 3, 32, 4000)
    assert det_input(np.zeros((9000, 8, 3), np.uint8), 736, "max").shape == (1, 3, 736, 32)
    assert det_input(np.zeros((6000, 5000, 3), np.uint8), 736, "min").shape[2:] == (4000, 3328)


def test_configs_validate():
    with pytest.raises(ValueError, match="det_limit"):
        ocr.OcrConfig(det_limit="both")
    with pytest.raises(ValueError, match="rec_batch"):
        ocr.OcrConfig(rec_batch=0)
    assert ocr.OcrConfig.fast().det_limit == "max"


# ------------------------------------------------------------------------ bad images


def _png(mode, size, **kw):
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, **kw).save(buf, "PNG")
    return buf.getvalue()


BAD = {
    "empty bytes": (b"", ocr.EmptyImageError),
    "empty array": (np.zeros((0, 5, 3), np.uint8), ocr.EmptyImageError),
    "huge": (_png("L", (12_000, 8)), ocr.ImageTooLargeError),
    "not an image": (b"this is a text file, not a picture", ocr.NotAnImageError),
    "truncated": (_png("RGB", (64, 64), color=(9, 9, 9))[:60], ocr.NotAnImageError),
    "16-bit mode": (_png("I;16", (32, 32)), ocr.UnsupportedImageModeError),
    "float array": (np.zeros((8, 8, 3), np.float32), ocr.UnsupportedImageModeError),
    "5 channels": (np.zeros((8, 8, 5), np.uint8), ocr.UnsupportedImageModeError),
}


@pytest.mark.parametrize("name", list(BAD))
def test_every_bad_image_gets_a_clear_error(name):
    data, error = BAD[name]
    with pytest.raises(error) as info:
        ocr.load_image(data)
    assert isinstance(info.value, DeploylabError) and info.value.reason
    assert len(str(info.value)) > 20


def test_good_images_in_every_form_load_as_rgb(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: white paper
    assert (ocr.load_image(rgba) == 255).all()
    gray = ocr.load_image(np.full((4, 6), 7, np.uint8))
    assert gray.shape == (4, 6, 3) and (gray == 7).all()
    path = tmp_path / "p.png"
    Image.new("P", (6, 4)).save(path)
    assert ocr.load_image(path).shape == (4, 6, 3)
    assert ocr.load_image(_png("1", (6, 4))).shape == (4, 6, 3)


def test_the_serving_pipeline_turns_bad_images_into_4xx():
    import base64

    from deploylab.cases.ocr.serving import OcrPipeline, encode_image, local_infer
    from deploylab.serve import ProtocolError
    from deploylab.serve.protocol import InferRequest

    pipe = OcrPipeline()

    def req(*data):
        return InferRequest(None, {"image": np.array(list(data), dtype=object)}, [], len(data))

    cases = {"": (400, "empty_image"), "%%%": (400, "not_base64"),
             base64.b64encode(BAD["huge"][0]).decode(): (413, "image_too_large"),
             base64.b64encode(b"plain text").decode(): (400, "not_an_image"),
             base64.b64encode(BAD["16-bit mode"][0]).decode(): (400, "unsupported_mode")}
    for data, (status, reason) in cases.items():
        with pytest.raises(ProtocolError) as info:
            pipe.prepare(req(data))
        assert (info.value.status, info.value.reason) == (status, reason)
    good = encode_image(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ProtocolError, match="one image per request"):
        pipe.prepare(req(good, good))
    assert pipe.prepare(req(good)).shape == (8, 8, 3)
    assert local_infer(pipe, ["%%%"])[0] == 400 and pipe.engine is None  # refused before loading


# ------------------------------------------------------------- real models (slow-ish)


@pytest.mark.slow
def test_a_thin_strip_is_answered_at_the_default_resolution():
    # "min" scales the short side up to 736: a 1 x 2000 px strip asked for a 12 GiB input
    from deploylab.cases.ocr.serving import OcrPipeline, encode_image, local_infer

    strip = encode_image(np.full((1, 2000, 3), 255, np.uint8))
    status, out = local_infer(OcrPipeline(), [strip])
    assert status == 200 and len(out["text"]) == 0


@pytest.mark.slow
def test_the_graph_pass_keeps_both_models_exact():
    import onnx
    import onnxruntime as ort

    det, rec = ocr.model_paths()
    rng = np.random.default_rng(0)
    for src, shape in ((det, (1, 3, 96, 160)), (rec, (2, 3, 48, 320))):
        fused = ocr.optimize_graph(src)
        meta = {p.key: p.value for p in onnx.load(str(fused)).metadata_props}
        assert int(meta["deploylab_folded_affine"]) > 10 and int(meta["deploylab_hardswish"]) > 10
        x = rng.standard_normal(shape).astype(np.float32)
        a = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
        b = ort.InferenceSession(str(fused)).run(None, {"x": x})[0]
        assert np.abs(a - b).max() < 1e-4


@pytest.fixture(scope="module")
def engines():
    calib = ocr.make_benchmark(4, seed=1, strength="medium")
    return {k: ocr.OcrEngine(c) for k, c in ocr.variant_configs(calib).items()}


@pytest.mark.slow
def test_the_pipeline_reads_clean_text_and_agrees_with_the_package(engines):
    from rapidocr_onnxruntime import RapidOCR

    s = next(x for x in ocr.make_benchmark(12, seed=0, strength="none")
             if x.meta["size"] >= 20 and len(x.lines) == 1)
    ours = engines["fp32"](s.image)
    assert m.recognition_scores([" ".join(ours.texts)], [s.lines[0].text])["cer"] < 0.2
    theirs, _ = RapidOCR(use_cls=False)(np.ascontiguousarray(s.image[:, :, ::-1]))
    assert [t for _, t, _ in theirs] == ours.texts
    assert np.abs(np.array([b for b, _, _ in theirs]) - ours.boxes).max() <= 2


@pytest.mark.slow
def test_int8_models_agree_with_fp32_on_fixed_crops(engines):
    """Parity gate of static int8 against fp32, on the true crops of 6 fixed images and on
    the detector's probability map: the tolerances are what the benchmark can absorb (the
    suite's targets then check the end-to-end effect)."""
    samples = ocr.make_benchmark(6, seed=5, strength="low")
    fp32, int8 = engines["fp32-optimized"], engines["int8"]
    a = ocr.recognition_on_truth(fp32, samples)["predictions"]
    b = ocr.recognition_on_truth(int8, samples)["predictions"]
    assert m.cer(b, a) <= 0.05, list(zip(a, b, strict=True))  # int8 read vs fp32 read
    from deploylab.cases.ocr.engine import det_input

    x = det_input(np.ascontiguousarray(samples[0].image[:, :, ::-1]), 736, "min")
    pa, pb = fp32.det.run(None, {"x": x})[0], int8.det.run(None, {"x": x})[0]
    assert np.abs(pa - pb).mean() <= 0.02
    assert ((pa > 0.3) == (pb > 0.3)).mean() >= 0.98  # the binarized text map DB boxes come from


@pytest.mark.slow
def test_evaluation_scores_and_groups(engines):
    samples = ocr.make_benchmark(3, seed=0, strength="medium")
    ev = ocr.evaluate(engines["int8-batched"], samples)
    s = ev.summary
    assert 0 <= s["det_f1"] <= 1 and 0 <= s["word_accuracy"] <= 1 and s["images"] == 3
    assert s["latency_ms_p50"] > 0 and s["lines"] == sum(len(x.lines) for x in samples)
    table = ev.table()
    assert len(table) == 3 and {"size", "font", "predicted", "truth"} <= set(table.columns)
    assert ev.by("background")["images"].sum() == 3
    with pytest.raises(ocr.EmptyImageError):
        engines["int8"](b"")
    with pytest.raises(ocr.ImageTooLargeError):  # arrays are checked like bytes
        engines["int8"](np.zeros((12_000, 8, 3), np.uint8))


@pytest.mark.slow
def test_pipelines_are_timed_interleaved_per_image(engines):
    images = [s.image for s in ocr.make_benchmark(2, seed=0, strength="low")]
    calm = dataclasses.replace(engines["int8"].config, spinning=False)
    t = ocr.time_pipelines({"in-call": engines["int8"], "never": calm}, images,
                           repeats=2, warmup=0, block=2)
    assert list(t) == ["in-call", "never"]
    assert all(len(x.samples_ms) == 4 and x.p50 > 0 for x in t.values())  # repeats x block
    with pytest.raises(ValueError, match="at least one image"):
        ocr.time_pipelines({"never": calm}, [])
