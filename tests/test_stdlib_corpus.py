from deploylab import stdlib_corpus

SOURCE = '''"""Module doc."""

def public(a, b=1, *args, c, **kw):
    """Add things."""

def _private():
    """Hidden."""

class Thing:
    """A thing."""

    def method(self):
        """Do it."""

    def _helper(self):
        """Hidden too."""

    def undocumented(self):
        pass
'''


def test_from_source_reads_public_documented_objects():
    recs = {r["id"]: r for r in stdlib_corpus._from_source("mod", SOURCE)}
    assert set(recs) == {"mod", "mod.public", "mod.Thing", "mod.Thing.method"}
    assert recs["mod.public"]["kind"] == "function"
    assert recs["mod.public"]["signature"] == "public(a, b=1, *args, c, **kw)"
    assert recs["mod.Thing"]["kind"] == "class"
    assert recs["mod.Thing.method"]["kind"] == "method"
    assert recs["mod"]["doc"] == "Module doc."


def test_c_modules_are_read_with_their_text_signatures():
    recs = {r["id"]: r for r in stdlib_corpus._from_c_module("math")}
    assert recs["math.sqrt"]["signature"] == "sqrt(x, /)"
    assert "square root" in recs["math.sqrt"]["doc"]


def test_missing_c_module_is_skipped():
    assert list(stdlib_corpus._from_c_module("no_such_module_xyz")) == []
