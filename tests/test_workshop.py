import nbformat
import pytest

from deploylab import workshop
from deploylab.workshop import WorkshopError


def _notebook(tmp_path, cells):
    nb = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    return path


def _md(text, *tags):
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": list(tags)})


def _code(text, *tags, output="42"):
    cell = nbformat.v4.new_code_cell(text, metadata={"tags": list(tags)}, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", text=output)]
    return cell


@pytest.fixture
def lesson(tmp_path):
    return _notebook(tmp_path, [
        _md("# Lesson"), _code("x = 6 * 7\nx", output="teaching output"),
        _md("## Exercises"), _md("1. Double x.", "exercise"), _code("x * 2", "solution"),
        _md("2. Explain.", "exercise"), _md("Because.", "solution"), _code("x", "solution"),
        _md("3. Think about it.", "exercise"),
    ])


def test_exercises_pair_each_prompt_with_its_solution(lesson):
    assert workshop.exercises(lesson) == [(3, 4), (5, 6), (8, None)]


def test_student_edition_drops_solutions_and_keeps_prompts_and_teaching_outputs(lesson, tmp_path):
    out = workshop.student_edition(lesson, tmp_path / "student")
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    text = [c.source for c in nb.cells]
    assert "x * 2" not in text and "Because." not in text
    assert [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])] == [
        "1. Double x.", "2. Explain.", "3. Think about it."]
    answers = [c for c in nb.cells if "answer" in c.metadata.get("tags", [])]
    assert len(answers) == 2 and all(not c.outputs for c in answers)  # one per solution run
    assert nb.cells[1].outputs[0]["text"] == "teaching output"
    assert nbformat.read(lesson, as_version=4).cells[4].source == "x * 2"  # source untouched


def test_slides_break_on_headings_unless_a_cell_says_otherwise(lesson, tmp_path):
    nb = nbformat.read(lesson, as_version=4)
    nb.cells[5].metadata["slideshow"] = {"slide_type": "skip"}
    assert workshop.slide_types(nb)[:6] == ["slide", "-", "slide", "-", "-", "skip"]
    out = workshop.slides(lesson, tmp_path / "slides", reveal_url="reveal")
    html = out.read_text()
    assert out.name == "lesson.slides.html" and "reveal/dist/reveal.js" in html
    assert "teaching output" in html


@pytest.mark.parametrize("bad", ["missing.ipynb", "broken.ipynb", "notes.txt"])
def test_bad_notebooks_are_named(tmp_path, bad):
    (tmp_path / "broken.ipynb").write_text("{not json")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(WorkshopError, match=bad.split(".")[0]):
        workshop.student_edition(tmp_path / bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_notebook_without_solutions_is_refused(tmp_path):
    path = _notebook(tmp_path, [_md("# Only prose")])
    with pytest.raises(WorkshopError, match="no cell tagged 'solution'"):
        workshop.student_edition(path, tmp_path / "out")


def test_every_notebook_exports_to_slides(tmp_path):
    from deploylab import project_root

    notebooks = sorted(p for pattern in ("notebooks/*.ipynb", "casestudies/*/*.ipynb")
                       for p in project_root().glob(pattern))
    assert notebooks
    for nb in notebooks:
        html = workshop.slides(nb, tmp_path).read_text()
        assert html.count("<section") >= 3, nb.name  # a title slide and at least two more


def _reveal_tgz(path):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name in ("package/dist/reveal.js", "package/plugin/notes/notes.js",
                     "package/README.md"):
            data = b"// " + name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_reveal_is_fetched_once_and_slides_then_work_offline(lesson, tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DEPLOYLAB_REVEAL_URL", raising=False)
    tgz = _reveal_tgz(tmp_path / "reveal.tgz")
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: calls.append(url) or open(tgz, "rb"))
    assert workshop.local_reveal() is None
    folder = workshop.fetch_reveal()
    assert workshop.fetch_reveal() == folder == workshop.local_reveal() and len(calls) == 1
    assert (folder / "plugin" / "notes" / "notes.js").is_file()
    assert not (folder / "README.md").exists()  # only what the slides load
    html = workshop.slides(lesson, tmp_path / "slides").read_text()
    assert '"reveal.js/dist/reveal.js"' in html
    assert (tmp_path / "slides" / "reveal.js" / "dist" / "reveal.js").is_file()


def test_a_failed_reveal_download_says_what_happens_instead(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path / "cache"))

    def offline(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WorkshopError, match="CDN instead"):
        workshop.fetch_reveal()
    assert workshop.local_reveal() is None
    assert list((tmp_path / "cache" / "reveal.js").iterdir()) == []  # nothing half-written
