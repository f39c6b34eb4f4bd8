"""Honest measurement: latency percentiles, interleaved A/B runs, memory, size, fidelity,
the hardware fingerprint and this machine's roofline.

Rules the functions enforce: warm up before timing; compare variants in one process,
interleaved, so drift (turbo, thermal, a noisy neighbour) hits all of them alike; report
medians and p90, never a single run; always say how many threads ran.

Example:
    >>> from deploylab import measure
    >>> t = measure.compare({"a": fn_a, "b": fn_b}, repeats=30)
    >>> measure.summary(t, baseline="a")          # pandas table with p50, p90, speedup
    >>> measure.fingerprint()["flags"]
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MatmulPeak",
    "Memory",
    "Roofline",
    "Timing",
    "compare",
    "cosine",
    "count_flops",
    "cpu_flags",
    "fidelity",
    "fingerprint",
    "matmul_peak",
    "measure_roofline",
    "memory_bandwidth",
    "param_bytes",
    "peak_memory",
    "plot_roofline",
    "size_on_disk",
    "summary",
    "threads",
    "time_fn",
    "topk_agreement",
]

# ------------------------------------------------------------------------------ latency


@dataclass
class Timing:
    """Latency samples of one variant.

    Args:
        name (str): the variant.
        samples_ms (list[float]): one wall-clock time per call, milliseconds.
        batch_size (int, default 1): items processed per call, for throughput.
    """

    name: str
    samples_ms: list[float]
    batch_size: int = 1

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples_ms))

    @property
    def spread(self) -> float:
        """(p90 - p50) / p50: how noisy the measurement was, as a fraction."""
        return (self.p90 - self.p50) / self.p50 if self.p50 > 0 else float("nan")

    @property
    def throughput_per_s(self) -> float:
        """Items per second at the median latency of a call."""
        return self.batch_size * 1000.0 / self.p50 if self.p50 > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"name": self.name, "latency_ms_p50": self.p50, "latency_ms_p90": self.p90,
                "latency_ms_p99": self.p99, "throughput_per_s": self.throughput_per_s,
                "batch_size": self.batch_size, "repeats": len(self.samples_ms)}


# ONNX Runtime's idle threads spin ~50 ms after a call: rest this long after a block.
SPIN_SETTLE_S = 0.1


def _check_counts(warmup: int, repeats: int) -> None:
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")


def _once_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def time_fn(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 20,
            batch_size: int = 1, name: str = "fn", max_time_s: float | None = None) -> Timing:
    """Time a zero-argument callable after `warmup` untimed calls.

    Args:
        fn (Callable[[], object]): the work, e.g. `lambda: model(**inputs)`.
        warmup (int, default 3): untimed calls first (caches, lazy init, allocator).
        repeats (int, default 20): timed calls.
        batch_size (int, default 1): items per call, for throughput.
        name (str, default "fn"): label of the result.
        max_time_s (float | None, default None): stop early once the timed calls took
            this long (at least 3 samples are always taken).

    Returns:
        Timing: the samples and their percentiles.
    """
    return compare({name: fn}, warmup=warmup, repeats=repeats, batch_size=batch_size,
                   max_time_s=max_time_s)[name]


def compare(fns: Mapping[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 20,
            batch_size: int | Mapping[str, int] = 1, seed: int = 0,
            max_time_s: float | None = None, block: int = 1,
            settle_s: float | None = None) -> dict[str, Timing]:
    """Time several variants interleaved: each round calls every variant once (or `block`
    times in a row), in a shuffled order, so slow drifts of the machine spread evenly over
    all of them.

    Blocks are for runtimes whose idle threads spin (ONNX Runtime's default): called one
    call each, a spinning variant's threads still busy-wait while the next variant runs and
    steal its cores. In blocks, with `settle_s` of rest after each, every variant runs on
    quiet cores, as it would when deployed alone.

    Args:
        fns (Mapping[str, Callable]): variant name -> zero-argument callable.
        warmup (int, default 3): untimed rounds first.
        repeats (int, default 20): timed rounds.
        batch_size (int | Mapping[str, int], default 1): items per call, per variant.
        seed (int, default 0): seed of the shuffling.
        max_time_s (float | None, default None): stop after the round in which the timed
            calls passed this total (never before 3 rounds), to bound slow variants.
        block (int, default 1): consecutive calls of a variant per round; each block
            starts with one untimed call, so a round yields `block` samples per variant.
        settle_s (float | None, default None): pause after each block, so spinning
            threads go idle; None: SPIN_SETTLE_S with blocks, none without.

    Returns:
        dict[str, Timing]: in the order of `fns`.
    """
    _check_counts(warmup, repeats)
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an int >= 1, got {block!r}")
    if settle_s is None:
        settle_s = SPIN_SETTLE_S if block > 1 else 0.0
    if not isinstance(settle_s, (int, float)) or settle_s < 0:
        raise ValueError(f"settle_s must be a number >= 0, got {settle_s!r}")
    if not fns:
        raise ValueError("compare() needs at least one variant")
    names = list(fns)
    sizes = batch_size if isinstance(batch_size, Mapping) else dict.fromkeys(names, batch_size)
    rng = random.Random(seed)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    spent_ms = 0.0
    for i in range(repeats):
        order = names[:]
        rng.shuffle(order)
        for n in order:
            if block > 1:
                fns[n]()  # the block's first call wakes this variant's threads: untimed
            for _ in range(block):
                samples[n].append(_once_ms(fns[n]))
                spent_ms += samples[n][-1]
            if settle_s:
                time.sleep(settle_s)
        if max_time_s is not None and i >= 2 and spent_ms >= max_time_s * 1e3:
            break
    return {n: Timing(n, samples[n], int(sizes.get(n, 1))) for n in names}


def summary(timings: Mapping[str, Timing], baseline: str | None = None):
    """A pandas table of timings: p50, p90, p99 (ms), throughput, and speedup vs baseline.

    Args:
        timings (Mapping[str, Timing]): from `compare`.
        baseline (str | None, default None): the variant whose p50 is 1.0x; the first if None.

    Returns:
        pandas.DataFrame: one row per variant.
    """
    import pandas as pd

    if not timings:
        raise ValueError("summary() needs at least one timing")
    baseline = baseline or next(iter(timings))
    if baseline not in timings:
        raise ValueError(f"baseline {baseline!r} is not one of {list(timings)}")
    base = timings[baseline].p50
    rows = [{**t.as_dict(), "speedup": base / t.p50 if t.p50 else float("nan"),
             "spread": t.spread} for t in timings.values()]
    return pd.DataFrame(rows).set_index("name")


def shape_sweep(call_for: Callable[[int, int], Callable[[], object]], batch_sizes, seq_lens, *,
                warmup: int = 2, repeats: int = 10, flops: bool = True,
                max_time_s: float | None = None):
    """Latency, throughput and achieved GFLOP/s over a grid of (batch, sequence) shapes,
    all shapes interleaved in one `compare` run.

    Args:
        call_for (Callable[[int, int], Callable]): (batch, seq) -> zero-argument callable.
        batch_sizes (Iterable[int]): batch sizes.
        seq_lens (Iterable[int]): sequence lengths (tokens, samples, pixels: any length).
        warmup, repeats, max_time_s: as in `compare`.
        flops (bool, default True): count each shape's operations with `count_flops`.

    Returns:
        pandas.DataFrame: columns batch, seq, p50_ms, p90_ms, items_per_s, tokens_per_s,
        gflops (operations per call / 1e9) and gflop_per_s (achieved rate), one row a shape.
    """
    import pandas as pd

    shapes = [(int(b), int(s)) for s in seq_lens for b in batch_sizes]
    calls = {f"{b}x{s}": call_for(b, s) for b, s in shapes}
    timings = compare(calls, warmup=warmup, repeats=repeats, max_time_s=max_time_s,
                      batch_size={f"{b}x{s}": b for b, s in shapes})
    rows = []
    for b, s in shapes:
        t = timings[f"{b}x{s}"]
        gflops = count_flops(calls[f"{b}x{s}"]) / 1e9 if flops else float("nan")
        rows.append({"batch": b, "seq": s, "p50_ms": t.p50, "p90_ms": t.p90,
                     "items_per_s": t.throughput_per_s, "tokens_per_s": t.throughput_per_s * s,
                     "gflops": gflops, "gflop_per_s": gflops / (t.p50 / 1e3)})
    return pd.DataFrame(rows)


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Run a block with torch limited to `n` intra-op threads, then restore the old count.

    Args:
        n (int): threads, >= 1.
    """
    import torch

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an int >= 1, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def busy_cores(n: int = 1) -> Iterator[int]:
    """Simulate a noisy neighbour: `n` processes keep one core each busy inside the block.

    Teaching aid for what a browser tab, a compile or another model does to a measurement.
    The processes are stopped (and reaped) when the block exits, also on error.

    Args:
        n (int, default 1): busy processes.
    """
    import subprocess
    import sys

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"busy cores must be an int >= 1, got {n!r}")
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.05)  # let them get scheduled before the measurement starts
        yield n
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# ------------------------------------------------------------------------------- memory


