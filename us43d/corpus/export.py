"""`us43d export`: the corpus in the formats other tools load.

- `hf`: the Hugging Face Hub layout that `datasets` loads without a loading script: Parquet
  shards `data/<dataset>/<split>-NNNNN-of-NNNNN.parquet` (the image as `struct<bytes, path>`,
  its instances as a list of category, bbox, area and RLE), one config per source dataset and a
  `default` config over all of them (by file patterns, so nothing is written twice), and a
  README.md whose YAML header lists the configs and whose table gives every dataset's licence,
  citation and whether its licence lets it be redistributed.
- `webdataset`: tar shards `<split>-NNNNNN.tar` (`<id>.png` + `<id>.json` per image) for
  streaming on many nodes, plus `index.parquet`, where each image's bytes lie in which shard, so
  `us43d train --corpus` can read the shards without unpacking them.

Both stream: one dataset split is read at a time from its COCO file, image bytes go straight
into the current shard, and a shard is closed at its size limit, so memory does not grow with
the corpus. Outputs are deterministic: the same corpus gives the same files.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from us43d.corpus.records import SPLITS
from us43d.corpus.writers import IMAGE_SCHEMA
from us43d.errors import CorpusError
from us43d.registry.loader import Registry

MARK = ".us43d-export"
INDEX = "index.parquet"  # of a webdataset export; training reads the shards through it (training/sources.py)
HF_SHARD_BYTES = 500 * 2**20
WEBDATASET_SHARD_BYTES = 2**30
ROW_GROUP_BYTES = 64 * 2**20  # what one Parquet shard holds in memory before writing it out
ROW_GROUP_ROWS = 10_000  # and at most so many rows, however small the images


@dataclass(frozen=True)
class ExportSample:
    image_id: int
    dataset: str
    organ: str
    split: str
    file_name: str
    width: int
    height: int
    source_file: str
    frame: int | None
    group: str
    objects: list[dict[str, Any]]
    path: Path  # the PNG in the corpus
    label: str | None = None  # the image-level class, when the dataset has classes

    def metadata(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in METADATA}


METADATA = (
    "image_id",
    "dataset",
    "organ",
    "split",
    "file_name",
    "width",
    "height",
    "source_file",
    "frame",
    "group",
    "label",
    "objects",
)


@dataclass(frozen=True)
class ExportedDataset:
    dataset: str
    organ: str
    counts: dict[str, int]  # images per split


def _read_coco(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
        document["images"], document["annotations"], document["categories"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"cannot read {path}: {exc}") from exc
    return document


def iter_split(out: Path, dataset: str, split: str) -> Iterator[ExportSample]:
    """The images of one split of one dataset, from its COCO file, in file order."""
    path = out / "coco" / dataset / f"{split}.json"
    if not path.is_file():
        return
    document = _read_coco(path)
    names = {c["id"]: (c["name"], c.get("supercategory", "")) for c in document["categories"]}
    organ = next(iter(names.values()))[1] if names else ""
    objects: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in document["annotations"]:
        objects[a["image_id"]].append(
            {
                "category": names[a["category_id"]][0],
                "category_id": int(a["category_id"]),
                "bbox": [int(v) for v in a["bbox"]],
                "area": int(a["area"]),
                "rle": a["segmentation"]["counts"],
            }
        )
    for image in document["images"]:
        yield ExportSample(
            int(image["id"]),
            dataset,
            organ,
            split,
            image["file_name"],
            int(image["width"]),
            int(image["height"]),
            image["source_file"],
            image["frame"],
            image["group"],
            objects[image["id"]],
            out / "images" / image["file_name"],
            image.get("label"),
        )


def corpus_datasets(out: Path) -> list[str]:
    folder = out / "coco"
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not found:
        raise CorpusError(f"{out} holds no built dataset (no coco/<ID>/ folder); run `us43d build` first")
    return found


def select(
    out: Path,
    registry: Registry,
    datasets: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    only_redistributable: bool = False,
) -> list[str]:
    """The corpus's datasets to export: `datasets` and `exclude` (organ groups) as in training."""
    present = corpus_datasets(out)
    chosen = present
    if datasets:
        wanted = {d.lower() for d in datasets}
        chosen = [d for d in present if d.lower() in wanted]
        missing = sorted(wanted - {d.lower() for d in chosen})
        if missing:
            raise CorpusError(f"{out} holds no dataset {', '.join(missing)}")
    left_out = {o.lower() for o in exclude}
    chosen = [d for d in chosen if _organ(registry, out, d) not in left_out]
    if only_redistributable:
        chosen = [d for d in chosen if redistribution(registry, d) != "not granted"]
    if not chosen:
        raise CorpusError("nothing to export after --datasets / --exclude / --only-redistributable")
    return chosen


def redistribution(registry: Registry, dataset: str) -> str:
    """A dataset the registry does not know (a private one) grants nothing we could vouch for."""
    return registry.get(dataset).redistribution if dataset in registry else "not granted"


