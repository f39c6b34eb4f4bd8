"""The OCR benchmark the kit generates: text rendered onto images, with exact ground truth.

Every image is a pure function of (seed, index, strength): the same seed gives the same
pixels on every run, and the first k images of a larger set are the k images of a smaller
one, so smoke runs score a prefix of the full benchmark. Text lines are drawn with the fonts
that ship inside matplotlib (DejaVu Sans/Serif/Mono, STIX, Computer Modern) at several
sizes, the words come from the standard library's docstrings, the backgrounds are plain
colours or crops of scikit-learn's two sample photos, and the distortions (rotation, blur,
noise, JPEG) are drawn per image up to the strength's limits, so their effect can be read
off image by image. Each line's box is a quadrilateral (4 corners, clockwise from the top
left, in pixels) spanning the ink from the left of its first glyph to the right of its last
and from the font's cap height to its descender, then rotated with the image.

Images are cached as PNG (lossless, so a JPEG artefact is kept exactly) beside one JSON file
of labels each, under `deploylab.cache_dir("ocr", ...)`, written atomically.

Example:
    >>> from deploylab.cases import ocr
    >>> bench = ocr.make_benchmark(32, seed=0, strength="medium")
    >>> s = bench[0]; s.image.shape, s.lines[0].text, s.lines[0].quad
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import DeploylabError
from ...settings import cache_dir

__all__ = [
    "EmptyImageError",
    "FONTS",
    "ImageError",
    "ImageTooLargeError",
    "Line",
    "NotAnImageError",
    "OcrError",
    "STRENGTHS",
    "Sample",
    "UnsupportedImageModeError",
    "font_path",
    "load_image",
    "make_benchmark",
    "make_sample",
    "vocabulary",
]

VERSION = 1  # bump when rendering changes: the cache is keyed by it
CANVAS = (640, 480)  # (width, height) of every benchmark image
FONTS = {  # name -> file in matplotlib/mpl-data/fonts/ttf
    "DejaVu Sans": "DejaVuSans.ttf",
    "DejaVu Serif": "DejaVuSerif.ttf",
    "DejaVu Sans Mono": "DejaVuSansMono.ttf",
    "STIX": "STIXGeneral.ttf",
    "Computer Modern": "cmr10.ttf",
}
SIZES = (12, 16, 20, 28, 40)  # font sizes in pixels (the em square)
# Strength -> upper limits of each distortion; every image draws its own values below them.
STRENGTHS = {
    "none": {"rotation_deg": 0.0, "blur_px": 0.0, "noise_std": 0.0, "jpeg_quality": None},
    "low": {"rotation_deg": 2.0, "blur_px": 0.6, "noise_std": 4.0, "jpeg_quality": 80},
    "medium": {"rotation_deg": 5.0, "blur_px": 1.0, "noise_std": 8.0, "jpeg_quality": 50},
    "high": {"rotation_deg": 12.0, "blur_px": 1.6, "noise_std": 16.0, "jpeg_quality": 25},
}


class OcrError(DeploylabError):
    """Something the OCR case study cannot do as asked."""


class ImageError(OcrError):
    """An input image the pipeline refuses; `reason` is a short label (for the server)."""

    reason = "bad_image"


class EmptyImageError(ImageError):
    """No bytes, or an image without pixels."""

    reason = "empty_image"


class ImageTooLargeError(ImageError):
    """More pixels (or a longer side) than the pipeline accepts."""

    reason = "image_too_large"


class NotAnImageError(ImageError):
    """Bytes no image decoder recognizes, or a truncated file."""

    reason = "not_an_image"


class UnsupportedImageModeError(ImageError):
    """A pixel format with no unambiguous 8-bit RGB meaning (float, 16/32-bit, 5 channels)."""

    reason = "unsupported_mode"


# ------------------------------------------------------------------------- input images

MAX_PIXELS = 25_000_000  # a 25-megapixel photo; more is refused before decoding
MAX_SIDE = 10_000
# PIL modes that convert to RGB without guessing; others (I, F, I;16, HSV, LAB) are refused.
_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}


def _check_size(width: int, height: int, max_pixels: int, max_side: int) -> None:
    if width <= 0 or height <= 0:
        raise EmptyImageError(f"the image has no pixels ({width}x{height}); send a real image")
    if width * height > max_pixels or max(width, height) > max_side:
        raise ImageTooLargeError(
            f"the image is {width}x{height} pixels, over the limit of {max_pixels:,} pixels "
            f"or {max_side} per side; downscale it first (text stays readable at 2000 px)")


def _from_array(arr: np.ndarray, max_pixels: int, max_side: int) -> np.ndarray:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        if arr.size == 0:
            raise EmptyImageError(f"the image array is empty (shape {arr.shape})")
        raise UnsupportedImageModeError(
            f"an image array must be (H, W) or (H, W, 1|3|4), got shape {arr.shape}")
    _check_size(arr.shape[1], arr.shape[0], max_pixels, max_side)
    if arr.dtype != np.uint8:
        raise UnsupportedImageModeError(
            f"image arrays must be uint8 (0-255), got {arr.dtype}; scale and convert with "
            "np.clip(x * 255, 0, 255).astype(np.uint8) for floats in [0, 1]")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:  # composite onto white: transparent text is drawn on paper
        a = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3] * a + 255.0 * (1 - a)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_image(image, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """Any image the pipeline accepts, as an RGB uint8 array (H, W, 3).

    Args:
        image (bytes | str | PathLike | PIL.Image.Image | np.ndarray): encoded bytes (PNG,
            JPEG, WebP, BMP, TIFF, GIF: whatever Pillow reads), a file, a PIL image or a
            uint8 array (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA.
        max_pixels (int, default 25e6): larger images are refused (checked from the header,
            before decoding, so a decompression bomb costs nothing).
        max_side (int, default 10000): longest side accepted.

    Returns:
        np.ndarray: (H, W, 3) uint8, RGB; transparency is composited onto white.

    Raises:
        EmptyImageError, ImageTooLargeError, NotAnImageError, UnsupportedImageModeError:
            all subclasses of `ImageError` (a `DeploylabError`), each naming the fix.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels, max_side)
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.is_file():
            raise NotAnImageError(f"{p} is not a file")
        image = p.read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise EmptyImageError("the image is 0 bytes; send the file's contents")
        try:
            with warnings.catch_warnings():  # the size is checked below, by our own limit
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise NotAnImageError(
                f"{len(data)} bytes that are not an image Pillow can read (starts with "
                f"{data[:8]!r}); send PNG, JPEG, WebP, BMP or TIFF bytes") from None
    elif isinstance(image, Image.Image):
        img = image
    else:
        raise NotAnImageError(f"cannot read an image from a {type(image).__name__}; pass "
                              "bytes, a path, a PIL image or a uint8 array")
    _check_size(img.width, img.height, max_pixels, max_side)
    if img.mode not in _MODES:
        raise UnsupportedImageModeError(
            f"image mode {img.mode!r} has no unambiguous 8-bit RGB meaning; convert it "
            "first (e.g. scale 16-bit data to 0-255 and save as 8-bit PNG)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise NotAnImageError(f"the image could not be decoded ({e}); the file may be "
                              "truncated") from None
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (img.mode == "P"
                                                           and "transparency" in img.info):
        return _from_array(np.asarray(img.convert("RGBA")), max_pixels, max_side)
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