@dataclass
class Memory:
    """Resident memory around one call, in MiB.

    Args:
        before_mb (float): RSS before the call.
        peak_mb (float): highest RSS during the call.
        method (str): "vmhwm" (kernel high-water mark, exact) or "sampled" (a 1 ms poll).
    """

    before_mb: float
    peak_mb: float
    method: str

    @property
    def delta_mb(self) -> float:
        """Extra memory the call needed at its peak."""
        return max(0.0, self.peak_mb - self.before_mb)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_hwm() -> bool:
    # Writing 5 to clear_refs resets the kernel's peak-RSS counter (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("VmHWM not in /proc/self/status")


def peak_memory(fn: Callable[[], object]) -> Memory:
    """Peak resident memory of the process while `fn` runs.

    On Linux the kernel's high-water mark is reset and read back (exact); elsewhere a
    thread polls RSS every millisecond (a short spike can slip between polls).

    Returns:
        Memory: before, peak and the method used.
    """
    before = _rss_mb()
    if _reset_hwm():
        fn()
        return Memory(before, max(_hwm_mb(), before), "vmhwm")
    peak = before
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.001)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return Memory(before, max(peak, _rss_mb()), "sampled")


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file below a folder.

    Raises:
        FileNotFoundError: the path does not exist.
    """
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    raise FileNotFoundError(f"{p} does not exist; nothing to measure")


def param_bytes(module) -> int:
    """Bytes of a torch module's parameters and buffers as held in memory."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


