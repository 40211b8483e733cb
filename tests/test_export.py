"""`us43d export`: the corpus as the Hugging Face Hub layout (loaded back with `datasets`) and
as WebDataset tar shards (read back through their index)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from helpers import build, load_json, make_stu_hospital, private_entry, write_entries
from us43d.cli import app
from us43d.corpus.export import export_hf, export_webdataset, select
from us43d.errors import CorpusError
from us43d.registry import Registry


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Registry]:
    """STU-Hospital (licence not granting redistribution) and a private CC BY set of another organ."""
    make_stu_hospital(tmp_path / "raw" / "STU-Hospital", n=30, wrapper=None)
    make_stu_hospital(tmp_path / "raw" / "OpenSet", n=12, seed=5, wrapper=None)
    folder = write_entries(
        tmp_path / "registry", private_entry("OpenSet", organ="thyroid", licence="CC BY 4.0", categories=["breast tumour"])
    )
    registry = Registry.load([folder])
    build(tmp_path / "raw", tmp_path / "out", ["STU-Hospital", "OpenSet"], registry_dirs=[folder])
    return tmp_path / "out", registry


def _coco_rows(out: Path, dataset: str, split: str) -> dict[int, tuple[str, list]]:
    path = out / "coco" / dataset / f"{split}.json"
    if not path.exists():
        return {}
    doc = load_json(path)
    objects: dict[int, list] = {}
    for a in doc["annotations"]:
        objects.setdefault(a["image_id"], []).append((a["bbox"], a["segmentation"]["counts"]))
    return {i["id"]: (i["file_name"], objects[i["id"]]) for i in doc["images"]}


def test_hf_export_loads_with_datasets_and_equals_the_corpus(corpus: tuple[Path, Registry], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out, registry = corpus
    export_hf(out, tmp_path / "hf", select(out, registry), registry, shard_bytes=20_000)
    shards = sorted(p.name for p in (tmp_path / "hf" / "data" / "STU-Hospital").glob("train-*.parquet"))
    assert len(shards) > 1 and shards[-1].endswith(f"-of-{len(shards):05d}.parquet")  # small shards: several
    for config, names in (("STU-Hospital", ["STU-Hospital"]), ("default", ["OpenSet", "STU-Hospital"])):
        loaded = datasets.load_dataset(str(tmp_path / "hf"), config)
        for split in loaded:
            expected = {k: v for name in names for k, v in _coco_rows(out, name, split).items()}
            rows = {row["image_id"]: row for row in loaded[split]}
            assert set(rows) == set(expected)
            for image_id, (file_name, objects) in expected.items():
                row = rows[image_id]
                assert row["file_name"] == file_name
                assert [(o["bbox"], o["rle"]) for o in row["objects"]] == objects
                png = np.asarray(Image.open(out / "images" / file_name))
                np.testing.assert_array_equal(np.asarray(row["image"]), png)
    card = (tmp_path / "hf" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in header["configs"]} == {"default", "STU-Hospital", "OpenSet"}
    assert "**Not to be redistributed**: STU-Hospital" in card and "| OpenSet | thyroid |" in card


def test_only_redistributable_and_the_filters_of_training(corpus: tuple[Path, Registry], tmp_path: Path) -> None:
    out, registry = corpus
    assert select(out, registry, only_redistributable=True) == ["OpenSet"]
    assert select(out, registry, exclude=["thyroid"]) == ["STU-Hospital"]
    assert select(out, registry, datasets=["openset"]) == ["OpenSet"]
    with pytest.raises(CorpusError, match="nothing to export"):
        select(out, registry, datasets=["STU-Hospital"], only_redistributable=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(CorpusError, match="holds no us43d export"):
        export_hf(out, mine, ["OpenSet"], registry)
    assert (mine / "keep.txt").read_text() == "mine"


def test_webdataset_shards_hold_every_image_and_their_index_says_where(corpus: tuple[Path, Registry], tmp_path: Path) -> None:
    out, registry = corpus
    export_webdataset(out, tmp_path / "wds", select(out, registry), registry, shard_bytes=30_000)
    shards = sorted((tmp_path / "wds").glob("train-*.tar"))
    assert len(shards) > 1
    index = pq.read_table(tmp_path / "wds" / "index.parquet").to_pylist()
    expected = {k for name in ("STU-Hospital", "OpenSet") for s in ("train", "val", "test") for k in _coco_rows(out, name, s)}
    assert {row["image_id"] for row in index} == expected
    for row in index:
        with (tmp_path / "wds" / row["shard"]).open("rb") as handle:
            handle.seek(row["offset"])
            data = handle.read(row["size"])
        assert data == (out / "images" / row["file_name"]).read_bytes()
    with tarfile.open(shards[0]) as archive:
        names = archive.getnames()
        assert names[0].endswith(".png") and names[1] == names[0].replace(".png", ".json")
        meta = json.loads(archive.extractfile(names[1]).read())
        assert meta["split"] == "train" and meta["objects"] and Image.open(io.BytesIO(archive.extractfile(names[0]).read()))


def test_exports_are_the_same_every_time(corpus: tuple[Path, Registry], tmp_path: Path) -> None:
    out, registry = corpus

    def digest(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    for name, writer in (("hf", export_hf), ("wds", export_webdataset)):
        writer(out, tmp_path / f"{name}1", ["OpenSet", "STU-Hospital"], registry)
        writer(out, tmp_path / f"{name}2", ["OpenSet", "STU-Hospital"], registry)
        assert digest(tmp_path / f"{name}1") == digest(tmp_path / f"{name}2")


def test_cli_export(corpus: tuple[Path, Registry], tmp_path: Path) -> None:
    out, _ = corpus
    result = CliRunner().invoke(
        app, ["export", str(out), str(tmp_path / "x"), "--format", "webdataset", "--datasets", "STU-Hospital"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "index.parquet").is_file()
    bad = CliRunner().invoke(app, ["export", str(out), str(tmp_path / "y"), "--format", "zip"])
    assert bad.exit_code == 2 and "hf or webdataset" in bad.output
