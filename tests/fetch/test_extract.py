from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from us43d.fetch.extract import ExtractionError, Limits, extract


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return path


def test_zip_with_nested_zip(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as bundle:
        bundle.writestr("Benign/image/1.jpg", b"jpeg")
    make_zip(tmp_path / "AUL.zip", {"Benign.zip": inner.getvalue(), "readme.txt": b"hi"})
    extract(tmp_path / "AUL.zip", tmp_path / "out")
    assert (tmp_path / "out" / "Benign" / "Benign" / "image" / "1.jpg").read_bytes() == b"jpeg"
    assert not (tmp_path / "out" / "Benign.zip").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    make_zip(tmp_path / "bad.zip", {"good.txt": b"ok", name: b"evil"})
    with pytest.raises(ExtractionError, match="refusing entry"):
        extract(tmp_path / "bad.zip", tmp_path / "out")
    assert not (tmp_path / "out" / "good.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_bomb_is_refused(tmp_path: Path) -> None:
    make_zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * (20 << 20)})  # 20 MiB from about 20 KB
    with pytest.raises(ExtractionError, match="archive bomb"):
        extract(tmp_path / "bomb.zip", tmp_path / "out", Limits(min_ratio_bytes=1))  # at most 200x its 20 KB


def test_a_label_volume_of_zeros_beside_its_images_is_no_bomb(tmp_path: Path) -> None:
    """One member may deflate a thousandfold (a label volume that is mostly zeros, stored as .nii):
    only the archive as a whole, and the download, are held to the ratio."""
    import numpy as np

    speckle = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    label = bytearray(20 << 20)
    label[5000:6000] = b"\1" * 1000
    make_zip(tmp_path / "US_data.zip", {"US/001_US.nii": speckle, "US_thyroid_label/001.nii": bytes(label)})
    extract(tmp_path / "US_data.zip", tmp_path / "out", Limits(min_ratio_bytes=1))
    assert (tmp_path / "out" / "US_thyroid_label" / "001.nii").stat().st_size == 20 << 20
    with pytest.raises(ExtractionError, match="exceed the limit"):
        extract(make_zip(tmp_path / "big.zip", {"a.bin": b"x" * 5000}), tmp_path / "out2", Limits(max_total_bytes=1000))


def test_tar_links_outside_are_refused_and_good_tars_extract(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as bundle:
        link = tarfile.TarInfo("data/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        bundle.addfile(link)
    with pytest.raises(ExtractionError, match="outside the target"):
        extract(tmp_path / "bad.tar.gz", tmp_path / "out")
    with tarfile.open(tmp_path / "good.tar.gz", "w:gz") as bundle:
        info = tarfile.TarInfo("tnscui/JPEGImages/1.jpg")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"abc"))
    extract(tmp_path / "good.tar.gz", tmp_path / "ok")
    assert (tmp_path / "ok" / "tnscui" / "JPEGImages" / "1.jpg").read_bytes() == b"abc"


def test_truncated_archive_is_an_error(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "t.zip", {"a.bin": bytes(range(256)) * 1000})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ExtractionError, match="corrupt or truncated"):
        extract(path, tmp_path / "out")


def test_single_gz_file(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "vol.mha.gz").write_bytes(gzip.compress(b"volume-bytes"))
    extract(tmp_path / "vol.mha.gz", tmp_path / "out")
    assert (tmp_path / "out" / "vol.mha").read_bytes() == b"volume-bytes"