# ---------------------------------------------------------------------- ground truth


@dataclass
class Line:
    """One text line's ground truth.

    Args:
        text (str): the words joined by single spaces.
        quad (list[list[float]]): 4 corners [x, y], clockwise from the top left.
        words (list[list[list[float]]]): one quad per word, same order as the text.
    """

    text: str
    quad: list
    words: list = field(default_factory=list)

    @property
    def word_list(self) -> list[str]:
        return self.text.split()


@dataclass
class Sample:
    """One benchmark image and everything that made it.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        lines (list[Line]): the ground truth, top to bottom.
        meta (dict): index, seed, strength, font, size (px), layout ("lines" or
            "paragraph"), background ("plain" or "photo:NAME"), rotation_deg, blur_px,
            noise_std, jpeg_quality.
    """

    image: np.ndarray
    lines: list[Line]
    meta: dict

    @property
    def words(self) -> int:
        return sum(len(line.word_list) for line in self.lines)


# ----------------------------------------------------------------------------- pieces


def font_path(name: str) -> Path:
    """The TrueType file of one of `FONTS`, inside matplotlib's own data folder."""
    import matplotlib

    if name not in FONTS:
        raise OcrError(f"unknown font {name!r}; the benchmark uses {list(FONTS)}")
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONTS[name]
    if not path.is_file():  # pragma: no cover - matplotlib always ships these
        raise OcrError(f"{path} is missing; reinstall matplotlib (`make setup`)")
    return path


