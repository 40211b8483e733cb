"""`us43d show`: the HTML report and single overlays, checked by their contents and, where a
headless browser is installed, by rendering them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import build, ellipse, make_stu_hospital, private_entry, speckle_image, write_entries, write_png
from us43d.cli import app
from us43d.corpus.overlay import CLEANED
from us43d.corpus.report import choose, write_item, write_report
from us43d.errors import CorpusError


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Two datasets: a cleaned one whose lesions run onto a black frame, with a failing item, and
    STU-Hospital as released (few images against the 42 expected)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "raw" / "Framed" / "Hospital"
    for number in range(1, 9):
        image = speckle_image(rng, (64, 64))
        image[:, :12] = 0  # the scan starts at column 12
        write_png(folder / f"Test_Image_{number}.png", image)
        write_png(folder / f"mask_{number}.png", (ellipse((64, 64), (32, 10 + number), (8, 8)) * 255).astype(np.uint8))
    (folder / "mask_9.png").write_bytes(b"not a png")
    write_png(folder / "Test_Image_9.png", speckle_image(rng, (64, 64)))
    registry = write_entries(
        tmp_path / "registry", private_entry("Framed", min_area=1, cleaning={"background_overlap": True}, expected={"images": 9})
    )
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=4)
    build(tmp_path / "raw", tmp_path / "out", ["Framed", "STU-Hospital"], registry_dirs=[registry])
    return tmp_path / "out"


def test_the_report_shows_every_dataset_its_worst_cases_and_its_failures(corpus: Path, tmp_path: Path) -> None:
    index = write_report(corpus, tmp_path / "report")
    text = index.read_text()
    assert "Framed.html" in text and "STU-Hospital.html" in text
    assert "found 4 of 42 expected images" in text or "registry expects 42" in text  # the flag a reader needs first
    page = (tmp_path / "report" / "Framed.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 8 and all((tmp_path / "report" / src).is_file() for src in images)
    assert "most pixels cleaned" in page and "smallest instance" in page and "largest instance" in page
    assert "cannot decode image" in page and "mask_9.png" in page  # the failure, with its file
    assert page.count("<svg") == 2 and "removed by cleaning" in page
    first = np.asarray(Image.open(tmp_path / "report" / images[0]).convert("RGB"))
    assert (first == CLEANED).all(axis=2).any()  # the most-cleaned image shows what cleaning took
    for src in re.findall(r'(?:src|href)="([^"]+)"', text):
        assert (tmp_path / "report" / src).is_file(), src


def test_the_report_is_the_same_every_time_and_only_replaces_itself(corpus: Path, tmp_path: Path) -> None:
    first = tmp_path / "a"
    write_report(corpus, first)
    write_report(corpus, tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    write_report(corpus, first, ["STU-Hospital"])  # rerun into its own folder: rewritten whole
    assert not (first / "Framed.html").exists() and (first / "STU-Hospital.html").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(CorpusError, match="holds no us43d report"):
        write_report(corpus, mine)
    assert (mine / "notes.txt").read_text() == "my notes"


def test_worst_cases_are_chosen_first_and_deterministically(corpus: Path) -> None:
    from us43d.corpus.report import load_views

    (view,) = load_views(corpus, ["Framed"])
    picks = choose(view.records, count=6)
    keys = [record.key for _, record in picks]
    area = {r.key: [a.area for a in r.annotations] for r in view.records}
    assert picks[0][0].startswith("most pixels cleaned")
    assert min(area, key=lambda k: (min(area[k]), k)) in keys and max(area, key=lambda k: (max(area[k]), k)) in keys
    assert picks == choose(list(reversed(view.records)), count=6)


def test_one_overlay_for_a_bug_report(corpus: Path, tmp_path: Path) -> None:
    target = write_item(corpus, "Framed/Test_Image_1", tmp_path / "one.png")
    pixels = np.asarray(Image.open(target).convert("RGB"))
    assert pixels.shape == (64, 64, 3) and (pixels == CLEANED).all(axis=2).any()
    with pytest.raises(CorpusError, match="exists"):
        write_item(corpus, "Framed/Test_Image_1", target)
    with pytest.raises(CorpusError, match="no image 'Framed/nope'"):
        write_item(corpus, "Framed/nope", tmp_path / "two.png")
    result = CliRunner().invoke(
        app, ["show", str(corpus), "--item", "STU-Hospital/Test_Image_2", "--out", str(tmp_path / "c.png")]
    )
    assert result.exit_code == 0 and (tmp_path / "c.png").is_file()
    assert CliRunner().invoke(app, ["show", str(tmp_path / "nothing")]).exit_code == 2


def _browser() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless browser installed")
def test_the_report_renders_in_a_headless_browser(corpus: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    index = write_report(corpus, tmp_path / "report")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_browser(), args=["--no-sandbox"])
        page = browser.new_page()
        messages: list[str] = []
        page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: messages.append(f"error: {error}"))
        for path in [index, *sorted(index.parent.glob("*.html"))]:
            page.goto(path.as_uri())
            broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
            assert broken == 0, path.name
            assert page.locator("h1").count() == 1
        browser.close()
    assert messages == []
