"""Parameter sweeps: every combination one papermill run, in parallel, aggregated into one
table with the Pareto-optimal configurations marked.

The spec (YAML or a dict):

    parameters: {smoke: true}            # the same for every run
    grid:                                # every combination of these
      max_length: [32, 64, 128]
      batch_size: [1, 16]
    table: results                       # which published table to aggregate (default: first)
    objectives:                          # for the Pareto front: column -> min | max
      latency_ms_p50: min
      quality: max
    size: size_mb                        # optional: marker size in the plot
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import itertools
import json
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .._files import to_jsonable, write_atomic
from .publish import RESULTS_FILE
from .run import ReportError, _notebook_path, check_parameters, execute

__all__ = ["SweepSpec", "SweepResult", "pareto_front", "run_sweep"]


@dataclass
class SweepSpec:
    """A validated sweep description (see the module docstring for the YAML form)."""

    grid: dict[str, list]
    parameters: dict = field(default_factory=dict)
    table: str | None = None
    objectives: dict[str, str] = field(default_factory=dict)
    size: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.grid, dict) or not self.grid:
            raise ReportError("a sweep needs a non-empty `grid`: parameter -> list of values")
        for name, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ReportError(f"grid entry {name!r} must be a non-empty list of values")
        both = set(self.grid) & set(self.parameters)
        if both:
            raise ReportError(f"{sorted(both)} are both fixed `parameters` and in the `grid`")
        for col, sense in self.objectives.items():
            if sense not in ("min", "max"):
                raise ReportError(f"objective {col!r} must be 'min' or 'max', got {sense!r}")

    @classmethod
    def load(cls, source) -> SweepSpec:
        """From a SweepSpec, a dict, or a YAML file path."""
        if isinstance(source, SweepSpec):
            return source
        if isinstance(source, (str, os.PathLike)):
            import yaml

            path = Path(source)
            if not path.is_file():
                raise ReportError(f"sweep file {path} does not exist")
            source = yaml.safe_load(path.read_text())
        if not isinstance(source, dict):
            raise ReportError("a sweep spec is a mapping with `grid` (and optional `parameters`,"
                              " `table`, `objectives`, `size`)")
        unknown = set(source) - {"grid", "parameters", "table", "objectives", "size"}
        if unknown:
            raise ReportError(f"unknown sweep keys {sorted(unknown)}; use grid, parameters, "
                              "table, objectives, size")
        return cls(**source)

    def combinations(self) -> list[dict]:
        names = list(self.grid)
        return [{**self.parameters, **dict(zip(names, values, strict=True))}
                for values in itertools.product(*(self.grid[n] for n in names))]


@dataclass
class SweepResult:
    """The aggregated sweep: a table (one row per run and published row), failures, files."""

    table: object  # pandas.DataFrame
    failures: list[dict]
    csv: Path
    html: Path
    plot: Path | None


def run_id(params: dict, grid_names) -> str:
    """A readable, stable folder name for one combination."""
    label = ",".join(f"{k}={json.dumps(params[k], separators=(',', ':'))}" for k in grid_names)
    label = re.sub(r"[^\w.,=-]+", "_", label)[:80]
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{label}-{digest}"


def pareto_front(table, objectives: dict[str, str]):
    """Which rows no other row beats on every objective (and strictly on one).

    Args:
        table (DataFrame): the rows.
        objectives (dict[str, str]): column -> "min" or "max".

    Returns:
        pandas.Series[bool]: True for Pareto-optimal rows; rows missing an objective are False.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in objectives if c not in table.columns]
    if missing:
        raise ReportError(f"objective column(s) {missing} not in the results; columns: "
                          f"{list(table.columns)}")
    # turn every objective into "smaller is better"
    values = np.column_stack([
        pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float) * (1 if s == "min" else -1)
        for c, s in objectives.items()]) if objectives else np.zeros((len(table), 0))
    valid = ~np.isnan(values).any(axis=1)
    optimal = valid.copy()
    for i in np.flatnonzero(valid):
        others = values[valid]
        dominated = ((others <= values[i]).all(axis=1) & (others < values[i]).any(axis=1)).any()
        optimal[i] = not dominated
    return pd.Series(optimal, index=table.index, name="pareto")