def test_7z_archives_need_and_use_7zip(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from us43d.fetch.extract import seven_zip

    try:
        tool = seven_zip()
    except ExtractionError as exc:
        assert "needs 7-Zip" in str(exc)
        pytest.skip("7-Zip is not installed here")
    (tmp_path / "src" / "Dataset" / "AC").mkdir(parents=True)
    (tmp_path / "src" / "Dataset" / "AC" / "0001.png").write_bytes(b"png")
    subprocess.run(
        [tool, "a", "-bd", "-y", str(tmp_path / "AC_mask.7z"), "Dataset"], cwd=tmp_path / "src", check=True, capture_output=True
    )
    extract(tmp_path / "AC_mask.7z", tmp_path / "out")
    assert (tmp_path / "out" / "Dataset" / "AC" / "0001.png").read_bytes() == b"png"
    assert shutil.which(tool)


def test_kaggle_split_zip_with_change2zip_volume(tmp_path: Path) -> None:
    """CardiacUDC and EchoCP: a Kaggle zip holding X.change2zip + X.z01, X.z02 (Info-ZIP split)."""
    import shutil
    import subprocess

    from us43d.fetch.extract import seven_zip

    if shutil.which("zip") is None:
        pytest.skip("Info-ZIP's zip is needed to make a split archive")
    try:
        seven_zip()
    except ExtractionError:
        pytest.skip("7-Zip is not installed here")
    payload = bytes(range(256)) * 1200  # 300 KB: several volumes of 100 KB
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "clip_image.nii.gz").write_bytes(payload)
    subprocess.run(["zip", "-q", "-0", "-s", "100k", "cardiac.zip", "clip_image.nii.gz"], cwd=tmp_path / "src", check=True)
    (tmp_path / "src" / "cardiac.zip").rename(tmp_path / "src" / "cardiac.change2zip")
    parts = sorted(p.name for p in (tmp_path / "src").iterdir() if p.name.startswith("cardiac"))
    assert parts[0] == "cardiac.change2zip" and len(parts) >= 3 and all(p.startswith("cardiac.z0") for p in parts[1:])
    make_zip(tmp_path / "download.zip", {name: (tmp_path / "src" / name).read_bytes() for name in parts})
    extract(tmp_path / "download.zip", tmp_path / "out")
    assert (tmp_path / "out" / "cardiac" / "clip_image.nii.gz").read_bytes() == payload
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cardiac"]  # volumes cleaned up