# ----------------------------------------------------------------------------- fidelity


def _as_2d(x) -> np.ndarray:
    arr = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=float)
    return arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(1, -1)


def cosine(reference, candidate) -> np.ndarray:
    """Row-wise cosine similarity of two arrays (or tensors) of the same shape.

    Returns:
        np.ndarray: one value per row (first axis), in [-1, 1].
    """
    a, b = _as_2d(reference).astype(np.float64), _as_2d(candidate).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: reference {a.shape} vs candidate {b.shape}")
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num == 0, 1.0, 0.0))
    return np.clip(out, -1.0, 1.0)


def fidelity(reference, candidate) -> dict:
    """How close a candidate's outputs are to the reference's.

    Returns:
        dict: cosine_min, cosine_mean (per row) and max_abs_error.
    """
    c = cosine(reference, candidate)
    err = np.abs(_as_2d(reference) - _as_2d(candidate)).max()
    return {"cosine_min": float(c.min()), "cosine_mean": float(c.mean()),
            "max_abs_error": float(err)}


def topk_agreement(reference, candidate, k: int = 1) -> float:
    """Mean overlap of the top-k indices (last axis) of two score arrays.

    With k=1 this is the fraction of rows where both pick the same class or token.

    Returns:
        float: in [0, 1].
    """
    a, b = _as_2d(reference), _as_2d(candidate)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: reference {a.shape} vs candidate {b.shape}")
    if not 1 <= k <= a.shape[1]:
        raise ValueError(f"k must be in [1, {a.shape[1]}], got {k}")
    ta = np.argsort(-a, axis=1)[:, :k]
    tb = np.argsort(-b, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)]))


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of a torch computation (matmuls, convs,
    attention), counted by torch's FlopCounterMode; a multiply-add counts as 2."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# -------------------------------------------------------------------------- fingerprint

# The instruction-set features that decide int8 and bf16 speed on x86 and Arm CPUs.
FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                     "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                     "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "i8mm", "bf16",
                     "sve")


