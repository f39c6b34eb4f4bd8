import hashlib
import json
import sys

import pytest

from deploylab import assets
from deploylab.assets import Asset, AssetChecksumError, AssetError, AssetMissingError

PACKAGED = [a.name for a in assets.REGISTRY.values() if a.package]


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_assets_verify(name):
    folder = assets.path(name)
    assert folder.is_dir()
    for rel in assets.asset(name).files:
        assert (folder / rel).is_file()


@pytest.mark.parametrize(("alias", "name"), [
    ("minilm", "all-MiniLM-L6-v2"), ("ALL-MINILM-L6-V2", "all-MiniLM-L6-v2"),
    ("silero", "silero-vad"), ("ppocrv4", "ppocr-v4"), ("espeakng", "espeak-ng"),
    ("stdlib", "stdlib-docstrings"),
])
def test_aliases_resolve(alias, name):
    assert assets.asset(alias).name == name


def test_unknown_asset_lists_known_ones():
    with pytest.raises(AssetError, match=r"unknown asset 'nope'.*all-MiniLM-L6-v2"):
        assets.asset("nope")


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """A registered asset backed by a tiny package in tmp_path."""
    pkg = tmp_path / "fakepkg_assets"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    blob = pkg / "data" / "weights.bin"
    blob.write_bytes(b"\x00\x01" * 1000)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fakepkg_assets", None)
    entry = Asset(name="fake", kind="model", description="test", package="fakepkg-assets",
                  version="1.0", module="fakepkg_assets", folder="data",
                  files={"weights.bin": hashlib.sha256(blob.read_bytes()).hexdigest()})
    monkeypatch.setitem(assets.REGISTRY, "fake", entry)
    return blob


def test_fake_asset_verifies(fake_asset):
    assert assets.path("fake") == fake_asset.parent


def test_corrupt_file_fails_its_checksum_with_a_fix(fake_asset):
    fake_asset.write_bytes(b"tampered")
    with pytest.raises(AssetChecksumError, match=r"sha256.*pip install --force-reinstall "
                                                 r"fakepkg-assets==1\.0"):
        assets.path("fake")
    row = next(r for r in assets.status() if r["name"] == "fake")
    assert row["state"] == "corrupt"


def test_missing_file_is_named(fake_asset):
    fake_asset.unlink()
    with pytest.raises(AssetMissingError, match=r"weights\.bin is missing"):
        assets.path("fake")


def test_missing_package_says_what_to_install(monkeypatch):
    entry = Asset(name="ghost", kind="model", description="test", package="ghost-pkg",
                  version="2.0", module="ghost_pkg_not_installed", files={"x": "0"})
    monkeypatch.setitem(assets.REGISTRY, "ghost", entry)
    with pytest.raises(AssetMissingError, match=r"not installed.*pip install ghost-pkg==2\.0"):
        assets.path("ghost")
    row = next(r for r in assets.status() if r["name"] == "ghost")
    assert row["state"] == "missing"


def test_status_reports_every_asset():
    rows = {r["name"]: r for r in assets.status()}
    assert set(rows) == set(assets.REGISTRY)
    for name in PACKAGED:
        assert rows[name]["state"] == "ok"


def test_resolve_model_accepts_a_local_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert assets.resolve_model(tmp_path) == tmp_path


def test_resolve_model_refuses_a_folder_without_config(tmp_path):
    with pytest.raises(AssetError, match=r"no config\.json"):
        assets.resolve_model(tmp_path)


def test_resolve_model_refuses_nonsense():
    with pytest.raises(AssetError, match=r"not a registered asset.*hub id"):
        assets.resolve_model("not a model at all")


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetError, match="HF_HUB_OFFLINE=1"):
        assets.resolve_model("deploylab-tests/no-such-model")


@pytest.mark.slow
def test_load_encoder_gives_the_real_minilm():
    import torch

    tokenizer, model = assets.load_encoder("minilm")
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    batch = tokenizer(["deploy models well"], return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert out.shape[-1] == 384
    assert not model.training


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DEPLOYLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield assets.path("stdlib-docstrings")
    mp.undo()


def test_stdlib_docstrings_are_unique_and_stable(corpus_cache):
    docs = assets.stdlib_docstrings()
    ids = [d["id"] for d in docs]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert len({d["doc"] for d in docs}) == len(docs)
    by_id = {d["id"]: d for d in docs}
    assert "json.dumps" in by_id and "math.sqrt" in by_id
    assert by_id["json.dumps"]["kind"] == "function"
    assert len(docs) > 2000


def test_stdlib_corpus_does_not_depend_on_what_the_host_patched(corpus_cache, tmp_path,
                                                                 monkeypatch):
    # Jupyter, Ray and test runners replace sys.excepthook or builtins.print; read in
    # process, those C-module docstrings went missing and every drawn benchmark shifted
    import builtins

    monkeypatch.setattr(builtins, "print", lambda *a, **k: None)
    monkeypatch.setattr(sys, "excepthook", lambda *a: None)
    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path))
    rebuilt = assets.path("stdlib-docstrings")
    assert rebuilt != corpus_cache and rebuilt.read_bytes() == corpus_cache.read_bytes()
    ids = {d["id"] for d in assets.stdlib_docstrings()}
    assert {"builtins.print", "sys.excepthook"} <= ids


def test_stdlib_docstrings_are_reused_from_the_cache(corpus_cache):
    before = corpus_cache.stat().st_mtime_ns
    assert assets.path("stdlib-docstrings") == corpus_cache
    assert corpus_cache.stat().st_mtime_ns == before


def test_corrupt_corpus_cache_is_rebuilt_whole(corpus_cache):
    good = corpus_cache.read_bytes()
    corpus_cache.write_text(json.dumps({"id": "half"}) + "\n")
    assert assets.path("stdlib-docstrings").read_bytes() == good
    leftovers = [p.name for p in corpus_cache.parent.iterdir() if ".tmp" in p.name]
    assert leftovers == []