def _organ(registry: Registry, out: Path, dataset: str) -> str:
    if dataset in registry:
        return registry.get(dataset).organ
    first = next(iter_split(out, dataset, "train"), None) or next(iter_split(out, dataset, "test"), None)
    return first.organ if first else ""


def claim(target: Path) -> None:
    """An export goes into a new or empty folder, or over an export made before (whose files
    are then replaced); never into a folder of the user's."""
    if target.exists() and not target.is_dir():
        raise CorpusError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        if not (target / MARK).is_file():
            raise CorpusError(f"{target} is not empty and holds no us43d export: choose a new folder")
        import shutil

        for child in target.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    target.mkdir(parents=True, exist_ok=True)
    (target / MARK).write_text("written by us43d export\n")


# --- Hugging Face ---------------------------------------------------------------------------


def _image_fields(*names: str) -> list[pa.Field]:
    """Columns of the corpus's own image table, so an export types them as the corpus does."""
    return [IMAGE_SCHEMA.field(name) for name in names]


OBJECT_TYPE = pa.struct(
    [
        ("category", pa.string()),
        ("category_id", pa.int32()),
        ("bbox", pa.list_(pa.int32())),
        ("area", pa.int64()),
        ("rle", pa.string()),
    ]
)
HF_SCHEMA = pa.schema(
    [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        *_image_fields("image_id", "dataset", "organ", "file_name", "width", "height", "source_file", "frame", "group", "label"),
        ("objects", pa.list_(OBJECT_TYPE)),
    ]
)


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


# How `datasets` reads the columns back (its own metadata key): the image as an Image feature.
HF_FEATURES = {
    "image": {"_type": "Image"},
    "image_id": _value("int64"),
    "dataset": _value("string"),
    "organ": _value("string"),
    "file_name": _value("string"),
    "width": _value("int32"),
    "height": _value("int32"),
    "source_file": _value("string"),
    "frame": _value("int32"),
    "group": _value("string"),
    "label": _value("string"),
    "objects": [
        {
            "category": _value("string"),
            "category_id": _value("int32"),
            "bbox": [_value("int32")],
            "area": _value("int64"),
            "rle": _value("string"),
        }
    ],
}
HF_METADATA = {b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()}


