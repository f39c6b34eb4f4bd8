"""Workshop delivery: student editions of the notebooks and slides for the projector.

Exercises and their solutions are ordinary cells with a tag:

- `exercise`: the prompt (markdown, or a code cell with the starting point); kept everywhere;
- `solution`: the worked answer (code or markdown); CI runs it in the instructor edition (the
  committed notebook), so every solution is known to work; the student edition replaces it
  with an empty cell that says where the answer goes.

Slides come from nbconvert's reveal.js exporter. Slide breaks follow cell metadata
(`slideshow.slide_type`) where a cell has it and the headings otherwise: a `##` heading starts
a slide, a `###` heading a sub-slide, the rest continues the current slide.

Example:
    >>> from deploylab import workshop
    >>> workshop.student_edition("notebooks/03_quantization.ipynb", "student/")
    >>> workshop.slides("notebooks/03_quantization.ipynb", "slides/")
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from ._files import write_atomic
from .errors import DeploylabError

__all__ = ["EXERCISE_TAG", "SOLUTION_TAG", "WorkshopError", "exercises", "fetch_reveal",
           "local_reveal", "slide_types", "slides", "student_edition"]

EXERCISE_TAG = "exercise"
SOLUTION_TAG = "solution"
_PLACEHOLDER = "# Your answer here (the instructor edition of this notebook has a solution)\n"
# reveal.js: $DEPLOYLAB_REVEAL_URL, else a copy fetched into the cache (`fetch_reveal`, run by
# `deploylab prefetch`, so the offline bundle carries it), else nbconvert's CDN
_REVEAL_ENV = "DEPLOYLAB_REVEAL_URL"
REVEAL_VERSION = "4.0.2"  # the version nbconvert's reveal template is written for
_REVEAL_TGZ = f"https://registry.npmjs.org/reveal.js/-/reveal.js-{REVEAL_VERSION}.tgz"


class WorkshopError(DeploylabError):
    """A notebook cannot be turned into a student edition or slides."""


def _read(notebook: str | os.PathLike):
    import nbformat

    path = Path(notebook)
    if path.suffix != ".ipynb" or not path.is_file():
        raise WorkshopError(f"{path} is not a notebook file; give the path of a .ipynb file")
    try:
        return path, nbformat.read(path, as_version=4)
    except Exception as e:  # nbformat raises several types for a damaged file
        raise WorkshopError(f"{path} is not valid notebook JSON ({e}); restore it from git") from e


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def exercises(notebook: str | os.PathLike) -> list[tuple[int, int | None]]:
    """Each exercise cell's index with the index of its solution (the next `solution` cell
    before the next exercise), or None when it has none.
    """
    _, nb = _read(notebook)
    pairs, open_ex = [], None
    for i, cell in enumerate(nb.cells):
        tags = _tags(cell)
        if EXERCISE_TAG in tags:
            if open_ex is not None:
                pairs.append((open_ex, None))
            open_ex = i
        elif SOLUTION_TAG in tags and open_ex is not None:
            pairs.append((open_ex, i))
            open_ex = None
    if open_ex is not None:
        pairs.append((open_ex, None))
    return pairs


def student_edition(notebook: str | os.PathLike, outdir: str | os.PathLike) -> Path:
    """Write the notebook with every solution cell replaced by an empty answer cell.

    Teaching outputs stay; only solutions (and their outputs) go. The result is valid nbformat.

    Args:
        notebook (str | PathLike): the instructor edition (a committed notebook).
        outdir (str | PathLike): folder to write into (created); the file keeps its name.

    Returns:
        Path: the student edition.
    """
    import nbformat

    path, nb = _read(notebook)
    if not any(SOLUTION_TAG in _tags(c) for c in nb.cells):
        raise WorkshopError(f"{path.name} has no cell tagged {SOLUTION_TAG!r}; tag the worked "
                            "answers so the student edition can leave them out")
    student = copy.deepcopy(nb)
    cells = []
    for cell in student.cells:
        if SOLUTION_TAG not in _tags(cell):
            cells.append(cell)
        elif not cells or "answer" not in _tags(cells[-1]):  # one answer cell per solution run
            cells.append(nbformat.v4.new_code_cell(_PLACEHOLDER, metadata={"tags": ["answer"]}))
    student.cells = cells
    nbformat.validate(student)
    out = Path(outdir) / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, nbformat.writes(student) + "\n")


def slide_types(nb) -> list[str]:
    """The reveal.js slide type of every cell: its own metadata, else from its heading."""
    types = []
    for i, cell in enumerate(nb.cells):
        given = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        if given:
            types.append(given)
        elif i == 0:
            types.append("slide")
        elif cell.cell_type == "markdown" and re.match(r"#{1,2}\s", cell.source):
            types.append("slide")
        elif cell.cell_type == "markdown" and re.match(r"###\s", cell.source):
            types.append("subslide")
        else:
            types.append("-")
    return types


def local_reveal() -> Path | None:
    """The reveal.js copy in the cache (see `fetch_reveal`), or None."""
    from .settings import cache_dir

    folder = cache_dir("reveal.js") / REVEAL_VERSION
    return folder if (folder / "dist" / "reveal.js").is_file() else None


def fetch_reveal(timeout_s: float = 60.0) -> Path:
    """Download reveal.js (its `dist/` and `plugin/` folders, about 4 MB) into the cache once,
    so slides work in a room without network. The only step here that needs the network.

    Returns:
        Path: the folder.

    Raises:
        WorkshopError: the download failed (slides then load reveal.js from its CDN).
    """
    import shutil
    import tarfile
    import tempfile
    import urllib.request

    from .settings import cache_dir

    if (found := local_reveal()) is not None:
        return found
    dest = cache_dir("reveal.js") / REVEAL_VERSION
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tgz = Path(tmp) / "reveal.tgz"
        try:
            with urllib.request.urlopen(_REVEAL_TGZ, timeout=timeout_s) as response:
                tgz.write_bytes(response.read())
            with tarfile.open(tgz) as archive:
                wanted = [m for m in archive.getmembers() if m.isfile()  # no source maps
                          and m.name.startswith(("package/dist/", "package/plugin/"))
                          and not m.name.endswith(".map")]
                archive.extractall(tmp, members=wanted, filter="data")
        except (OSError, tarfile.TarError) as e:
            raise WorkshopError(f"could not fetch reveal.js {REVEAL_VERSION} from {_REVEAL_TGZ} "
                                f"({e}); slides load it from its CDN instead, or set "
                                f"{_REVEAL_ENV} to a local copy") from e
        shutil.rmtree(dest, ignore_errors=True)  # a half-written earlier attempt
        os.replace(Path(tmp) / "package", dest)  # whole or not at all
    return dest


def slides(notebook: str | os.PathLike, outdir: str | os.PathLike, *,
           reveal_url: str | None = None) -> Path:
    """Export a notebook to reveal.js slides (one self-contained HTML file, images embedded).

    Args:
        notebook (str | PathLike): the notebook.
        outdir (str | PathLike): folder to write `NAME.slides.html` into.
        reveal_url (str | None, default None): where the slides load reveal.js from; default
            `$DEPLOYLAB_REVEAL_URL` when set, else the cached copy (`fetch_reveal`), copied
            next to the slides as `reveal.js/` so the folder works offline, else nbconvert's
            CDN address.

    Returns:
        Path: the HTML file.
    """
    from nbconvert import SlidesExporter

    path, nb = _read(notebook)
    nb = copy.deepcopy(nb)
    for cell, kind in zip(nb.cells, slide_types(nb), strict=True):
        cell.metadata.setdefault("slideshow", {})["slide_type"] = kind
    exporter = SlidesExporter(embed_images=True)
    out = Path(outdir) / f"{path.stem}.slides.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    reveal_url = reveal_url or os.environ.get(_REVEAL_ENV)
    if not reveal_url and (local := local_reveal()) is not None:
        import shutil

        shutil.copytree(local, out.parent / "reveal.js", dirs_exist_ok=True)
        reveal_url = "reveal.js"  # relative: the folder can be copied anywhere
    if reveal_url:
        exporter.reveal_url_prefix = reveal_url
    body, _ = exporter.from_notebook_node(nb)
    return write_atomic(out, body)


def main(argv: list[str] | None = None) -> int:
    """`python -m deploylab.workshop {student,slides} NOTEBOOK... -o DIR` (used by make)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m deploylab.workshop", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("what", choices=["student", "slides"])
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("-o", "--outdir", type=Path, required=True)
    args = p.parse_args(argv)
    make = student_edition if args.what == "student" else slides
    failed = 0
    for nb in args.notebooks:
        try:
            print(make(nb, args.outdir))
        except WorkshopError as e:  # one bad notebook should not hide the others' results
            print(f"skipped: {e}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