def test_multi_volume_rar_is_extracted_once_as_one_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TN3K's repository ships test-image.part1.rar + part2.rar: the first volume is extracted (the
    reader finds the rest beside it), into a folder named after the archive, and every volume goes."""
    from us43d.fetch import extract as extraction

    calls = []

    def fake_rar(archive: Path, target: Path, limits, budget=None) -> None:
        calls.append((archive.name, [v.name for v in extraction.rar_volumes(archive)]))
        (target / "test-image").mkdir(parents=True)
        (target / "test-image" / "0000.jpg").write_bytes(b"jpg")

    monkeypatch.setattr(extraction, "_extract_rar", fake_rar)
    volumes = {"picture/test-image.part1.rar": b"1", "picture/test-image.part2.rar": b"2", "picture/test-mask.rar": b"m"}
    make_zip(tmp_path / "repo.zip", volumes)
    extract(tmp_path / "repo.zip", tmp_path / "out")
    assert sorted(calls) == [
        ("test-image.part1.rar", ["test-image.part1.rar", "test-image.part2.rar"]),
        ("test-mask.rar", ["test-mask.rar"]),
    ]
    assert sorted(p.name for p in (tmp_path / "out" / "picture").iterdir()) == ["test-image", "test-mask"]
    assert (tmp_path / "out" / "picture" / "test-image" / "test-image" / "0000.jpg").read_bytes() == b"jpg"


def test_rar_volume_names() -> None:
    from us43d.fetch.extract import is_split_part

    assert not is_split_part(Path("test-image.part1.rar")) and not is_split_part(Path("test-mask.rar"))
    assert is_split_part(Path("test-image.part2.rar")) and is_split_part(Path("trainval-image.PART06.rar"))
    assert is_split_part(Path("cardiac.z01")) and not is_split_part(Path("cardiac.zip"))


def test_rar_without_a_reader_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from us43d.fetch import extract as extraction

    monkeypatch.setattr(extraction.shutil, "which", lambda tool: None)
    (tmp_path / "masks.rar").write_bytes(b"Rar!\x1a\x07\x01\x00")
    with pytest.raises(ExtractionError, match="needs a RAR reader"):
        extract(tmp_path / "masks.rar", tmp_path / "out")


def test_rar_listing_of_unrar_free_is_read() -> None:
    from us43d.fetch.extract import _unrar_free_names

    listing = (
        "\nunrar-free 0.1.3  Copyright (C) 2004  Ben Asselstine, Jeroen Dekkers\n\n\nRAR archive x.rar\n\n"
        "Pathname/Comment\n                  Size   Date   Time     Attr\n----------------------------------------------\n"
        " test-mask/0000.jpg\n                  3704 03-02-21 13:30   .....A\n"
        " ../evil.jpg\n                  15 03-02-21 13:30   .....A\n"
    )
    assert _unrar_free_names(listing) == ["test-mask/0000.jpg", "../evil.jpg"]


def zip_link(bundle: zipfile.ZipFile, name: str, target: str) -> None:
    """A symbolic link as Info-ZIP stores it: the link text as data, S_IFLNK in the Unix mode."""
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    bundle.writestr(info, target)


def test_zip_symlink_chain_cannot_write_outside(tmp_path: Path) -> None:
    """`y -> p/p/../..` looks inside while `p` does not exist; `p -> .` then makes `y` climb
    two levels, and `y/victim.txt` would overwrite a file outside the target."""
    target = tmp_path / "raw" / "sub" / "stage"
    target.mkdir(parents=True)
    (tmp_path / "raw" / "victim.txt").write_text("original")
    with zipfile.ZipFile(tmp_path / "chain.zip", "w") as bundle:
        zip_link(bundle, "y", "p/p/../..")
        zip_link(bundle, "p", ".")
        bundle.writestr("y/victim.txt", "overwritten")
    with pytest.raises(ExtractionError, match="symbolic link"):
        extract(tmp_path / "chain.zip", target)
    assert (tmp_path / "raw" / "victim.txt").read_text() == "original"
    assert not any(p.is_symlink() for p in target.rglob("*"))


def test_tar_symlink_chain_and_hardlink_through_it_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "raw" / "sub" / "stage"
    target.mkdir(parents=True)
    (tmp_path / "raw" / "secret.txt").write_text("secret")
    with tarfile.open(tmp_path / "chain.tar", "w") as bundle:
        for name, link, kind in (
            ("y", "p/p/../..", tarfile.SYMTYPE),
            ("p", ".", tarfile.SYMTYPE),
            ("copy", "y/secret.txt", tarfile.LNKTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            bundle.addfile(info)
    with pytest.raises(ExtractionError, match="symbolic link"):
        extract(tmp_path / "chain.tar", target)
    assert not (target / "copy").exists() and not any(p.is_symlink() for p in target.rglob("*"))


def test_tar_hardlink_is_a_copy_of_an_earlier_member_only(tmp_path: Path) -> None:
    """A hard link takes its bytes from the archive's own earlier member, never from the disk:
    one to a name the archive does not hold (a file that happens to exist, or /etc/passwd) is refused."""
    with tarfile.open(tmp_path / "good.tar", "w") as bundle:
        info = tarfile.TarInfo("images/a.png")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"png"))
        link = tarfile.TarInfo("masks/a.png")
        link.type, link.linkname = tarfile.LNKTYPE, "images/a.png"
        bundle.addfile(link)
    extract(tmp_path / "good.tar", tmp_path / "ok")
    assert (tmp_path / "ok" / "masks" / "a.png").read_bytes() == b"png"
    (tmp_path / "bad" / "stage").mkdir(parents=True)
    (tmp_path / "bad" / "stage" / "present.txt").write_text("on disk, not in the archive")
    for linkname in ("present.txt", "/etc/passwd", "../secret.txt"):
        with tarfile.open(tmp_path / "bad.tar", "w") as bundle:
            link = tarfile.TarInfo("copy")
            link.type, link.linkname = tarfile.LNKTYPE, linkname
            bundle.addfile(link)
        with pytest.raises(ExtractionError, match="hard link"):
            extract(tmp_path / "bad.tar", tmp_path / "bad" / "stage")
        assert not (tmp_path / "bad" / "stage" / "copy").exists()


def test_many_small_members_are_an_archive_bomb(tmp_path: Path) -> None:
    """300 members of 1 MiB of zeros (no member large enough for the per-member check): ~1000x in all."""
    make_zip(tmp_path / "many.zip", {f"zeros/{i:03d}.bin": b"\0" * (1 << 20) for i in range(300)})
    assert (tmp_path / "many.zip").stat().st_size < 400_000
    with pytest.raises(ExtractionError, match="archive bomb"):
        extract(tmp_path / "many.zip", tmp_path / "out")
    assert sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) == 0


def test_nested_archives_share_one_byte_budget(tmp_path: Path) -> None:
    """Ten nested zips, each within every limit on its own, write more than the download may."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("data.bin", os.urandom(3000))
    make_zip(tmp_path / "outer.zip", {f"part{i}.zip": inner.getvalue() for i in range(10)})
    limits = Limits(max_total_bytes=40_000, max_ratio=1000.0, min_ratio_bytes=1)
    extract(make_zip(tmp_path / "one.zip", {"part0.zip": inner.getvalue()}), tmp_path / "fine", limits)
    with pytest.raises(ExtractionError, match="exceed the limit"):
        extract(tmp_path / "outer.zip", tmp_path / "out", limits)