class ParquetShards:
    """Parquet files of about `shard_bytes` each, named `<prefix>-NNNNN-of-NNNNN.parquet` once the
    count is known; rows are buffered up to a row group, so memory stays bounded."""

    def __init__(self, folder: Path, prefix: str, shard_bytes: int) -> None:
        self.folder, self.prefix, self.shard_bytes = folder, prefix, shard_bytes
        self.done: list[Path] = []
        self.rows: list[dict[str, Any]] = []
        self.buffered = self.written = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, row: dict[str, Any], size: int) -> None:
        self.rows.append(row)
        self.buffered += size
        if self.buffered >= min(ROW_GROUP_BYTES, self.shard_bytes) or len(self.rows) >= ROW_GROUP_ROWS:
            self._flush()
        if self.written >= self.shard_bytes:
            self._close_shard()

    def _flush(self) -> None:
        if not self.rows:
            return
        if self.writer is None:
            path = self.folder / f".{self.prefix}-{len(self.done):05d}.tmp"
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, HF_SCHEMA.with_metadata(HF_METADATA))
            self.done.append(path)
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=HF_SCHEMA))
        self.written += self.buffered
        self.rows, self.buffered = [], 0

    def _close_shard(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer, self.written = None, 0

    def close(self) -> list[Path]:
        self._close_shard()
        final = []
        for index, path in enumerate(self.done):
            name = self.folder / f"{self.prefix}-{index:05d}-of-{len(self.done):05d}.parquet"
            os.replace(path, name)
            final.append(name)
        return final


def _hf_row(sample: ExportSample, data: bytes) -> dict[str, Any]:
    row = {k: v for k, v in sample.metadata().items() if k != "split"}
    row["image"] = {"bytes": data, "path": sample.file_name}
    return row


def export_hf(
    out: Path, target: Path, chosen: Sequence[str], registry: Registry, shard_bytes: int = HF_SHARD_BYTES
) -> list[ExportedDataset]:
    claim(target)
    exported = []
    for dataset in chosen:
        counts = {}
        for split in SPLITS:
            shards = ParquetShards(target / "data" / dataset, split, shard_bytes)
            count = 0
            for sample in iter_split(out, dataset, split):
                data = _png(sample)
                shards.add(_hf_row(sample, data), len(data))
                count += 1
            shards.close()
            if count:
                counts[split] = count
        exported.append(ExportedDataset(dataset, _organ(registry, out, dataset), counts))
    (target / "README.md").write_text(dataset_card(exported, registry), encoding="utf-8")
    return exported


def _png(sample: ExportSample) -> bytes:
    try:
        return sample.path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read {sample.path}: {exc.strerror or exc} (run `us43d validate`)") from exc


def dataset_card(exported: Sequence[ExportedDataset], registry: Registry) -> str:
    """README.md: the YAML header the Hub reads (configs and their files) and a table of
    licences and citations, the terms every user of the export must keep to."""
    splits = [s for s in SPLITS if any(s in e.counts for e in exported)]
    configs = [
        {
            "config_name": "default",
            "data_files": [{"split": s, "path": f"data/*/{s}-*.parquet"} for s in splits],
            "default": True,
        }
    ] + [
        {"config_name": e.dataset, "data_files": [{"split": s, "path": f"data/{e.dataset}/{s}-*.parquet"} for s in e.counts]}
        for e in exported
    ]
    header = {"license": "other", "pretty_name": "US-43d corpus (us43d export)", "configs": configs}
    rows = []
    for e in exported:
        entry = registry.get(e.dataset) if e.dataset in registry else None
        licence = entry.licence if entry else "unknown (not in the registry)"
        citation = f"[{entry.citation.doi}](https://doi.org/{entry.citation.doi})" if entry and entry.citation.doi else ""
        home = f"<{entry.homepage}>" if entry and entry.homepage else ""
        counts = ", ".join(f"{s} {n}" for s, n in e.counts.items())
        granted = redistribution(registry, e.dataset)
        rows.append(f"| {e.dataset} | {e.organ} | {counts} | {licence} | {granted} | {citation} | {home} |")
    restricted = [
        e.dataset for e in exported if e.dataset not in registry or registry.get(e.dataset).redistribution == "not granted"
    ]
    warning = (
        f"\n**Not to be redistributed**: {', '.join(restricted)}. Their licences do not grant redistribution (or are "
        "unknown): keep this export private, or export again with `--only-redistributable`.\n"
        if restricted
        else ""
    )
    return (
        "---\n"
        + yaml.safe_dump(header, sort_keys=False)
        + "---\n\n# US-43d corpus\n\nWritten by `us43d export --format hf`. One config per source dataset, and "
        "`default` over all. Every image carries its source dataset, source file, group and image-level class "
        "(`label`, null where the dataset gives none); instances are COCO RLE "
        "(`objects.rle`, size = height x width) with their category and box (x, y, w, h).\n"
        + warning
        + "\n| dataset | organ | images | licence | redistribution | citation | homepage |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nCite every dataset you use; the licence of each applies to its images and annotations.\n"
    )


# --- WebDataset -----------------------------------------------------------------------------

INDEX_SCHEMA = pa.schema(
    [
        *_image_fields("image_id", "dataset", "organ", "split", "file_name", "width", "height"),
        ("shard", pa.string()),
        ("offset", pa.int64()),  # where the PNG's bytes start in the shard
        ("size", pa.int64()),
        ("objects", pa.list_(OBJECT_TYPE)),
    ]
)


class _RowGroups:
    """One Parquet file written a row group at a time, so the index of a large export is never
    held whole in memory."""

    ROWS = 50_000

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema, self.rows = path, schema, []
        self.writer = pq.ParquetWriter(path.with_name(f".{path.name}.tmp"), schema)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()
        os.replace(self.path.with_name(f".{self.path.name}.tmp"), self.path)


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


class TarShard:
    """A plain tar file written member by member. tarfile keeps every member it wrote in memory;
    this keeps nothing, and knows where each member's data starts. Members have fixed metadata,
    so the same corpus gives the same bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = path.open("wb")

    @property
    def size(self) -> int:
        return self.handle.tell()

    def add(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
        self.handle.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        start = self.handle.tell()
        self.handle.write(data)
        self.handle.write(b"\0" * (-len(data) % tarfile.BLOCKSIZE))
        return start

    def close(self) -> None:
        self.handle.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
        self.handle.write(b"\0" * (-self.handle.tell() % tarfile.RECORDSIZE))
        self.handle.close()


def export_webdataset(
    out: Path, target: Path, chosen: Sequence[str], registry: Registry, shard_bytes: int = WEBDATASET_SHARD_BYTES
) -> list[ExportedDataset]:
    claim(target)
    index = _RowGroups(target / INDEX, INDEX_SCHEMA)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for split in SPLITS:
        number, archive = 0, None
        for dataset in chosen:
            for sample in iter_split(out, dataset, split):
                if archive is None or archive.size >= shard_bytes:
                    if archive is not None:
                        archive.close()
                    archive = TarShard(target / shard_name(split, number))
                    number += 1
                data = _png(sample)
                key = f"{sample.image_id:014x}"
                offset = archive.add(f"{key}.png", data)
                archive.add(f"{key}.json", json.dumps(sample.metadata(), sort_keys=True).encode())
                row = {k: getattr(sample, k) for k in ("image_id", "dataset", "organ", "split", "file_name", "width", "height")}
                index.add({**row, "shard": archive.path.name, "offset": offset, "size": len(data), "objects": sample.objects})
                counts[dataset][split] = counts[dataset].get(split, 0) + 1
        if archive is not None:
            archive.close()
    index.close()
    return [ExportedDataset(d, _organ(registry, out, d), counts[d]) for d in chosen]