@lru_cache(maxsize=64)
def _font(name: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path(name)), size)


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Words from the standard library's docstrings: letters and digits only, 2-12
    characters, starting with a letter; sorted, each once (the draw weights them by how
    often they occur)."""
    from ... import assets

    counts: dict[str, int] = {}
    for rec in assets.stdlib_docstrings():
        for w in re.findall(r"(?<![\w.])[A-Za-z][A-Za-z0-9]{1,11}(?![\w])", rec["doc"]):
            counts[w] = counts.get(w, 0) + 1
    return tuple(sorted(counts))


def _weights(words: Sequence[str]) -> np.ndarray:
    # Zipf-ish: shorter, commoner-looking words more often, without a second corpus pass.
    w = np.array([1.0 / (1 + abs(len(x) - 6)) for x in words])
    return w / w.sum()


@lru_cache(maxsize=1)
def _photos() -> tuple[tuple[str, np.ndarray], ...]:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    return tuple((Path(f).stem, img) for f, img in zip(data.filenames, data.images,
                                                        strict=True))


def _background(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, str]:
    from PIL import Image

    w, h = CANVAS
    if kind == "plain":
        base = rng.uniform(170, 255, 3)
        ramp = np.linspace(0, rng.uniform(-40, 10), h)[:, None, None]  # soft light gradient
        img = np.clip(base[None, None, :] + ramp + np.zeros((h, w, 3)), 0, 255)
        return img.astype(np.uint8), "plain"
    name, photo = _photos()[int(rng.integers(len(_photos())))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.55, 1.0)  # crop a 4:3 window, then resize to the canvas
    cw = int(min(pw, ph * w / h) * scale)
    ch = int(cw * h / w)
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize(CANVAS, Image.BICUBIC)
    return np.asarray(crop).copy(), f"photo:{name}"


def _width(font, words: list[str], gap: float) -> float:
    return sum(font.getlength(w) for w in words) + gap * font.getlength(" ") * (len(words) - 1)


def _line_words(rng, words, weights, font, max_width: float, gap: float) -> list[str]:
    n = int(rng.integers(2, 7))
    picked = list(rng.choice(len(words), size=n, p=weights))
    out = [words[i] for i in picked]
    while len(out) > 1 and _width(font, out, gap) > max_width:
        out.pop()
    return out


def _quad(box) -> list[list[float]]:
    x0, y0, x1, y1 = box
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _layout(rng, words, weights, font_name: str, size: int, layout: str, gap: float):
    """Lines of words placed on the canvas: [(x, y, [words])], y the baseline."""
    font = _font(font_name, size)
    w, h = CANVAS
    margin = 0.1 * w
    pitch = size * rng.uniform(1.35, 1.7)
    if layout == "paragraph":
        n = min(int(rng.integers(3, 7)), int(0.7 * h // pitch))
        top = rng.uniform(0.12 * h, max(0.12 * h, 0.85 * h - n * pitch))
        x = rng.uniform(margin, 0.3 * w)
        return [(x, top + (i + 1) * pitch, _line_words(rng, words, weights, font,
                                                      w - margin - x, gap)) for i in range(n)]
    n = int(rng.integers(1, 4))
    slots = np.sort(rng.choice(np.arange(1, 7), size=n, replace=False))
    out = []
    for s in slots:  # well separated lines at random heights and indents
        x = rng.uniform(margin, 0.45 * w)
        y = 0.1 * h + s * 0.75 * h / 7 + size
        out.append((x, y, _line_words(rng, words, weights, font, w - margin - x, gap)))
    return out


def _line_boxes(font, x: float, baseline: float, words: list[str], gap: float):
    """(line box, word boxes) before rotation: ink left/right of the words, cap height to
    descender vertically (from the glyphs 'H' and 'g', so every line of a font and size has
    the same height whatever its letters)."""
    top = baseline + font.getbbox("H", anchor="ls")[1]
    bottom = baseline + font.getbbox("g", anchor="ls")[3]
    boxes, cursor = [], x
    space = gap * font.getlength(" ")
    for word in words:
        left, t, right, b = font.getbbox(word, anchor="ls")
        boxes.append((cursor + left, min(top, baseline + t), cursor + right,
                      max(bottom, baseline + b)))
        cursor += font.getlength(word) + space
    line = (boxes[0][0], min(b[1] for b in boxes), boxes[-1][2], max(b[3] for b in boxes))
    return line, boxes, space


def _ink_colour(rng, img: np.ndarray, box) -> tuple[int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    region = img[max(0, y0):max(1, y1), max(0, x0):max(1, x1)]
    lum = float(region.mean()) if region.size else 128.0
    if lum > 110:  # dark ink on light ground, light ink on dark
        return tuple(int(v) for v in rng.integers(0, 70, 3))
    return tuple(int(v) for v in rng.integers(200, 256, 3))


def _rotate_points(points: np.ndarray, deg: float) -> np.ndarray:
    """Where points land when the canvas turns by `deg` (counter-clockwise on screen, as
    PIL's rotate does) about its centre."""
    w, h = CANVAS
    c = np.array([w / 2, h / 2])
    t = math.radians(deg)
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    return (points - c) @ rot.T + c


def _distort(rng, img: np.ndarray, limits: dict, meta: dict) -> np.ndarray:
    from PIL import Image, ImageFilter

    pil = Image.fromarray(img)
    deg = float(rng.uniform(-1, 1) * limits["rotation_deg"])
    if deg:
        fill = tuple(int(v) for v in img.reshape(-1, 3).mean(0))
        pil = pil.rotate(deg, resample=Image.BICUBIC, fillcolor=fill)
    blur = float(rng.uniform(0, limits["blur_px"]))
    if blur > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    out = np.asarray(pil).astype(np.float32)
    noise = float(rng.uniform(0, limits["noise_std"]))
    if noise > 0:
        out = out + rng.normal(0, noise, out.shape)
    out = np.clip(out, 0, 255).round().astype(np.uint8)
    quality = None
    if limits["jpeg_quality"] is not None:
        quality = int(rng.integers(limits["jpeg_quality"], 96))
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, "JPEG", quality=quality)
        out = np.asarray(Image.open(buf).convert("RGB")).copy()
    meta.update(rotation_deg=round(deg, 3), blur_px=round(blur, 3), noise_std=round(noise, 3),
                jpeg_quality=quality)
    return out


