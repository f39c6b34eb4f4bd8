"""Process-wide switches every notebook and command shares: smoke mode, seeds, the cache.

Example:
    >>> import deploylab
    >>> smoke = deploylab.smoke_mode(False)   # True when DEPLOYLAB_SMOKE=1 is set
    >>> deploylab.seed_everything(0)
"""

from __future__ import annotations

import os
import random
from pathlib import Path

__all__ = ["cache_dir", "project_root", "seed_everything", "smoke_mode"]

_TRUE = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def smoke_mode(requested: bool = False) -> bool:
    """Resolve a notebook's `smoke` parameter against the environment.

    Args:
        requested (bool, default False): the value of the notebook's `smoke` parameter.

    Returns:
        bool: True when smoke mode was requested or `DEPLOYLAB_SMOKE=1` forces it
        (CI and workshop rooms set the variable once instead of editing notebooks).
    """
    return bool(requested) or _env_flag("DEPLOYLAB_SMOKE")


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and torch (when installed) so runs repeat.

    Args:
        seed (int, default 0): the seed.

    Returns:
        int: the seed, so a notebook can print what it used.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a pinned dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        pass
    return seed


def cache_dir(*parts: str) -> Path:
    """The folder deploylab caches into, created on demand.

    `DEPLOYLAB_CACHE` overrides the default `~/.cache/deploylab` (tests point it at a
    temporary folder; an instructor can point it at a USB stick).

    Args:
        *parts (str): sub-folders below the cache root.

    Returns:
        Path: the existing folder.
    """
    root = os.environ.get("DEPLOYLAB_CACHE") or Path.home() / ".cache" / "deploylab"
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The deploylab repository (where notebooks/ and casestudies/ live).

    Looked up from `start` (default: the current folder, which is the notebook's folder in
    JupyterLab, papermill and nbval) upwards, then from the installed package's location.

    Raises:
        DeploylabError: when neither is inside a deploylab checkout.
    """
    from .errors import DeploylabError

    here = Path(start or Path.cwd()).resolve()
    for folder in [here, *here.parents, *Path(__file__).resolve().parents]:
        marker = folder / "pyproject.toml"
        if marker.is_file() and 'name = "deploylab"' in marker.read_text(errors="ignore"):
            return folder
    raise DeploylabError(f"no deploylab checkout above {here}; run from inside the repository")
