"""A small bundle (one tiny wheel plus deploylab's own) is built and installed with no index
and the socket guard on: the room's USB stick, in miniature."""

import subprocess
import sys
import textwrap

import pytest

from deploylab import bundle
from deploylab.bundle import BundleError


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    pkg = tmp / "src" / "tinypkg"
    pkg.mkdir(parents=True)
    (pkg / "tinypkg.py").write_text("ANSWER = 42\n")
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tinypkg"
        version = "1.0"
        [tool.setuptools]
        py-modules = ["tinypkg"]
    """))
    house = tmp / "house"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", str(pkg), "-w", str(house)], check=True)
    (tmp / "req.txt").write_text("tinypkg==1.0\n")
    out = bundle.build(tmp / "stick", requirements=tmp / "req.txt", find_links=house,
                       include_cache=False, tarball=True)
    return tmp, out


def test_build_writes_wheels_and_a_manifest_that_verifies(small_bundle):
    tmp, out = small_bundle
    wheels = sorted(p.name.split("-")[0] for p in (out / "wheels").iterdir())
    assert wheels == ["deploylab", "tinypkg"]
    manifest = bundle.verify(out)
    wheel_files = {f"wheels/{p.name}" for p in (out / "wheels").iterdir()}
    assert {"requirements.lock", "source/Makefile", "source/lib/deploylab/__init__.py",
            *wheel_files} <= set(manifest)
    assert not any(k.startswith(("source/.venv", "source/.git/")) for k in manifest)
    assert (tmp / "stick.tar").is_file() and not (tmp / "stick.partial").exists()


def test_install_into_a_fresh_venv_without_network(small_bundle, tmp_path):
    _, out = small_bundle
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    cache = tmp_path / "cache"
    bundle.install(out, python=python, cache=cache)
    done = subprocess.run([python, "-c", "import tinypkg, deploylab; print(tinypkg.ANSWER)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "42"


@pytest.mark.parametrize("damage", ["alter", "remove", "add"])
def test_a_damaged_bundle_is_refused_with_the_file_named(small_bundle, tmp_path, damage):
    import shutil

    _, out = small_bundle
    copy = shutil.copytree(out, tmp_path / "copy")
    wheel = next((copy / "wheels").glob("tinypkg-*.whl"))
    if damage == "alter":
        wheel.write_bytes(wheel.read_bytes()[:-1] + b"x")
    elif damage == "remove":
        wheel.unlink()
    else:
        (copy / "wheels" / "stray-0.1-py3-none-any.whl").write_bytes(b"?")
    name = "stray" if damage == "add" else wheel.name
    word = {"alter": "altered", "remove": "missing", "add": "not in the manifest"}[damage]
    with pytest.raises(BundleError, match=f"{word}: wheels/{name}"):
        bundle.verify(copy)
    with pytest.raises(BundleError, match=word):
        bundle.install(copy, python=sys.executable)  # refused before pip runs


def test_not_a_bundle_and_missing_requirements_are_clear(tmp_path):
    with pytest.raises(BundleError, match="not a deploylab bundle"):
        bundle.verify(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        bundle.build(tmp_path / "b", requirements=tmp_path / "nope.txt")
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()