# --------------------------------------------------------------------------- samples


def make_sample(index: int, *, seed: int = 0, strength: str = "medium",
                words: Sequence[str] | None = None) -> Sample:
    """Render one benchmark image (a pure function of its arguments).

    Args:
        index (int): position in the benchmark.
        seed (int, default 0): the benchmark's seed.
        strength (str, default "medium"): "none", "low", "medium" or "high" (see
            `STRENGTHS`: the upper limits of rotation, blur, noise and JPEG compression).
        words (Sequence[str] | None, default None): the word list; None: `vocabulary()`.

    Returns:
        Sample
    """
    from PIL import Image, ImageDraw

    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {list(STRENGTHS)}, got {strength!r}")
    words = tuple(words) if words is not None else vocabulary()
    if not words:
        raise OcrError("the word list is empty")
    rng = np.random.default_rng([int(seed), int(index), 7])
    font_name = list(FONTS)[int(rng.integers(len(FONTS)))]
    size = int(SIZES[int(rng.integers(len(SIZES)))])
    layout = "paragraph" if rng.random() < 0.5 else "lines"
    img, background = _background(rng, "photo" if rng.random() < 0.5 else "plain")
    font = _font(font_name, size)
    gap = float(rng.uniform(1.0, 2.2))  # word spacing in spaces (justified text stretches)
    placed = _layout(rng, words, _weights(words), font_name, size, layout, gap)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    lines = []
    for x, baseline, line_words in placed:
        box, word_boxes, space = _line_boxes(font, x, baseline, line_words, gap)
        ink, cursor = _ink_colour(rng, img, box), x
        for word in line_words:  # word by word, so the gap is exactly what was recorded
            draw.text((cursor, baseline), word, font=font, anchor="ls", fill=ink)
            cursor += font.getlength(word) + space
        lines.append((" ".join(line_words), box, word_boxes))
    meta = {"index": int(index), "seed": int(seed), "strength": strength, "font": font_name,
            "size": size, "layout": layout, "background": background,
            "word_gap": round(gap, 3)}
    out = _distort(rng, np.asarray(pil), STRENGTHS[strength], meta)
    deg = meta["rotation_deg"]
    gt = [Line(text, _rotate_points(np.array(_quad(box)), deg).round(2).tolist(),
               [_rotate_points(np.array(_quad(b)), deg).round(2).tolist() for b in wbs])
          for text, box, wbs in lines]
    return Sample(out, gt, meta)


