"""One notebook, one report: check parameters, execute with papermill, write HTML."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .._files import write_atomic
from ..errors import DeploylabError
from .publish import REPORT_DIR_ENV, RESULTS_FILE, read_results

__all__ = ["ReportError", "RunResult", "notebook_parameters", "check_parameters",
           "run_notebook", "execute"]


class ReportError(DeploylabError):
    """A report could not run: bad notebook or parameters, or a cell failed."""


@dataclass
class RunResult:
    """What one report run wrote.

    Args:
        notebook (Path): the executed notebook (partial if a cell failed).
        html (Path): the self-contained HTML page.
        results (dict | None): what the notebook published (`tables`, `figures`), if anything.
        error (str | None): which cell failed and how, or None.
    """

    notebook: Path
    html: Path
    results: dict | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


KERNEL_LOG = "kernel.log"  # what the notebook's kernel printed to stderr (start-up, crashes)

# papermill's inferred type names -> the Python types a value may have
_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
          "list": (list, tuple), "dict": (dict,)}


def _notebook_path(notebook: str | os.PathLike) -> Path:
    path = Path(notebook)
    if path.suffix != ".ipynb":
        raise ReportError(f"{path} is not a notebook (.ipynb)")
    if not path.is_file():
        raise ReportError(f"notebook {path} does not exist")
    return path


def notebook_parameters(notebook: str | os.PathLike) -> dict[str, dict]:
    """A notebook's parameters as papermill sees them: name -> {type, default, help}.

    Raises:
        ReportError: the notebook is missing, unreadable, or has no `parameters` cell.
    """
    import papermill

    path = _notebook_path(notebook)
    try:
        found = papermill.inspect_notebook(str(path))
    except Exception as e:  # nbformat/papermill raise several types for a broken file
        raise ReportError(f"cannot read {path} as a notebook: {e}") from e
    if not found:
        raise ReportError(f"{path} has no cell tagged 'parameters'; tag one (papermill's "
                          "convention) so reports can set its values")
    return {name: {"type": p["inferred_type_name"] if p["inferred_type_name"] != "None" else None,
                   "default": p["default"], "help": p["help"]} for name, p in found.items()}


def _describe(params: dict[str, dict]) -> str:
    return ", ".join(f"{n} ({p['type'] or 'any'})" for n, p in params.items())


def check_parameters(notebook: str | os.PathLike, parameters: dict | None) -> dict:
    """Refuse unknown names and values of the wrong type before anything runs.

    Returns:
        dict: the parameters, unchanged.

    Raises:
        ReportError: naming the bad parameter and listing the notebook's real ones.
    """
    parameters = dict(parameters or {})
    known = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ReportError(f"unknown parameter(s) {', '.join(unknown)} for {Path(notebook).name}; "
                          f"it takes: {_describe(known)}")
    for name, value in parameters.items():
        expected = known[name]["type"]
        types = _TYPES.get(expected)
        if types is None:
            continue
        wrong_bool = isinstance(value, bool) and expected in ("int", "float")
        if wrong_bool or not isinstance(value, types):
            raise ReportError(f"parameter {name} of {Path(notebook).name} expects {expected}, got "
                              f"{type(value).__name__} {value!r}")
    return parameters


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Point file descriptor 2 at a file, so the kernel papermill starts (which inherits it)
    logs there instead of into the caller's terminal or notebook."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _write_html(executed: Path, html: Path, no_input: bool) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=no_input, exclude_input_prompt=no_input,
                            exclude_output_prompt=no_input, embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    write_atomic(html, body)


def execute(notebook: Path, parameters: dict, outdir: Path, *, no_input: bool = False,
            cwd: Path | None = None, cell_timeout: int | None = None) -> RunResult:
    """Run a notebook into `outdir` (parameters already checked). A failing cell is reported
    in the result, not raised, so callers decide; the partial notebook and its HTML stay."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    outdir.mkdir(parents=True, exist_ok=True)
    executed = outdir / notebook.name
    html = executed.with_suffix(".html")
    (outdir / RESULTS_FILE).unlink(missing_ok=True)  # never report a previous run's results
    error = None
    (outdir / KERNEL_LOG).unlink(missing_ok=True)
    with _env(REPORT_DIR_ENV, str(outdir.resolve())), _stderr_to(outdir / KERNEL_LOG):
        try:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=parameters, progress_bar=False,
                cwd=str(cwd or notebook.parent), execution_timeout=cell_timeout,
                request_save_on_cell_execute=True)
        except PapermillExecutionError as e:
            error = (f"cell {e.cell_index} (execution count {e.exec_count}) failed: "
                     f"{e.ename}: {e.evalue}")
    if executed.is_file():
        _write_html(executed, html, no_input)
    return RunResult(executed, html, read_results(outdir / RESULTS_FILE), error)


def run_notebook(notebook: str | os.PathLike, parameters: dict | None = None,
                 outdir: str | os.PathLike = "out", *, no_input: bool = False,
                 cell_timeout: int | None = None) -> RunResult:
    """Execute a notebook with parameters and write its report.

    Writes `outdir/NAME.ipynb` (executed), `outdir/NAME.html` (self-contained, plots
    embedded), `outdir/results.json` (what the notebook published) and `outdir/kernel.log`
    (the kernel's own messages, for when it crashes).

    Args:
        notebook (str | PathLike): the notebook.
        parameters (dict | None): values for its `parameters` cell; checked first.
        outdir (str | PathLike, default "out"): where to write.
        no_input (bool, default False): hide code cells in the HTML.
        cell_timeout (int | None, default None): seconds a cell may run.

    Returns:
        RunResult: paths and published results.

    Raises:
        ReportError: bad notebook or parameters (nothing ran), or a cell failed (the partial
            notebook and HTML are kept; the message names the cell).
    """
    path = _notebook_path(notebook)
    params = check_parameters(path, parameters)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} exists and is not a folder; choose an output folder")
    result = execute(path, params, out, no_input=no_input, cell_timeout=cell_timeout)
    if result.error:
        raise ReportError(f"{path.name}: {result.error}; the partial notebook is at "
                          f"{result.notebook} and {result.html}")
    return result
