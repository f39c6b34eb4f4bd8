"""The install story stays consistent: pyproject, requirements.lock, environment.yml, Makefile."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str, extras: bool = True) -> str:
    name, _, version = req.partition("==")
    name = name if extras else name.split("[")[0]  # the lock pins ray, not ray[serve]
    return f"{re.sub(r'[-_.]+', '-', name).lower().strip()}=={version.strip()}"


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pinned():
    project = _pyproject()
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def test_every_direct_dependency_is_pinned_exactly():
    for req in _pinned():
        pinned = re.fullmatch(r"[A-Za-z0-9_.-]+(\[[a-z,-]+\])?==[\w.]+", req)
        assert pinned, f"{req} is not pinned with =="
    assert "torch==2.13.0" in _pinned()


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_norm(r) for r in pip if not r.startswith("-e")}
    assert listed == {_norm(r) for r in _pinned()}, "environment.yml drifted from pyproject.toml"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python=3.11"
    assert _pyproject()["requires-python"] == ">=3.11,<3.12"


def test_lock_pins_every_direct_dependency_at_the_same_version():
    lock = {_norm(line) for line in (ROOT / "requirements.lock").read_text().splitlines()
            if line and not line.startswith("#")}
    missing = {_norm(r, extras=False) for r in _pinned()} - lock
    assert not missing, f"requirements.lock lacks or disagrees on {sorted(missing)}; run make lock"
    assert all("==" in entry for entry in lock)


def test_readme_and_ci_use_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_setup_leaves_out_the_slow_importing_iri_grammar():
    # every Ray worker imports jsonschema; with rfc3987-syntax it builds a Lark grammar first
    # (1.3 s a process, 7 s of each local Serve start); make setup uninstalls it
    import importlib.util

    assert importlib.util.find_spec("rfc3987_syntax") is None, "run make setup"
    assert re.search(r"pip uninstall .*rfc3987-syntax", (ROOT / "Makefile").read_text())
