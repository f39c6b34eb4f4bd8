"""The vision OCR case study: PP-OCRv4 text detection and recognition, measured and made fast.

- `data`: the generated benchmark (text rendered with matplotlib's fonts onto plain and
  photographic backgrounds, distorted at graded strengths, exact ground truth) and
  `load_image`, which refuses bad images with clear errors;
- `metrics`: polygon IoU matching, detection P/R/F1, CER, word accuracy, end to end;
- `engine`: the kit's own ONNX Runtime pipeline (`OcrEngine`, `OcrConfig`), the graph pass,
  static int8 quantization with calibration;
- `evaluate`: scoring an engine on a benchmark, per image and per condition;
- `serving`: `OcrPipeline`, image bytes in, boxes and text out, for `deploylab.serve`;
- `viz`: image grids of failures and an ipywidgets viewer.

Example:
    >>> from deploylab.cases import ocr
    >>> bench = ocr.make_benchmark(16, seed=0, strength="medium")
    >>> eng = ocr.OcrEngine(ocr.OcrConfig.fast())
    >>> ocr.evaluate(eng, bench).summary["word_accuracy"]
"""

from .data import (
                   FONTS,
                   STRENGTHS,
                   EmptyImageError,
                   ImageError,
                   ImageTooLargeError,
                   Line,
                   NotAnImageError,
                   OcrError,
                   Sample,
                   UnsupportedImageModeError,
                   font_path,
                   load_image,
                   make_benchmark,
                   make_sample,
                   vocabulary,
)
from .engine import (
                   VARIANTS,
                   OcrConfig,
                   OcrEngine,
                   OcrResult,
                   calibration_feeds,
                   crop_quad,
                   ctc_decode,
                   fp16_graph,
                   gpu_status,
                   model_paths,
                   model_size_mb,
                   optimize_graph,
                   pad_quad,
                   prefetch,
                   quantize_models,
                   variant_configs,
)
from .evaluate import Evaluation, compare, evaluate, recognition_on_truth, time_pipelines
from .metrics import (
                   cer,
                   detection_scores,
                   edit_distance,
                   end_to_end,
                   lcs_length,
                   match,
                   polygon_area,
                   polygon_iou,
                   recognition_scores,
)

__all__ = [
    "FONTS", "STRENGTHS", "VARIANTS", "EmptyImageError", "Evaluation", "ImageError",
    "ImageTooLargeError", "Line", "NotAnImageError", "OcrConfig", "OcrEngine", "OcrError",
    "OcrResult", "Sample", "UnsupportedImageModeError", "calibration_feeds", "cer", "compare",
    "crop_quad", "ctc_decode", "detection_scores", "edit_distance", "end_to_end", "evaluate",
    "font_path", "fp16_graph", "gpu_status", "lcs_length", "load_image", "make_benchmark",
    "make_sample", "match", "model_paths", "model_size_mb", "optimize_graph", "pad_quad",
    "polygon_area", "polygon_iou", "prefetch", "quantize_models", "recognition_on_truth",
    "recognition_scores", "time_pipelines", "variant_configs", "vocabulary",
]
