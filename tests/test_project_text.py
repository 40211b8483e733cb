"""The project's own text files: no merge left half done."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg"}
MARKERS = ("<<<<<<< ", ">>>>>>> ")


def test_no_file_holds_merge_conflict_markers() -> None:
    folders = [ROOT / name for name in ("us43d", "tests", "benchmarks", ".ci")]
    files = [p for p in ROOT.iterdir() if p.is_file()] + [p for folder in folders if folder.is_dir() for p in folder.rglob("*")]
    found = []
    for path in files:
        if path.suffix not in TEXT or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(keepends=True), start=1):
            if line.startswith(MARKERS):
                found.append(f"{path.relative_to(ROOT)}:{number}")
    assert not found, f"merge conflict markers in {found}"
