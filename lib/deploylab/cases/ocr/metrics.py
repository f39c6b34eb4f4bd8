"""OCR metrics: polygon IoU and one-to-one matching, detection precision/recall/F1, character
error rate, word accuracy, and end-to-end scores of a whole pipeline against ground truth.

Definitions (all counts are summed over the benchmark before dividing, so long lines and
busy images weigh what they contain):
- detection: a predicted quadrilateral matches a true line when their polygon IoU is at least
  0.5; matching is one-to-one, greedy from the highest IoU (ICDAR's rule). Precision = matched
  / predicted, recall = matched / true, F1 their harmonic mean.
- recognition (on the true line crops, isolating the recognizer): CER = character edit
  distance / true characters; word accuracy = words recovered in order (the longest common
  subsequence of the word lists) / true words; line accuracy = exact lines / lines.
- end to end: every predicted box is assigned to the true line it overlaps most (at least
  half of the predicted box inside it), the texts assigned to one line are joined in reading
  order, and the true line's words are scored against them as above. Words of unassigned
  boxes count against word precision only. A line the detector split in two still scores;
  a line it missed scores zero.

Example:
    >>> polygon_iou([[0, 0], [2, 0], [2, 1], [0, 1]], [[1, 0], [3, 0], [3, 1], [1, 1]])
    0.3333333333333333
    >>> cer(["helo wrld"], ["hello world"])
    0.18181818181818182
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "cer",
    "detection_scores",
    "edit_distance",
    "end_to_end",
    "joined_lines",
    "lcs_length",
    "match",
    "polygon_area",
    "polygon_intersection",
    "polygon_iou",
    "recognition_scores",
]


# ------------------------------------------------------------------------------ strings


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1) of two sequences
    (strings compare characters; lists compare their items)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (items in order, gaps allowed)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _norm(text: str) -> str:
    return " ".join(str(text).split())


def cer(predictions: Sequence[str], truths: Sequence[str]) -> float:
    """Character error rate: total edit distance / total true characters (spaces count;
    runs of whitespace are one space)."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    chars = sum(len(_norm(t)) for t in truths)
    if chars == 0:
        return 0.0
    return sum(edit_distance(_norm(p), _norm(t)) for p, t in zip(predictions, truths,
                                                                 strict=True)) / chars


def recognition_scores(predictions: Sequence[str], truths: Sequence[str]) -> dict:
    """CER, word accuracy (in-order recovered words / true words), word precision (the same
    over predicted words) and exact-line accuracy of predicted vs true line texts."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    hit = sum(lcs_length(_norm(p).split(), _norm(t).split())
              for p, t in zip(predictions, truths, strict=True))
    n_true = sum(len(_norm(t).split()) for t in truths)
    n_pred = sum(len(_norm(p).split()) for p in predictions)
    exact = sum(_norm(p) == _norm(t) for p, t in zip(predictions, truths, strict=True))
    return {"cer": cer(predictions, truths),
            "word_accuracy": hit / n_true if n_true else 0.0,
            "word_precision": hit / n_pred if n_pred else 0.0,
            "line_accuracy": exact / len(truths) if truths else 0.0,
            "lines": len(truths), "words": n_true}


# ----------------------------------------------------------------------------- polygons


def polygon_area(poly) -> float:
    """Area of a simple polygon (shoelace formula), whatever its orientation."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _ccw(p: np.ndarray) -> np.ndarray:
    x, y = p[:, 0], p[:, 1]
    signed = np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))
    return p if signed >= 0 else p[::-1]


