"""The offline bundle: everything a workshop room needs, on one USB stick.

A bundle is a folder (and optionally a tarball of it):

    wheels/          a wheel for every pin in requirements.lock, plus deploylab's own
    cache/           the deploylab cache: built datasets, exported and trained models
    source/          the repository's tracked files (notebooks, library, Makefile)
    requirements.lock
    MANIFEST.json    sha256 and size of every file above

`install` refuses a bundle whose manifest does not match (a file missing or altered, named),
installs with `pip --no-index` (no network needed or used) and copies the cache into place.
This module uses the standard library only, so a fresh machine can verify and install a bundle
with its system Python: `PYTHONPATH=lib python3 -m deploylab.bundle install BUNDLE`
(`make lab BUNDLE=BUNDLE` does exactly that).

Example:
    >>> from deploylab import bundle
    >>> bundle.build("usb/deploylab-bundle", tarball=True)
    >>> bundle.verify("usb/deploylab-bundle")
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from ._files import write_atomic
from .errors import DeploylabError
from .settings import cache_dir, project_root

__all__ = ["BundleError", "MANIFEST", "build", "install", "verify"]

MANIFEST = "MANIFEST.json"


class BundleError(DeploylabError):
    """A bundle cannot be built, or is incomplete or altered."""


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip(python: str, *args: str) -> None:
    cmd = [python, "-m", "pip", "--disable-pip-version-check", *args]
    # pip would take a deploylab on PYTHONPATH (lib/) for an installed one: leave it out
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
             if p and not (Path(p) / "deploylab").is_dir()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BundleError(f"`{' '.join(cmd)}` failed:\n{tail}")


def build(outdir: str | os.PathLike, *, requirements: str | os.PathLike | None = None,
          include_cache: bool = True, tarball: bool = False,
          python: str = sys.executable, find_links: str | os.PathLike | None = None) -> Path:
    """Collect wheels, the cache and a manifest into `outdir` (replaced if it exists).

    Args:
        outdir (str | PathLike): the bundle folder to write.
        requirements (str | PathLike | None, default None): pins to bundle; default the
            project's requirements.lock.
        include_cache (bool, default True): copy the deploylab cache (datasets, models that
            `deploylab` built or trained) so the room starts warm.
        tarball (bool, default False): also write `outdir.tar` next to the folder.
        python (str, default the running interpreter): whose pip fetches the wheels; wheels
            match its platform and Python version.
        find_links (str | PathLike | None, default None): take wheels only from this folder
            (no index, no network), e.g. an existing wheelhouse; default: pip's configuration.

    Returns:
        Path: the bundle folder.
    """
    root = project_root()
    req = Path(requirements) if requirements else root / "requirements.lock"
    if not req.is_file():
        raise BundleError(f"{req} does not exist; run `make lock` or give requirements=")
    out = Path(outdir)
    tmp = out.with_name(out.name + ".partial")  # built aside, renamed when complete
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "wheels").mkdir(parents=True)
    shutil.copy2(req, tmp / "requirements.lock")
    source = ["--no-index", "--find-links", str(find_links)] if find_links else []
    try:
        # pip wheel keeps existing wheels as they are and builds the rare sdist, so the room
        # never needs a compiler; the lock is complete, hence --no-deps
        _pip(python, "wheel", "--quiet", "--no-deps", *source, "-r", str(req),
             "-w", str(tmp / "wheels"))
        _pip(python, "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
             str(root), "-w", str(tmp / "wheels"))
        _copy_source(root, tmp / "source")
        if include_cache and cache_dir().is_dir():
            shutil.copytree(cache_dir(), tmp / "cache")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
                    for p in files}
        write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if tarball:
        with tarfile.open(out.with_name(out.name + ".tar.partial"), "w") as tar:
            tar.add(out, arcname=out.name)
        out.with_name(out.name + ".tar.partial").rename(out.with_name(out.name + ".tar"))
    return out


def _copy_source(root: Path, dest: Path) -> None:
    """The tracked files only (no .venv, caches or build output); a plain copy otherwise."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], check=True,
                                capture_output=True, text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = None
    if listed is None:
        shutil.copytree(root, dest, ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "out", "reports", "__pycache__", "*.egg-info"))
        return
    for rel in filter(None, listed):
        if (root / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest / rel)


def verify(bundle: str | os.PathLike) -> dict:
    """Check every file against the manifest.

    Returns:
        dict: the manifest (relative path -> sha256 and bytes).

    Raises:
        BundleError: naming each missing, altered or unlisted wheel file.
    """
    folder = Path(bundle)
    if not (folder / MANIFEST).is_file():
        raise BundleError(f"{folder} is not a deploylab bundle (no {MANIFEST}); build one with "
                          "`make bundle`, or unpack the .tar first")
    manifest = json.loads((folder / MANIFEST).read_text())
    problems = []
    for rel, entry in manifest.items():
        file = folder / rel
        if not file.is_file():
            problems.append(f"missing: {rel}")
        elif file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            problems.append(f"altered: {rel}")
    extra = {str(p.relative_to(folder)) for p in (folder / "wheels").glob("*")} - set(manifest)
    problems += [f"not in the manifest: {rel}" for rel in sorted(extra)]
    if problems:
        raise BundleError(f"bundle {folder} failed its check; copy it again from the "
                          "instructor's stick:\n  " + "\n  ".join(problems))
    return manifest


def install(bundle: str | os.PathLike, *, python: str = sys.executable,
            cache: str | os.PathLike | None = None) -> None:
    """Verify the bundle, install its wheels offline into `python`'s environment, and copy
    its cache into the deploylab cache (existing files are kept).

    Args:
        bundle (str | PathLike): the bundle folder.
        python (str, default the running interpreter): the environment to install into
            (e.g. ".venv/bin/python").
        cache (str | PathLike | None, default None): cache folder; default the deploylab one.
    """
    folder = Path(bundle)
    verify(folder)
    _pip(python, "install", "--quiet", "--no-index", "--find-links", str(folder / "wheels"),
         "-r", str(folder / "requirements.lock"))
    _pip(python, "install", "--quiet", "--no-index", "--no-deps", "--find-links",
         str(folder / "wheels"), "deploylab")
    if (folder / "cache").is_dir():
        shutil.copytree(folder / "cache", Path(cache) if cache else cache_dir(),
                        dirs_exist_ok=True, copy_function=_copy_if_absent)


def _copy_if_absent(src: str, dst: str) -> str:
    return dst if os.path.exists(dst) else shutil.copy2(src, dst)


def main(argv: list[str] | None = None) -> int:
    """`python -m deploylab.bundle {build,verify,install} PATH`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m deploylab.bundle")
    p.add_argument("action", choices=["build", "verify", "install"])
    p.add_argument("path", type=Path)
    p.add_argument("--python", default=sys.executable, help="environment to install into")
    p.add_argument("--tar", action="store_true", help="build: also write PATH.tar")
    args = p.parse_args(argv)
    try:
        if args.action == "build":
            out = build(args.path, tarball=args.tar)
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
            print(f"bundle: {out} ({size:,.0f} MB)" + (f" and {out}.tar" if args.tar else ""))
        elif args.action == "verify":
            print(f"bundle ok: {len(verify(args.path))} files match {MANIFEST}")
        else:
            install(args.path, python=args.python)
            print(f"installed from {args.path} without network")
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
