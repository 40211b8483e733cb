"""`us43d train --corpus SHARDS/`: training and validation read a webdataset export in place,
see exactly what they see in the built corpus, and refuse a damaged or hostile index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from training.conftest import tiny_config
from us43d.cli import app
from us43d.corpus.export import export_webdataset
from us43d.errors import CorpusError
from us43d.registry import Registry
from us43d.training.data import load_selection
from us43d.training.train import train
from us43d.training.validation import read_val_files

runner = CliRunner()


@pytest.fixture(scope="module")
def shards(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("wds") / "shards"
    export_webdataset(demo_corpus, target, ["BUS-BRA"], Registry.load(), shard_bytes=40_000)  # several shards per split
    assert len(list(target.glob("train-*.tar"))) > 1
    return target


def copy_of(shards: Path, tmp_path: Path) -> Path:
    target = tmp_path / "shards"
    shutil.copytree(shards, target)
    return target


def rewrite_index(folder: Path, change) -> None:
    """The index with one column of the first row changed, as a damaged or hostile file would be."""
    table = pq.read_table(folder / "index.parquet")
    rows = table.to_pylist()
    change(rows[0])
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), folder / "index.parquet")


def test_the_shards_give_the_corpus_entries_and_pixels(demo_corpus: Path, shards: Path) -> None:
    built, exported = load_selection(demo_corpus, "train"), load_selection(shards, "train")
    assert exported.entries == built.entries and len(built.entries) > 10
    assert exported.counts == built.counts
    for entry in built.entries:
        np.testing.assert_array_equal(exported.images.read(entry.file_name), built.images.read(entry.file_name))


def test_an_excluded_organ_and_a_dataset_filter_work_on_shards(shards: Path) -> None:
    assert load_selection(shards, "train", exclude=("breast",)).entries == []
    assert load_selection(shards, "train", exclude=("breast",)).excluded["BUS-BRA"] > 0
    assert load_selection(shards, "train", datasets=["bus-bra"]).entries


def test_validation_reads_the_val_split_from_the_index(demo_corpus: Path, shards: Path) -> None:
    built, built_images = read_val_files(demo_corpus, ["BUS-BRA"], None, 0)
    exported, exported_images = read_val_files(shards, ["BUS-BRA"], None, 0)
    assert built.keys() == exported.keys() == {"BUS-BRA"}
    kept = ("id", "file_name", "width", "height", "name")
    for key in ("images", "categories"):
        assert [{k: v for k, v in i.items() if k in kept} for i in built["BUS-BRA"][key]] == [
            {k: v for k, v in i.items() if k in kept} for i in exported["BUS-BRA"][key]
        ]
    fields = ("image_id", "category_id", "bbox", "area", "segmentation")
    assert [{k: a[k] for k in fields} for a in built["BUS-BRA"]["annotations"]] == [
        {k: a[k] for k in fields} for a in exported["BUS-BRA"]["annotations"]
    ]
    name = built["BUS-BRA"]["images"][0]["file_name"]
    np.testing.assert_array_equal(exported_images.read(name), built_images.read(name))


def test_training_on_shards_gives_the_weights_of_training_on_the_corpus(demo_corpus: Path, shards: Path, tmp_path: Path) -> None:
    config = tiny_config(iters=2, val_every=2)
    train(demo_corpus, tmp_path / "built", config)
    train(shards, tmp_path / "exported", config)
    built = torch.load(tmp_path / "built" / "model.pth", weights_only=True)
    exported = torch.load(tmp_path / "exported" / "model.pth", weights_only=True)
    assert built.keys() == exported.keys()
    for key in built:
        torch.testing.assert_close(exported[key], built[key], rtol=0, atol=0, msg=key)
    records = [json.loads(line) for line in (tmp_path / "exported" / "metrics.jsonl").read_text().splitlines()]
    built_records = [json.loads(line) for line in (tmp_path / "built" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val"] for r in records if "val" in r] == [r["val"] for r in built_records if "val" in r] != []


def test_the_command_trains_on_a_shard_folder(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--corpus", str(shards), "--out", str(run), "--model", "tiny", "--init", "none", "--workers", "0"]
    result = runner.invoke(app, [*args, "--iters", "2", "--batch-size", "2", "--global-batch", "2", "--val-every", "2"])
    assert result.exit_code == 0, result.output
    assert (run / "model.pth").is_file() and (run / "best.pth").is_file()
    assert json.loads((run / "run.json").read_text())["datasets_used"] == {
        "BUS-BRA": len(load_selection(shards, "train").entries)
    }


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda row: row.update(shard="../corpus/train-000000.tar"), "names the shard"),
        (lambda row: row.update(shard="train-999999.tar"), "is missing"),
        (lambda row: row.update(offset=10**12), "which holds"),
        (lambda row: row.update(size=-5), "lies at bytes"),
        (lambda row: row.update(objects=[{**row["objects"][0], "bbox": [1, 2]}]), "does not hold 4 numbers"),
        (lambda row: row.update(objects=[{**row["objects"][0], "rle": None}]), "lacks rle"),
    ],
)
def test_a_damaged_or_hostile_index_is_refused_naming_it(shards: Path, tmp_path: Path, change, words: str) -> None:
    folder = copy_of(shards, tmp_path)
    rewrite_index(folder, change)
    with pytest.raises(CorpusError, match=words) as caught:
        selection = load_selection(folder, "train")
        for entry in selection.entries:
            selection.images.read(entry.file_name)
    assert "index.parquet" in str(caught.value)


def test_a_shard_that_is_a_link_is_refused(shards: Path, tmp_path: Path) -> None:
    folder = copy_of(shards, tmp_path)
    first = sorted(folder.glob("train-*.tar"))[0]
    outside = tmp_path / "elsewhere.tar"
    first.rename(outside)
    first.symlink_to(outside)
    with pytest.raises(CorpusError, match="not a plain file"):
        load_selection(folder, "train")


def test_an_index_pointing_at_other_bytes_is_named_when_read(shards: Path, tmp_path: Path) -> None:
    folder = copy_of(shards, tmp_path)
    first = pq.read_table(folder / "index.parquet").to_pylist()[0]
    assert first["split"] == "train" and first["objects"]
    # the JSON member that follows the PNG: inside the shard, but not the image
    json_data = first["offset"] + (first["size"] + 511) // 512 * 512 + 512
    rewrite_index(folder, lambda row: row.update(offset=json_data))
    selection = load_selection(folder, "train")
    entry = next(e for e in selection.entries if e.image_id == first["image_id"])
    with pytest.raises(CorpusError, match=r"train-000000\.tar \(bytes") as caught:
        selection.images.read(entry.file_name)
    assert entry.file_name in str(caught.value)


def test_the_command_refuses_a_hostile_index_without_a_traceback(shards: Path, tmp_path: Path) -> None:
    folder = copy_of(shards, tmp_path)
    rewrite_index(folder, lambda row: row.update(shard="/etc/passwd"))
    run = tmp_path / "run"
    args = ["train", "--corpus", str(folder), "--out", str(run), "--model", "tiny", "--init", "none", "--workers", "0"]
    result = runner.invoke(app, [*args, "--iters", "1", "--global-batch", "2", "--batch-size", "2", "--val-every", "0"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output and "index.parquet" in result.output
    assert not (run / "model.pth").exists()