def _cpuinfo() -> tuple[str, set[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^(model name|Hardware|cpu model)\s*:\s*(.+)$", text, re.M):
            name = m.group(2).strip()
        if m := re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M):
            flags = set(m.group(2).split())
    return name, flags


def cpu_flags() -> list[str]:
    """The instruction-set flags of this CPU that matter for int8/bf16 speed."""
    return [f for f in FLAGS_OF_INTEREST if f in _cpuinfo()[1]]


def describe_cpu(flags: list[str] | None = None) -> list[str]:
    """What this CPU's instruction set means for int8 and bf16 speed, in plain sentences.

    Args:
        flags (list[str] | None, default None): from `fingerprint()["flags"]`; this CPU's if None.

    Returns:
        list[str]: one line for int8, one for bf16.
    """
    f = set(cpu_flags() if flags is None else flags)
    if {"amx_int8", "amx_tile"} <= f:
        int8 = "int8: AMX tiles present: int8 matrix products can run ~8x fp32 or more."
    elif f & {"avx512_vnni", "avx_vnni", "asimddp", "i8mm"}:
        int8 = ("int8: VNNI/dot-product instructions present: int8 matmuls accumulate in 32 bits "
                "in one instruction; expect 2-4x fp32 on compute-bound layers.")
    elif "avx2" in f:
        int8 = ("int8: no VNNI: int8 matmuls use AVX2 (VPMADDUBSW, 16-bit pair sums that can "
                "saturate, hence 7-bit weights); expect at most ~2x fp32, less on small layers.")
    else:
        int8 = "int8: no AVX2 or dot-product instructions: int8 gains will be small or negative."
    if f & {"amx_bf16", "avx512_bf16", "bf16"}:
        bf16 = "bf16: native bf16 instructions: bf16 matmuls can beat fp32 (~2x, more with AMX)."
    else:
        bf16 = ("bf16: no native bf16: bf16 is converted in software, so bf16 compute is slower "
                "than fp32 here; it still halves the memory of stored weights.")
    return [int8, bf16]


def fingerprint() -> dict:
    """What decides the numbers on this machine, for printing beside every result.

    Returns:
        dict: cpu, cores (physical), logical_cpus, threads (torch intra-op), interop_threads,
        flags, torch, torch_cpu_capability, onnxruntime, ort_default_threads, numpy,
        python, os, memory_gb, accelerator, env (thread variables that are set).
    """
    import psutil
    import torch

    cpu, _ = _cpuinfo()
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:  # pragma: no cover - onnxruntime is a pinned dependency
        ort_version = None
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OPENBLAS_NUM_THREADS", "DEPLOYLAB_SMOKE")
           if k in os.environ}
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(logical=False) or os.cpu_count(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "flags": cpu_flags(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onnxruntime": ort_version,
        # ONNX Runtime's default intra-op pool is one thread per physical core.
        "ort_default_threads": psutil.cpu_count(logical=False) or os.cpu_count(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "accelerator": accelerator,
        "env": env,
    }


# ----------------------------------------------------------------------------- roofline

DTYPES = ("fp32", "bf16", "int8")
UNITS = {"fp32": "GFLOP/s", "bf16": "GFLOP/s", "int8": "GOP/s"}


@dataclass
class MatmulPeak:
    """One dtype's measured n x n x n matrix-multiply rate.

    Args:
        dtype (str): "fp32", "bf16" or "int8".
        n (int): matrix size; one call is 2*n^3 operations.
        engine (str): the fastest engine, whose figure is the peak.
        rates (dict[str, float]): G operations/s of every engine tried.
        timings (dict[str, Timing]): their latencies.
        cosine_min (float): worst row's cosine of the fastest engine's product to the
            exact float64 product of the same inputs (1.0 means exact).
    """

    dtype: str
    n: int
    engine: str
    rates: dict[str, float]
    timings: dict[str, Timing]
    cosine_min: float

    @property
    def rate(self) -> float:
        return self.rates[self.engine]


@dataclass
class Roofline:
    """Measured compute peaks (GFLOP/s, or GOP/s for int8) and memory bandwidth (GB/s).

    `attainable(ai, dtype)` is the roofline: min(peak, bandwidth * arithmetic intensity),
    where intensity is operations per byte moved to or from memory.
    """

    peaks: dict[str, MatmulPeak]
    bandwidth_gbs: float
    threads: int

    def peak(self, dtype: str = "fp32") -> float:
        return self.peaks[dtype].rate

    def ridge(self, dtype: str = "fp32") -> float:
        """The intensity (ops/byte) above which `dtype` work is compute-bound here."""
        return self.peak(dtype) / self.bandwidth_gbs

    def attainable(self, intensity: float, dtype: str = "fp32") -> float:
        return min(self.peak(dtype), self.bandwidth_gbs * intensity)

    def fraction_of_peak(self, achieved: float, dtype: str = "fp32") -> float:
        return achieved / self.peak(dtype)


def _ort_matmul(op: str, a: np.ndarray, b: np.ndarray) -> Callable[[], np.ndarray]:
    """A one-node ONNX Runtime session computing op(a, b) with torch's thread count."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    types = {np.float32: TensorProto.FLOAT, np.uint8: TensorProto.UINT8,
             np.int8: TensorProto.INT8}
    out = TensorProto.FLOAT if op == "MatMul" else TensorProto.INT32
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])], "matmul",
        [helper.make_tensor_value_info("A", types[a.dtype.type], list(a.shape)),
         helper.make_tensor_value_info("B", types[b.dtype.type], list(b.shape))],
        [helper.make_tensor_value_info("Y", out, [a.shape[0], b.shape[1]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    # Idle threads otherwise spin for a while after each run and slow whatever runs next
    # (the other dtype's session, when kernels are interleaved).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"A": a, "B": b})[0]


def _matmul_kernels(dtype: str, n: int) -> tuple[dict[str, Callable], dict[str, np.ndarray]]:
    """Every engine's n x n product for a dtype, and the exact float64 product.

    int8 follows what dynamic quantization runs on x86: uint8 activations times int8
    weights kept to 7 bits ("reduce_range"), which CPUs without VNNI need so that their
    16-bit pairwise sums (VPMADDUBSW) cannot saturate; the product is then exact.
    """
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    rng = np.random.default_rng(0)
    if dtype == "int8":
        a = rng.integers(0, 256, (n, n)).astype(np.uint8)
        b = rng.integers(-64, 64, (n, n)).astype(np.int8)
        ta = torch.from_numpy(a.astype(np.int16) - 128).to(torch.int8)  # torch takes s8 x s8
        tb = torch.from_numpy(b)
        exact_torch = (ta.double() @ tb.double()).numpy()
        exact = a.astype(np.float64) @ b.astype(np.float64)
        kernels = {"onnxruntime": _ort_matmul("MatMulInteger", a, b),
                   "torch": lambda: torch._int_mm(ta, tb)}
        # Each engine is checked against the exact product of its own inputs.
        return kernels, {"onnxruntime": exact, "torch": exact_torch}
    a32 = rng.standard_normal((n, n), dtype=np.float32)
    b32 = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
    if dtype == "bf16":
        ta, tb = ta.bfloat16(), tb.bfloat16()  # only the product's error counts, not rounding
        exact = (ta.double() @ tb.double()).numpy()
        return {"torch": lambda: ta @ tb}, {"torch": exact}
    exact = a32.astype(np.float64) @ b32.astype(np.float64)
    return ({"torch": lambda: ta @ tb, "onnxruntime": _ort_matmul("MatMul", a32, b32)},
            {"torch": exact, "onnxruntime": exact})


# A kernel whose first call takes longer than this is timed on its own, within a budget,
# instead of slowing every interleaved round (bf16 without hardware support takes seconds).
_SLOW_MS = 250.0


def _time_kernels(groups: dict[str, dict[str, Callable]], repeats: int,
                  max_time_s: float) -> dict[str, Timing]:
    """Time kernels grouped by engine. Within a group the fast kernels are interleaved in one
    `compare` run, so their ratios share the machine's drift; slow ones are timed alone under
    `max_time_s` (at least 3 samples). Engines are not interleaved with each other: each
    runtime's thread pool spins for a while after its work and would slow the other's."""
    timings: dict[str, Timing] = {}
    for kernels in groups.values():
        first = {k: _once_ms(fn) for k, fn in kernels.items()}  # doubles as the warm-up
        fast = {k: fn for k, fn in kernels.items() if first[k] < _SLOW_MS}
        if fast:
            timings.update(compare(fast, warmup=1, repeats=repeats))
        for k, fn in kernels.items():
            if k not in fast:
                timings[k] = time_fn(fn, warmup=0, repeats=repeats, max_time_s=max_time_s,
                                     name=k)
    return timings


def _peaks(dtypes, n: int, repeats: int, max_time_s: float) -> dict[str, MatmulPeak]:
    if not isinstance(n, int) or n < 16:
        raise ValueError(f"matrix size must be an int >= 16, got {n!r}")
    built = {d: _matmul_kernels(d, n) for d in dtypes}
    groups: dict[str, dict[str, Callable]] = {}
    for d, (ks, _) in built.items():
        for e, fn in ks.items():
            groups.setdefault(e, {})[f"{d}-{e}"] = fn
    timings = _time_kernels(groups, repeats, max_time_s)
    peaks = {}
    for d, (ks, exact) in built.items():
        t = {e: timings[f"{d}-{e}"] for e in ks}
        rates = {e: 2 * n**3 / (te.p50 / 1e3) / 1e9 for e, te in t.items()}
        best = max(rates, key=rates.get)
        out = ks[best]()
        out = out.double().numpy() if hasattr(out, "double") else out.astype(np.float64)
        peaks[d] = MatmulPeak(d, n, best, rates, t, float(cosine(exact[best], out).min()))
    return peaks


def matmul_peak(dtype: str = "fp32", n: int = 1024, *, repeats: int = 10,
                max_time_s: float = 3.0) -> MatmulPeak:
    """Measured n x n matrix-multiply rate for one dtype, over every engine that runs it
    here (torch; ONNX Runtime for fp32 and int8), interleaved; the fastest is the peak.

    Args:
        dtype (str, default "fp32"): "fp32", "bf16" or "int8".
        n (int, default 1024): matrix size; 2*n^3 operations per call.
        repeats (int, default 10): timed calls per engine.
        max_time_s (float, default 3.0): time budget of a slow engine (first call over
            0.25 s, e.g. bf16 without hardware support), which still gets 3 samples.

    Returns:
        MatmulPeak: rates of all engines, the fastest, and its exactness.
    """
    return _peaks([dtype], n, repeats, max_time_s)[dtype]


def memory_bandwidth(mb: int = 256, *, repeats: int = 5) -> float:
    """Measured memory bandwidth in GB/s: a copy of `mb` MiB reads and writes each byte once."""
    import torch

    if not isinstance(mb, int) or mb < 1:
        raise ValueError(f"buffer size must be an int >= 1 MiB, got {mb!r}")
    src = torch.ones(mb * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), warmup=1, repeats=repeats, name="copy")
    return 2 * src.numel() * 4 / (t.p50 / 1e3) / 1e9


def measure_roofline(n: int = 1024, *, repeats: int = 10, dtypes=DTYPES,
                     bandwidth_mb: int = 256, max_time_s: float = 3.0) -> Roofline:
    """Measure this machine's matmul peaks and memory bandwidth with torch's current threads.

    Args:
        n (int, default 1024): matrix size for the peaks (bigger is closer to the real peak).
        repeats (int, default 10): timed calls per dtype and engine; fast kernels of all
            dtypes are interleaved, so their ratios are measured side by side.
        dtypes (tuple, default ("fp32", "bf16", "int8")): which peaks.
        bandwidth_mb (int, default 256): buffer of the bandwidth test, well above caches.
        max_time_s (float, default 3.0): time budget of each slow kernel (see `matmul_peak`).
    """
    import torch

    # each engine's fast kernels of all dtypes interleaved: the int8/fp32 ratio is what matters
    peaks = _peaks(list(dtypes), n, repeats, max_time_s)
    return Roofline(peaks, memory_bandwidth(bandwidth_mb), torch.get_num_threads())


def plot_roofline(roof: Roofline, points: list[tuple[str, float, float, str]] = (), ax=None):
    """Draw the roofline for each measured dtype and optional workload points.

    Args:
        roof (Roofline): from `measure_roofline`.
        points (list of (label, intensity ops/byte, achieved GFLOP/s, dtype)): workloads.
        ax (matplotlib Axes | None): where to draw; a new figure if None.

    Returns:
        matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    ai = np.logspace(-2, 3, 200)
    colors = {"fp32": "tab:blue", "bf16": "tab:orange", "int8": "tab:green"}
    for d, p in roof.peaks.items():
        ax.plot(ai, np.minimum(p.rate, roof.bandwidth_gbs * ai), color=colors.get(d),
                label=f"{d} peak {p.rate:,.1f} {UNITS[d]} ({p.engine})")
    for label, intensity, achieved, d in points:
        ax.scatter([intensity], [achieved], color=colors.get(d, "k"), zorder=3)
        ax.annotate(label, (intensity, achieved), textcoords="offset points", xytext=(5, -10),
                    fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (operations / byte)",
           ylabel="G operations / s",
           title=f"Roofline: {roof.threads} threads, {roof.bandwidth_gbs:.1f} GB/s memory")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return ax