def test_nested_archive_named_only_by_its_suffix(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as bundle:
        bundle.writestr("a.txt", b"inner")
    make_zip(tmp_path / "outer.zip", {".zip": inner.getvalue(), "dir/.tar.gz": b"not a tar"})
    with pytest.raises(ExtractionError, match="corrupt or truncated"):
        extract(tmp_path / "outer.zip", tmp_path / "out")
    make_zip(tmp_path / "outer2.zip", {".zip": inner.getvalue()})
    extract(tmp_path / "outer2.zip", tmp_path / "out2")
    assert [p.read_bytes() for p in (tmp_path / "out2").rglob("a.txt")] == [b"inner"]


def test_7z_with_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    import subprocess

    from us43d.fetch.extract import seven_zip

    try:
        tool = seven_zip()
    except ExtractionError:
        pytest.skip("7-Zip is not installed here")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.png").write_bytes(b"png")
    (tmp_path / "src" / "up").symlink_to("..")
    subprocess.run(
        [tool, "a", "-snl", "-bd", "-y", str(tmp_path / "l.7z"), "a.png", "up"],
        cwd=tmp_path / "src",
        check=True,
        capture_output=True,
    )
    with pytest.raises(ExtractionError, match="symbolic link"):
        extract(tmp_path / "l.7z", tmp_path / "out")


def test_archives_extracted_by_7zip_count_only_their_own_bytes(tmp_path: Path) -> None:
    """A small 7z extracted beside a large earlier download is not taken for a bomb."""
    import subprocess

    from us43d.fetch.extract import seven_zip

    try:
        tool = seven_zip()
    except ExtractionError:
        pytest.skip("7-Zip is not installed here")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mask.png").write_bytes(os.urandom(2000))
    subprocess.run(
        [tool, "a", "-bd", "-y", str(tmp_path / "small.7z"), "mask.png"], cwd=tmp_path / "src", check=True, capture_output=True
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "earlier.bin").write_bytes(os.urandom(50_000))  # from another archive of the same install
    extract(tmp_path / "small.7z", tmp_path / "out", Limits(max_ratio=2.0, min_ratio_bytes=1))
    assert (tmp_path / "out" / "mask.png").stat().st_size == 2000