def _task(notebook_text: str, notebook_name: str, home: str, params: dict,
          no_input: bool, threads: int | None = None) -> dict:
    """One run, in a worker process or a Ray task: executes in a private folder and returns
    the files' contents, so it works on cluster nodes that do not share our disk.

    `threads` caps the kernel's thread pools: parallel runs that each use every core fight
    over them (OpenMP threads spin while waiting) and run many times slower.
    """
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
    with tempfile.TemporaryDirectory(prefix="deploylab-run-") as tmp:
        nb = Path(tmp) / notebook_name
        nb.write_text(notebook_text, encoding="utf-8")
        out = Path(tmp) / "out"
        cwd = Path(home) if Path(home).is_dir() else Path(tmp)
        for attempt in (1, 2):
            try:
                res = execute(nb, params, out, no_input=no_input, cwd=cwd)
                break
            except Exception as e:
                # The kernel did not start: a port that a parallel run's kernel took first, or
                # a machine too loaded to answer in time. Worth one more try; a failing cell
                # is not an exception here and is never retried.
                if attempt == 2:
                    return {"params": params, "error": f"{type(e).__name__}: {e}", "files": {}}
        files = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir() if p.is_file()}
        return {"params": params, "error": res.error, "files": files}


def _run_local(jobs: list[tuple], workers: int) -> list[dict]:
    import multiprocessing

    # spawn: fresh processes, no copies of the parent's threads or locks
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_task, *zip(*jobs, strict=True)))


def _run_ray(jobs: list[tuple], address: str) -> list[dict]:
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline first: no telemetry
        local = address == "local"  # a one-machine instance, bound to loopback only
        for attempt in (1, 2):
            try:
                ray.init(address=None if local else address, include_dashboard=False,
                         log_to_driver=False, configure_logging=False,
                         **({"_node_ip_address": "127.0.0.1"} if local else {}))
                break
            except Exception:
                # Ray gives a new node 30 s to register, fixed; a loaded laptop can miss that.
                ray.shutdown()
                if attempt == 2 or not local:
                    raise
    task = ray.remote(num_cpus=1, max_retries=0)(_task)
    return ray.get([task.remote(*job) for job in jobs])


