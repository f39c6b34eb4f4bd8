"""Reports: run any notebook with other parameters and get an HTML page, or a whole grid.

- `publish(table, figures=...)`: a notebook hands its results table to the report runner
  (a file in the run's folder; a no-op when the notebook runs interactively).
- `run_notebook(nb, params, outdir)`: papermill run, parameter checks first, executed
  notebook + self-contained HTML + results.json.
- `run_sweep(nb, spec, outdir)`: a grid of runs in parallel processes (or on a Ray cluster),
  aggregated into one table, a Pareto plot and an HTML page.

Example:
    >>> from deploylab import report
    >>> run = report.run_notebook("notebooks/01_measuring.ipynb", {"smoke": True}, "out/m")
    >>> run.results["tables"]["results"][:2]
"""

from .publish import REPORT_DIR_ENV, RESULTS_FILE, publish
from .run import ReportError, RunResult, check_parameters, notebook_parameters, run_notebook
from .sweep import SweepResult, SweepSpec, pareto_front, run_sweep

__all__ = [
    "publish", "RESULTS_FILE", "REPORT_DIR_ENV",
    "ReportError", "RunResult", "check_parameters", "notebook_parameters", "run_notebook",
    "SweepResult", "SweepSpec", "pareto_front", "run_sweep",
]
