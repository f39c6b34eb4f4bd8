"""deploylab: learn, measure and practise the deployment of large AI models.

The modules, in the order data flows (each imports only those above it):
`assets` (models and datasets, offline first), `measure` (latency, memory, fidelity,
fingerprint, roofline), then the technique modules later chapters add, and `report`
(papermill runs, sweeps, HTML); `bench` runs benchmark suites and `cli` is the `deploylab`
command. Importing `deploylab` is fast:
heavy libraries (torch, transformers, onnxruntime) load only when a function needs them.
"""

import logging as _logging

# transformers imports torchao whenever it loads a model; on a CPU-only machine torchao then
# logs that its CUDA kernels (mxfp8, cutlass) did not load, and torch logs a deprecation of
# torchao's own enums. Neither is actionable for a learner; real errors still get through.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

from .errors import DeploylabError  # noqa: E402
from .settings import cache_dir, project_root, seed_everything, smoke_mode  # noqa: E402

__version__ = "0.1.0"
__all__ = ["DeploylabError", "cache_dir", "project_root", "seed_everything", "smoke_mode",
           "__version__"]