def _plot(table, objectives: dict[str, str], size: str | None, grid: list[str],
          out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = list(objectives)
    if len(cols) < 2 or table.empty:
        return None
    x, y = cols[:2]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = 40.0
    if size and size in table:
        s = table[size].astype(float)
        sizes = 30 + 270 * (s - s.min()) / ((s.max() - s.min()) or 1)
    ax.scatter(table[x], table[y], s=sizes, c=["tab:red" if p else "tab:gray"
                                                for p in table.pareto], alpha=0.75)
    front = table[table.pareto].sort_values(x)
    ax.plot(front[x], front[y], color="tab:red", lw=1, label="Pareto front")
    for _, row in front.iterrows():  # label the front with its grid values, e.g. "64/16"
        ax.annotate("/".join(str(row[k]) for k in grid), (row[x], row[y]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel=f"{x} ({objectives[x]})", ylabel=f"{y} ({objectives[y]})",
           title=f"red: Pareto-optimal, labelled {'/'.join(grid)}"
           + (f"; size ~ {size}" if size else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _html(table, failures: list[dict], plot: Path | None, title: str) -> str:
    parts = [f"<html><head><meta charset='utf-8'><title>{html_lib.escape(title)}</title>"
             "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>",
             f"<h1>{html_lib.escape(title)}</h1>"]
    if plot is not None:
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(f"<img alt='Pareto plot' src='data:image/png;base64,{data}'>")
    parts.append(f"<h2>Results ({len(table)} rows; Pareto-optimal marked)</h2>")
    parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    parts.append(f"<h2>Failed runs ({len(failures)})</h2>")
    parts.append("<ul>" + "".join(
        f"<li><b>{html_lib.escape(f['run'])}</b>: {html_lib.escape(f['error'])}</li>"
        for f in failures) + "</ul>" if failures else "<p>none</p>")
    return "\n".join(parts) + "</body></html>\n"


def run_sweep(notebook: str | os.PathLike, spec, outdir: str | os.PathLike = "out", *,
              force: bool = False, workers: int | None = None, ray_address: str | None = None,
              no_input: bool = False) -> SweepResult:
    """Run a grid of parameters over one notebook and aggregate the results.

    Every combination is checked against the notebook's parameters before anything runs: one
    with a wrong value is listed as failed and the others run; if none is valid (a misspelt
    name, say) nothing runs and ReportError says why. Each run writes `outdir/runs/RUN/`
    (executed notebook, HTML, results.json); runs already done with the same parameters are
    reused unless `force`. Failed runs are listed, not fatal.

    Args:
        notebook (str | PathLike): the notebook.
        spec (SweepSpec | dict | str | PathLike): the sweep, or a YAML file.
        outdir (str | PathLike, default "out"): where to write.
        force (bool, default False): re-run combinations already done.
        workers (int | None, default None): parallel local processes; default min(runs, cores).
            Each run's kernel gets cores // workers threads.
        ray_address (str | None, default None): run as Ray tasks on this cluster ("auto" for
            the running one, "local" to start one here) instead of local processes.
        no_input (bool, default False): hide code cells in each run's HTML.

    Returns:
        SweepResult: the aggregated table (with `run`, the grid parameters, the published
        columns, `pareto`), the failures, and the CSV, HTML and plot paths.
    """
    import pandas as pd

    path = _notebook_path(notebook)
    spec = SweepSpec.load(spec)
    combos = spec.combinations()
    ids = [run_id(p, spec.grid) for p in combos]
    invalid = {}  # run id -> why; those combinations never run, the others do
    for rid, params in zip(ids, combos, strict=True):
        try:
            check_parameters(path, params)
        except ReportError as e:
            invalid[rid] = str(e)
    if len(invalid) == len(combos):  # a misspelt name or fixed value: nothing can run
        raise ReportError(next(iter(invalid.values())))
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ReportError(f"workers must be an int >= 1, got {workers!r}")
    out = Path(outdir)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)

    todo = []
    for rid, params in zip(ids, combos, strict=True):
        done = runs_dir / rid / "done.json"
        if rid in invalid:
            continue
        if force or not done.is_file() or json.loads(done.read_text()) != to_jsonable(params):
            todo.append((rid, params))
    if todo:
        n = workers or min(len(todo), os.cpu_count() or 1)
        # each local run gets its share of the cores; Ray sets OMP_NUM_THREADS from num_cpus=1
        threads = None if ray_address else max(1, (os.cpu_count() or 1) // n)
        jobs = [(path.read_text(encoding="utf-8"), path.name, str(path.parent.resolve()), p,
                 no_input, threads) for _, p in todo]
        outcomes = _run_ray(jobs, ray_address) if ray_address else _run_local(jobs, n)
        for (rid, params), outcome in zip(todo, outcomes, strict=True):
            run_dir = runs_dir / rid
            run_dir.mkdir(exist_ok=True)
            (run_dir / "done.json").unlink(missing_ok=True)
            for name, text in outcome["files"].items():
                write_atomic(run_dir / name, text)
            if outcome["error"]:
                write_atomic(run_dir / "error.txt", outcome["error"] + "\n")
            else:
                (run_dir / "error.txt").unlink(missing_ok=True)
                write_atomic(run_dir / "done.json", json.dumps(to_jsonable(params)))

    rows, failures = [], []
    for rid, params in zip(ids, combos, strict=True):
        run_dir = runs_dir / rid
        if rid in invalid:
            failures.append({"run": rid, "params": params, "error": invalid[rid]})
            continue
        if not (run_dir / "done.json").is_file():
            err = run_dir / "error.txt"
            failures.append({"run": rid, "params": params,
                             "error": err.read_text().strip() if err.is_file() else "did not run"})
            continue
        results = json.loads((run_dir / RESULTS_FILE).read_text()) if (
            run_dir / RESULTS_FILE).is_file() else {"tables": {}, "figures": {}}
        tables = results.get("tables", {})
        name = spec.table or next(iter(tables), None)
        published = tables.get(name) or [{}]
        if spec.table and spec.table not in tables:
            failures.append({"run": rid, "params": params, "error":
                             f"the notebook published no table named {spec.table!r}"})
            continue
        grid_values = {k: params[k] if not isinstance(params[k], (list, dict)) else
                       json.dumps(params[k]) for k in spec.grid}
        for row in published:
            rows.append({"run": rid, **grid_values, **results.get("figures", {}), **row})
    table = pd.DataFrame(rows)
    if spec.objectives and not table.empty:
        table["pareto"] = pareto_front(table, spec.objectives)
    csv = out / "sweep.csv"
    write_atomic(csv, table.to_csv(index=False))
    write_atomic(out / "failures.json", json.dumps(to_jsonable(failures), indent=2) + "\n")
    plot = _plot(table, spec.objectives, spec.size, list(spec.grid), out / "pareto.png") if (
        "pareto" in table) else None
    html = out / "sweep.html"
    write_atomic(html, _html(table, failures, plot, f"Sweep of {path.name}"))
    return SweepResult(table, failures, csv, html, plot)
