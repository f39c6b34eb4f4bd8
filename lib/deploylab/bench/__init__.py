"""Benchmark suites and the JSON every `deploylab bench SUITE` writes (schema: DESIGN.md).

A suite is a module in this package with a function `run(smoke: bool) -> BenchResult`;
dropping a new module here is all it takes to add one (`deploylab bench --list` finds it).
The suite's name is the module's with `_` written `-` (module `cnn_quantize`: suite
`cnn-quantize`).
Variants are measured side by side in one process; ratios to the baseline come from the
same run, so they hold on another machine even when absolute times do not.

Example:
    >>> from deploylab import bench
    >>> result = bench.run("roofline", smoke=True)
    >>> result.write_json("out/roofline.json")
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._files import to_jsonable, write_atomic
from ..errors import DeploylabError

__all__ = ["ACCURACY_LIKE", "BenchError", "BenchResult", "Variant", "run", "suites",
           "verdicts"]

# Quality metrics that are fractions in [0, 1] (DESIGN.md); checked before writing.
ACCURACY_LIKE = ("accuracy", "recall", "precision", "f1", "exact_match", "cosine", "agreement",
                 "mrr")


class BenchError(DeploylabError):
    """A benchmark was asked for something that does not exist or cannot be written."""


@dataclass
class Variant:
    """One row of a benchmark: a model or kernel variant and its figures.

    Fields that do not apply stay None; a variant that cannot run here keeps its row with
    `skipped` saying why. `extra` holds suite-specific fields, written at the top level.
    """

    name: str
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    throughput_per_s: float | None = None
    size_mb: float | None = None
    peak_rss_mb: float | None = None
    quality: dict | None = None
    skipped: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quality is not None:
            metric, value = self.quality.get("metric"), self.quality.get("value")
            if not isinstance(metric, str):
                raise BenchError(f"variant {self.name!r}: quality needs a 'metric' name")
            if value is not None and any(k in metric.lower() for k in ACCURACY_LIKE):
                if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                    raise BenchError(f"variant {self.name!r}: {metric} must be a fraction in "
                                     f"[0, 1], got {value!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        if self.skipped is None:
            d.pop("skipped")
        return {**d, **extra}


@dataclass
class BenchResult:
    """A suite's whole result, as written to JSON."""

    suite: str
    smoke: bool
    hardware: dict
    baseline: str
    variants: list[Variant]
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise BenchError(f"suite {self.suite!r}: variant names repeat: {names}")
        if self.baseline not in names:
            raise BenchError(f"suite {self.suite!r}: baseline {self.baseline!r} is not a variant")

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def to_dict(self) -> dict:
        return {"suite": self.suite, "smoke": self.smoke, "hardware": self.hardware,
                "baseline": self.baseline, **self.extra,
                "variants": [v.to_dict() for v in self.variants]}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write atomically (a temporary file renamed into place): never a half-written file."""
        out = Path(path)
        if out.is_dir():
            raise BenchError(f"{out} is a folder; give a file path such as {out / 'bench.json'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(out, json.dumps(to_jsonable(self.to_dict()), indent=2) + "\n")


def _is_verdict(key: str) -> bool:
    return key == "met" or key.endswith("_met") or key.startswith("met_")


def verdicts(targets: list | dict | None) -> list[tuple[str, bool | None]]:
    """Each of a suite's targets as (what it asks, met), None where it does not apply here.

    Suites write targets in one of three shapes: a list of rows, each one check (variant,
    metric, op, threshold, value, met: `_inference.target`) or several (variant, checks:
    name -> value, bound, kind "min"/"max", met: `retrieval_eval.target`); or a dict whose
    `met`, `*_met` and `met_*` keys judge the figures beside them, with one nested dict
    per group (serve's deployments). Flat keys that only repeat one group (serve's, kept
    for older readers) are not judged twice.
    """
    if not targets:
        return []
    if isinstance(targets, list):
        out = []
        for t in targets:
            checks = t.get("checks") or {t["metric"]: {
                "value": t["value"], "bound": t["threshold"], "met": t["met"],
                "kind": "min" if t["op"] == ">=" else "max"}}
            for name, c in checks.items():
                got = "" if c["value"] is None else f" (got {c['value']:.3g})"
                op = ">=" if c["kind"] == "min" else "<="
                out.append((f"{t['variant']} {name} {op} {c['bound']:g}{got}",
                            None if c["value"] is None else c["met"]))
        return out
    groups = {k: v for k, v in targets.items() if isinstance(v, dict)}
    flat = {k: v for k, v in targets.items() if not isinstance(v, dict)}
    mirrored = bool(flat) and any(all(k in g and g[k] == v for k, v in flat.items())
                                  for g in groups.values())
    out = [] if mirrored else [(k, v) for k, v in flat.items() if _is_verdict(k)]
    for name, group in groups.items():
        out += [(f"{name}: {what}", met) for what, met in verdicts(group)]
    return out


def _modules() -> dict[str, str]:
    """Suite name -> module name."""
    return {i.name.replace("_", "-"): i.name for i in pkgutil.iter_modules(__path__)
            if not i.name.startswith("_")}


def suites() -> dict[str, str]:
    """Available suites: name -> first line of its module docstring (imports each module)."""
    out = {}
    for name, module in sorted(_modules().items()):
        mod = importlib.import_module(f"{__name__}.{module}")
        out[name] = (mod.__doc__ or "").strip().splitlines()[0]
    return out


def run(name: str, *, smoke: bool = False) -> BenchResult:
    """Run one suite.

    Args:
        name (str): a suite name (see `suites()`).
        smoke (bool, default False): seconds instead of minutes, for CI and checks.

    Returns:
        BenchResult: write it with `.write_json(path)`.

    Raises:
        BenchError: for an unknown suite, listing the known ones.
    """
    modules = _modules()
    if not isinstance(name, str) or name not in modules:
        raise BenchError(f"unknown benchmark suite {name!r}; available: "
                         f"{', '.join(sorted(modules))}")
    module = importlib.import_module(f"{__name__}.{modules[name]}")
    result = module.run(smoke=smoke)
    if not isinstance(result, BenchResult):
        raise BenchError(f"suite {name!r} returned {type(result).__name__}, not a BenchResult")
    return result
