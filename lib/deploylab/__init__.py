"""deploylab: learn, measure and practise the deployment of large AI models.

The modules, in the order data flows (each imports only those above it):
`assets` (models and datasets, offline first), `measure` (latency, memory, fidelity,
fingerprint, roofline), then the technique modules later chapters add, and `report`
(papermill runs, sweeps, HTML); `bench` runs benchmark suites and `cli` is the `deploylab`
command. Importing `deploylab` is fast:
heavy libraries (torch, transformers, onnxruntime) load only when a function needs them.
"""

from .errors import DeploylabError
from .settings import cache_dir, project_root, seed_everything, smoke_mode

__version__ = "0.1.0"
__all__ = ["DeploylabError", "cache_dir", "project_root", "seed_everything", "smoke_mode",
           "__version__"]