def polygon_intersection(a, b) -> float:
    """Area of the intersection of two convex polygons (Sutherland-Hodgman clipping of `a`
    by each edge of `b`). Text quadrilaterals from the detector (minimum-area rectangles)
    and the benchmark (rotated rectangles) are convex."""
    subject = [tuple(v) for v in _ccw(np.asarray(a, dtype=np.float64).reshape(-1, 2))]
    clip = _ccw(np.asarray(b, dtype=np.float64).reshape(-1, 2))
    for i in range(len(clip)):
        if not subject:
            return 0.0
        (x1, y1), (x2, y2) = clip[i], clip[(i + 1) % len(clip)]

        def inside(p, x1=x1, y1=y1, x2=x2, y2=y2):  # left of the edge (or on it)
            return (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= -1e-9

        def cross(p, q, x1=x1, y1=y1, x2=x2, y2=y2):  # where pq meets the edge's line
            dx, dy = q[0] - p[0], q[1] - p[1]
            den = (x2 - x1) * dy - (y2 - y1) * dx
            t = ((x2 - x1) * (y1 - p[1]) - (y2 - y1) * (x1 - p[0])) / den if den else 0.0
            return (p[0] + t * dx, p[1] + t * dy)

        src, subject = subject, []
        for j, cur in enumerate(src):
            prev = src[j - 1]
            if inside(cur):
                if not inside(prev):
                    subject.append(cross(prev, cur))
                subject.append(cur)
            elif inside(prev):
                subject.append(cross(prev, cur))
    return polygon_area(subject) if len(subject) >= 3 else 0.0


def polygon_iou(a, b) -> float:
    """Intersection over union of two convex polygons (0 when either has no area)."""
    inter = polygon_intersection(a, b)
    union = polygon_area(a) + polygon_area(b) - inter
    return inter / union if union > 0 else 0.0


def _bbox_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return not (a[:, 0].max() < b[:, 0].min() or b[:, 0].max() < a[:, 0].min()
                or a[:, 1].max() < b[:, 1].min() or b[:, 1].max() < a[:, 1].min())


def match(predicted: Sequence, truths: Sequence, iou: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matching of predicted to true polygons, greedy by descending IoU.

    Args:
        predicted (Sequence): polygons (each 4x2 or any Nx2 convex).
        truths (Sequence): true polygons.
        iou (float, default 0.5): least IoU of a match.

    Returns:
        list[tuple[int, int, float]]: (predicted index, true index, IoU), best first.
    """
    pred = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in predicted]
    true = [np.asarray(t, dtype=np.float64).reshape(-1, 2) for t in truths]
    pairs = [(polygon_iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(true)
             if _bbox_overlap(p, t)]
    used_p, used_t, out = set(), set(), []
    for score, i, j in sorted(pairs, reverse=True):
        if score < iou:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j, float(score)))
    return out


def _prf(tp: int, n_pred: int, n_true: int) -> dict:
    p = tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
    r = tp / n_true if n_true else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": n_pred - tp,
            "fn": n_true - tp}


def detection_scores(predicted: Sequence[Sequence], truths: Sequence[Sequence],
                     iou: float = 0.5) -> dict:
    """Precision, recall and F1 of detected text boxes over a set of images.

    Args:
        predicted (Sequence[Sequence]): per image, its predicted polygons.
        truths (Sequence[Sequence]): per image, its true polygons.
        iou (float, default 0.5): least IoU of a match.

    Returns:
        dict: precision, recall, f1, tp, fp, fn.
    """
    if len(predicted) != len(truths):
        raise ValueError(f"{len(predicted)} predicted images for {len(truths)} true ones")
    tp = sum(len(match(p, t, iou)) for p, t in zip(predicted, truths, strict=True))
    return _prf(tp, sum(len(p) for p in predicted), sum(len(t) for t in truths))


def _assign(pred: list[np.ndarray], true: list[np.ndarray]) -> list[int]:
    """For each predicted box, the true line holding most of it (-1: none holds half)."""
    out = []
    for p in pred:
        area = polygon_area(p)
        best, best_j = 0.0, -1
        for j, t in enumerate(true):
            if _bbox_overlap(p, t):
                share = polygon_intersection(p, t) / area if area else 0.0
                if share > best:
                    best, best_j = share, j
        out.append(best_j if best >= 0.5 else -1)
    return out


def _reading_order(boxes: list[np.ndarray], line: np.ndarray) -> list[int]:
    direction = line[1] - line[0]  # top edge of the true line, left to right
    return sorted(range(len(boxes)), key=lambda k: float(boxes[k].mean(0) @ direction))


def joined_lines(boxes: Sequence, texts: Sequence[str], truth_quads: Sequence) -> list[str]:
    """Per true line of one image, the predicted texts assigned to it, in reading order."""
    pb = [np.asarray(b, dtype=np.float64).reshape(-1, 2) for b in boxes]
    tb = [np.asarray(b, dtype=np.float64).reshape(-1, 2) for b in truth_quads]
    owner = _assign(pb, tb)
    out = []
    for j, t in enumerate(tb):
        mine = [k for k, o in enumerate(owner) if o == j]
        order = _reading_order([pb[k] for k in mine], t)
        out.append(" ".join(texts[mine[k]] for k in order))
    return out


def end_to_end(predicted: Sequence[tuple[Sequence, Sequence[str]]],
               truths: Sequence[tuple[Sequence, Sequence[str]]]) -> dict:
    """End-to-end scores of (boxes, texts) per image against the truth's (quads, texts).

    Returns:
        dict: word_accuracy (true words recovered in order / true words), word_precision
        (recovered / predicted words, unassigned boxes included), cer and line_accuracy of
        the joined texts per true line, lines, words.
    """
    if len(predicted) != len(truths):
        raise ValueError(f"{len(predicted)} predicted images for {len(truths)} true ones")
    joined, true_texts, n_pred = [], [], 0
    for (pboxes, ptexts), (tboxes, ttexts) in zip(predicted, truths, strict=True):
        n_pred += sum(len(_norm(t).split()) for t in ptexts)
        joined += joined_lines(pboxes, ptexts, tboxes)
        true_texts += list(ttexts)
    scores = recognition_scores(joined, true_texts)
    hit = scores["word_accuracy"] * scores["words"]
    scores["word_precision"] = hit / n_pred if n_pred else 0.0
    return scores
