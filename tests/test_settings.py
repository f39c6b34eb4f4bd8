import random

import numpy as np
import pytest
import torch

import deploylab


@pytest.mark.parametrize(("requested", "env", "expected"), [
    (False, None, False), (True, None, True), (False, "1", True), (False, "true", True),
    (False, "0", False), (True, "0", True),
])
def test_smoke_mode_resolves_parameter_and_environment(monkeypatch, requested, env, expected):
    if env is None:
        monkeypatch.delenv("DEPLOYLAB_SMOKE", raising=False)
    else:
        monkeypatch.setenv("DEPLOYLAB_SMOKE", env)
    assert deploylab.smoke_mode(requested) is expected


def test_seed_everything_repeats_python_numpy_and_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    deploylab.seed_everything(7)
    first = draw()
    deploylab.seed_everything(7)
    assert draw() == first
    deploylab.seed_everything(8)
    assert draw() != first


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        deploylab.seed_everything(bad)


def test_cache_dir_honours_override_and_creates_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path / "c"))
    path = deploylab.cache_dir("datasets", "x")
    assert path == tmp_path / "c" / "datasets" / "x"
    assert path.is_dir()


def test_import_is_light():
    # Importing the package must not pull torch/transformers: notebooks and the CLI start fast.
    import subprocess
    import sys

    code = ("import sys, deploylab; heavy = [m for m in ('torch', 'transformers', "
            "'onnxruntime', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_project_root_is_found_from_a_subfolder_and_refused_elsewhere(tmp_path, monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert deploylab.project_root(root / "notebooks") == root
    monkeypatch.setattr(deploylab.settings, "__file__", str(tmp_path / "x" / "settings.py"))
    with pytest.raises(deploylab.DeploylabError, match="no deploylab checkout"):
        deploylab.project_root(tmp_path)
