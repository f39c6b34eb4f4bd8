"""A text corpus every Python has: the standard library's own docstrings.

Pure-Python modules are read with `ast` (no imports, so no side effects such as
`antigravity` opening a browser); public C modules (math, itertools, time, ...) are
imported and read with `inspect`, since they have no source. Records are deduplicated
by text and keyed by a stable id, the qualified name (`json.dumps`, `str.split`).
`deploylab.assets.stdlib_docstrings()` builds this once and caches it, in a fresh interpreter
(`python -m deploylab.stdlib_corpus`): a C module is read as imported, so a host that has
patched `builtins.print` or `sys.excepthook` (Jupyter, Ray, a test runner) would otherwise
drop their docstrings and every benchmark drawn from the corpus would change with it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["build_corpus", "iter_docstrings", "source_files"]

# Folders of the standard library that are tests, tools or GUI demos, not documentation.
_SKIP_PARTS = {"test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages",
               "__pycache__", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "config-3.11"}
_SKIP_MODULES = {"antigravity", "this", "__hello__", "__phello__", "__main__"}


def _clean(doc: str | None) -> str:
    return inspect.cleandoc(doc).strip() if doc else ""


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    args = ast.unparse(fn.args)
    return f"{fn.name}({args})"


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def _from_source(module: str, source: str) -> Iterator[dict]:
    tree = ast.parse(source)
    if doc := _clean(ast.get_docstring(tree, clean=False)):
        yield {"id": module, "module": module, "kind": "module", "name": module,
               "signature": "", "doc": doc}

    def walk(node: ast.AST, prefix: str) -> Iterator[dict]:
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not _public(child.name):
                    continue
                qual = f"{prefix}.{child.name}"
                is_class = isinstance(child, ast.ClassDef)
                kind = "class" if is_class else ("method" if prefix != module else "function")
                if doc := _clean(ast.get_docstring(child, clean=False)):
                    sig = child.name if is_class else _signature(child)
                    yield {"id": qual, "module": module, "kind": kind, "name": child.name,
                           "signature": sig, "doc": doc}
                if is_class:
                    yield from walk(child, qual)

    yield from walk(tree, module)


def _from_c_module(module: str) -> Iterator[dict]:
    try:
        with warnings.catch_warnings():  # audioop, nis, ...: deprecated, still documented
            warnings.simplefilter("ignore", DeprecationWarning)
            mod = importlib.import_module(module)
    except Exception:
        return
    if doc := _clean(mod.__doc__):
        yield {"id": module, "module": module, "kind": "module", "name": module,
               "signature": "", "doc": doc}
    for name, obj in sorted(vars(mod).items()):
        if not _public(name) or getattr(obj, "__module__", module) != module:
            continue
        if not (inspect.isbuiltin(obj) or inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        doc = _clean(getattr(obj, "__doc__", None))
        if not doc:
            continue
        kind = "class" if inspect.isclass(obj) else "function"
        text_sig = getattr(obj, "__text_signature__", None)
        if text_sig:  # "($module, x, /)" -> "(x, /)"
            text_sig = text_sig.replace("$module, ", "").replace("$module", "")
        sig = f"{name}{text_sig}" if text_sig else name
        yield {"id": f"{module}.{name}", "module": module, "kind": kind, "name": name,
               "signature": sig, "doc": doc}
        if inspect.isclass(obj):  # methods of C classes: str.split, dict.get, ...
            for mname, meth in sorted(vars(obj).items()):
                mdoc = _clean(getattr(meth, "__doc__", None)) if _public(mname) else ""
                if mdoc and callable(meth) and mname != "__init__":
                    yield {"id": f"{module}.{name}.{mname}", "module": module, "kind": "method",
                           "name": mname, "signature": mname, "doc": mdoc}


def _source_modules(stdlib: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if _SKIP_PARTS & set(rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or any(p.startswith("_") for p in parts) or parts[0] in _SKIP_MODULES:
            continue
        if any(not p.isidentifier() for p in parts):
            continue
        yield ".".join(parts), path


def source_files() -> list[tuple[str, Path]]:
    """The public pure-Python modules of this Python's standard library, sorted by name.

    Returns:
        list[tuple[str, Path]]: (module name, source file), e.g. ("json.decoder", .../decoder.py);
        tests, tools and GUI demos are left out as for the docstrings.
    """
    stdlib = Path(os.__file__).parent  # the base interpreter's, also inside a venv
    return sorted(_source_modules(stdlib))


def iter_docstrings() -> Iterator[dict]:
    """Yield one record per documented public object of this Python's standard library.

    Returns:
        Iterator[dict]: records with keys id, module, kind, name, signature, doc.
    """
    stdlib = Path(os.__file__).parent  # the base interpreter's, also inside a venv
    for module, path in _source_modules(stdlib):
        try:
            yield from _from_source(module, path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
    c_modules = sorted(m for m in sys.builtin_module_names if not m.startswith("_"))
    dynload = [Path(p) for p in sys.path if Path(p).name == "lib-dynload"]
    c_modules += sorted({f.name.split(".")[0] for d in dynload for f in d.glob("*.so")
                         if not f.name.startswith("_")})
    for module in dict.fromkeys(c_modules):
        if module not in _SKIP_MODULES:
            yield from _from_c_module(module)


def build_corpus() -> list[dict]:
    """The deduplicated corpus: first occurrence of each docstring text, sorted by id.

    Returns:
        list[dict]: records as in `iter_docstrings`, unique by `id` and by `doc`.
    """
    seen_ids: set[str] = set()
    seen_docs: set[str] = set()
    records = []
    for rec in sorted(iter_docstrings(), key=lambda r: r["id"]):
        if rec["id"] in seen_ids or rec["doc"] in seen_docs:
            continue
        seen_ids.add(rec["id"])
        seen_docs.add(rec["doc"])
        records.append(rec)
    return records


def main() -> None:
    """Write the corpus to stdout as JSON lines (what the asset cache stores)."""
    out = sys.stdout.buffer
    for rec in build_corpus():
        out.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))


if __name__ == "__main__":
    main()