def _cache_folder(seed: int, strength: str, words: Sequence[str] | None) -> Path:
    import hashlib

    vocab = words if words is not None else vocabulary()
    digest = hashlib.sha256("\n".join(vocab).encode()).hexdigest()[:10]
    return cache_dir("ocr", f"bench-v{VERSION}", f"seed{seed}-{strength}-{digest}")


def _load_cached(folder: Path, i: int) -> Sample | None:
    png, js = folder / f"{i:05d}.png", folder / f"{i:05d}.json"
    if not (png.is_file() and js.is_file()):
        return None
    try:
        labels = json.loads(js.read_text())
        from PIL import Image

        with Image.open(png) as im:
            image = np.asarray(im.convert("RGB")).copy()
    except (OSError, ValueError):
        return None  # a damaged entry is rebuilt
    return Sample(image, [Line(**d) for d in labels["lines"]], labels["meta"])


def _store(folder: Path, i: int, s: Sample) -> None:
    from PIL import Image

    from ..._files import atomic_path, write_atomic

    with atomic_path(folder / f"{i:05d}.png") as tmp:
        Image.fromarray(s.image).save(tmp, "PNG")
    write_atomic(folder / f"{i:05d}.json",
                 json.dumps({"lines": [asdict(line) for line in s.lines], "meta": s.meta}))


def make_benchmark(n: int, *, seed: int = 0, strength: str = "medium",
                   words: Sequence[str] | None = None, cache: bool = True,
                   start: int = 0) -> list[Sample]:
    """The first `n` images of the benchmark for a seed and strength (cached).

    Args:
        n (int): images.
        seed (int, default 0): different seeds give different benchmarks; use one for
            calibration and another for evaluation.
        strength (str, default "medium"): distortion limits (see `STRENGTHS`).
        words (Sequence[str] | None, default None): the word list; None: `vocabulary()`.
        cache (bool, default True): reuse and write the cache (PNG + JSON per image).
        start (int, default 0): index of the first image.

    Returns:
        list[Sample]
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {list(STRENGTHS)}, got {strength!r}")
    folder = _cache_folder(seed, strength, words) if cache else None
    out = []
    for i in range(start, start + n):
        s = _load_cached(folder, i) if folder else None
        if s is None:
            s = make_sample(i, seed=seed, strength=strength, words=words)
            if folder:
                _store(folder, i, s)
        out.append(s)
    return out
