"""`us43d show`: a static HTML report of a built corpus, to look at before training on it.

One page per dataset and an index, self-contained and readable offline (no script, no remote
file). Per dataset: overlays of a deterministic choice of images that always includes the
worst cases (most pixels cleaned, smallest and largest instances, most instances per image),
counts per split against what the registry expects, histograms of instance area and of
instances per image, the files that failed grouped by reason, and the dataset's problems. The
index flags what a reader should look at first. Only the chosen images are decoded, so a report
of a large corpus takes seconds.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from us43d.corpus.overlay import CLEANED, category_colour, write_overlay
from us43d.corpus.records import ImageRecord
from us43d.errors import CorpusError

MARK = ".us43d-report"  # a report folder carries it: `show` replaces only folders it made
THUMBNAIL = 320
SAMPLES = 24
# What makes the index flag a dataset for a reader's attention.
FEW_IMAGES = 0.5  # found below this share of what the registry expects
MUCH_CLEANING = 0.05  # more than this share of instances lost pixels to cleaning
MANY_ERRORS = 0.05  # more than this share of items could not be converted


@dataclass
class DatasetView:
    dataset: str
    organ: str
    categories: tuple[str, ...]
    records: list[ImageRecord]
    report: dict[str, Any]
    splits: dict[int, str] = field(default_factory=dict)  # image id -> split

    def flags(self) -> list[str]:
        r = self.report
        found, expected = r.get("found") or 0, r.get("expected")
        instances = sum(len(x.annotations) for x in self.records) or 1
        flags = [p["reason"] for p in r.get("problems", [])]
        if expected and found < FEW_IMAGES * expected and not flags:
            flags.append(f"found {found} of {expected} expected {r.get('expected_unit', 'images')}")
        if r.get("cleaned_instances", 0) > MUCH_CLEANING * instances:
            flags.append(f"cleaning touched {r['cleaned_instances']} of {instances} instances")
        if len(r.get("errors", [])) > MANY_ERRORS * max(r.get("items", 0), 1):
            flags.append(f"{len(r['errors'])} of {r.get('items', 0)} items could not be converted")
        return flags


def _cleaned_pixels(record: ImageRecord) -> int:
    if not record.cleaned_rle:
        return 0
    return int(mask_utils.area({"size": [record.height, record.width], "counts": record.cleaned_rle.encode()}))


def _stable(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def choose(records: Sequence[ImageRecord], count: int = SAMPLES) -> list[tuple[str, ImageRecord]]:
    """Which images to draw, and why: the worst cases first, then an even spread chosen by a
    hash of their keys (the same corpus always gives the same report). An image chosen for
    several reasons says them all."""
    reasons: dict[str, list[str]] = {}
    records_by_key = {r.key: r for r in records}

    def take(reason: str, candidates: Sequence[ImageRecord], n: int) -> None:
        for record in candidates[:n]:
            reasons.setdefault(record.key, []).append(reason)

    cleaned = [r for r in records if r.cleaned_rle]
    take("most pixels cleaned", sorted(cleaned, key=lambda r: (-_cleaned_pixels(r), r.key)), 4)
    with_instances = [r for r in records if r.annotations]
    take("smallest instance", sorted(with_instances, key=lambda r: (min(a.area for a in r.annotations), r.key)), 2)
    take("largest instance", sorted(with_instances, key=lambda r: (-max(a.area for a in r.annotations), r.key)), 2)
    take("most instances", sorted(with_instances, key=lambda r: (-len(r.annotations), r.key)), 2)
    spread = [r for r in sorted(records, key=lambda r: _stable(r.key)) if r.key not in reasons]
    take("sample", spread, max(count - len(reasons), 0))
    return [(", ".join(why), records_by_key[key]) for key, why in list(reasons.items())[:count]]


def _histogram_svg(values: Sequence[float], title: str, log: bool = False, bins: int = 20) -> str:
    """A small bar chart as inline SVG: no plotting library, nothing to load."""
    width, height, pad = 360, 140, 24
    if not values:
        return f'<p class="muted">{html.escape(title)}: nothing to show</p>'
    data = [math.log10(max(v, 1)) for v in values] if log else list(values)
    low, high = min(data), max(data)
    span = (high - low) or 1.0
    counts = Counter(min(int((v - low) / span * bins), bins - 1) for v in data)
    top = max(counts.values())
    bar = (width - 2 * pad) / bins
    rects = "".join(
        f'<rect x="{pad + i * bar:.1f}" y="{height - pad - counts.get(i, 0) / top * (height - 2 * pad):.1f}" '
        f'width="{bar - 1:.1f}" height="{counts.get(i, 0) / top * (height - 2 * pad):.1f}" fill="#4a7bb7"/>'
        for i in range(bins)
    )

    def label(v: float) -> str:
        return f"{10**v:,.0f}" if log else f"{v:,.0f}"

    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">{rects}'
        f'<text x="{pad}" y="{height - 6}" font-size="10">{label(low)}</text>'
        f'<text x="{width - pad}" y="{height - 6}" font-size="10" text-anchor="end">{label(high)}</text>'
        f'<text x="{pad}" y="12" font-size="10">{top} max per bar</text></svg>'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def _reason_group(reason: str) -> str:
    """Reasons that differ only in numbers or quoted names are one kind of failure."""
    return re.sub(r"'[^']*'|\d+", "…", reason)


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;width:320px}
figcaption{font-size:12px;word-break:break-all}.flag{color:#b00020}.muted{color:#777}
img{max-width:320px;border:1px solid #ddd}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


def _legend(view: DatasetView) -> str:
    items = "".join(
        f'<span style="background:rgb{category_colour(view.categories, c)}"></span>{html.escape(c)}' for c in view.categories
    )
    return f'<p class="legend">{items}<span style="background:rgb{CLEANED}"></span>removed by cleaning</p>'


def _figures(out: Path, view: DatasetView, target: Path) -> str:
    e = html.escape
    figures = []
    for index, (why, record) in enumerate(choose(view.records)):
        name = f"{index:02d}.png"
        write_overlay(out, record, view.categories, target / "img" / view.dataset / name, THUMBNAIL)
        where = e(record.source_file) + ("" if record.frame is None else f" frame {record.frame}")
        instances = e(", ".join(f"{a.category} {a.area} px" for a in record.annotations))
        split = e(view.splits.get(record.image_id, "?"))
        figures.append(
            f'<figure><img src="img/{e(view.dataset)}/{name}" alt="{e(record.key)}" width="{THUMBNAIL}">'
            f"<figcaption><b>{e(why)}</b>: {e(record.key)} ({split})<br>{where}<br>{instances}</figcaption></figure>"
        )
    return f'{_legend(view)}<div class="grid">{"".join(figures)}</div>'


def _counts(view: DatasetView) -> str:
    r = view.report
    found = str(r.get("found", 0))
    if r.get("expected"):
        found += f" of {r['expected']} {r.get('expected_unit', 'images')} expected"
    rows = [
        ("found in RAW", found),
        ("images in the corpus", len(view.records)),
        ("instances", sum(len(x.annotations) for x in view.records)),
        ("unannotated in the release", r.get("unannotated", 0)),
        ("images without an instance", r.get("dropped_without_instances", 0)),
        ("cleaned", f"{r.get('cleaned_pixels', 0)} px from {r.get('cleaned_instances', 0)} instances"),
        *sorted(Counter(f"in {view.splits.get(x.image_id, '?')}" for x in view.records).items()),
    ]
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>"


def _errors(view: DatasetView) -> str:
    e = html.escape
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for error in view.report.get("errors", []):
        groups[_reason_group(error["reason"])].append(error)
    if not groups:
        return "<p>none</p>"
    rows = "".join(
        f"<tr><td>{len(group)}</td><td>{e(group[0]['reason'])}</td><td>{'<br>'.join(e(g['file']) for g in group[:5])}</td></tr>"
        for _, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    )
    return f"<table><tr><th>count</th><th>reason (first of its kind)</th><th>files</th></tr>{rows}</table>"


def _dataset_page(out: Path, view: DatasetView, target: Path) -> str:
    e = html.escape
    areas = [a.area for rec in view.records for a in rec.annotations]
    per_image = [len(rec.annotations) for rec in view.records]
    flags = "".join(f'<li class="flag">{e(f)}</li>' for f in view.flags())
    return _page(
        f"{view.dataset} — us43d corpus report",
        f'<p><a href="index.html">all datasets</a></p><h1>{e(view.dataset)}</h1>'
        f"<p>organ {e(view.organ)}; categories {e(', '.join(view.categories))}</p>"
        f"{'<ul>' + flags + '</ul>' if flags else ''}"
        f"<h2>Counts</h2>{_counts(view)}<h2>Images</h2>{_figures(out, view, target)}"
        f'<h2>Distributions</h2><div class="grid">{_histogram_svg(areas, "instance area (px, log scale)", log=True)}'
        f"{_histogram_svg(per_image, 'instances per image')}</div>"
        f"<h2>Files that could not be converted</h2>{_errors(view)}",
    )


def load_views(out: Path, datasets: Sequence[str] | None = None) -> list[DatasetView]:
    from us43d.corpus.build import load_states

    infos, records, reports, unusable = load_states(out)
    if not infos and not unusable:
        raise CorpusError(f"{out} holds no built dataset; run `us43d build` first")
    wanted = {d.lower() for d in datasets} if datasets else None
    names = [name for name in infos if wanted is None or name.lower() in wanted]
    if wanted and len(names) < len(wanted):
        missing = sorted(wanted - {n.lower() for n in names})
        raise CorpusError(f"{out} holds no dataset {', '.join(missing)}")
    splits: dict[int, str] = {}
    table_path = out / "parquet" / "images.parquet"
    if table_path.is_file():
        table = pq.read_table(table_path, columns=["image_id", "split"])
        splits = dict(zip(table.column("image_id").to_pylist(), table.column("split").to_pylist()))
    return [DatasetView(name, infos[name].organ, infos[name].categories, records[name], reports[name], splits) for name in names]


def _claim(target: Path) -> None:
    """The report folder must be new, empty, or a report made before: it is rewritten whole."""
    if target.exists() and not target.is_dir():
        raise CorpusError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MARK).is_file():
        raise CorpusError(f"{target} is not empty and holds no us43d report: choose a new folder")
    if (target / MARK).is_file():
        for child in target.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    target.mkdir(parents=True, exist_ok=True)
    (target / MARK).write_text("written by us43d show\n")


def write_report(out: Path, target: Path, datasets: Sequence[str] | None = None) -> Path:
    """The report of `out` in folder `target`; returns the index page."""
    views = load_views(out, datasets)
    _claim(target)
    rows = []
    for view in views:
        (target / f"{view.dataset}.html").write_text(_dataset_page(out, view, target), encoding="utf-8")
        first = target / "img" / view.dataset / "00.png"
        thumb = f'<img src="img/{html.escape(view.dataset)}/00.png" alt="" width="160">' if first.is_file() else ""
        flags = "<br>".join(f'<span class="flag">{html.escape(f)}</span>' for f in view.flags())
        r = view.report
        rows.append(
            f'<tr><td><a href="{html.escape(view.dataset)}.html">{html.escape(view.dataset)}</a></td><td>{thumb}</td>'
            f"<td>{html.escape(view.organ)}</td><td>{len(view.records)}</td>"
            f"<td>{sum(len(x.annotations) for x in view.records)}</td>"
            f"<td>{r.get('found', 0)}{' / ' + str(r['expected']) if r.get('expected') else ''}</td>"
            f"<td>{len(r.get('errors', []))}</td><td>{r.get('cleaned_pixels', 0)}</td><td>{flags}</td></tr>"
        )
    index = target / "index.html"
    index.write_text(
        _page(
            "us43d corpus report",
            f"<h1>Corpus report: {html.escape(str(out))}</h1><p>{len(views)} datasets. Look at the flags first.</p>"
            "<table><tr><th>dataset</th><th></th><th>organ</th><th>images</th><th>instances</th><th>found / expected</th>"
            f"<th>errors</th><th>cleaned px</th><th>flags</th></tr>{''.join(rows)}</table>",
        ),
        encoding="utf-8",
    )
    return index


def find_record(out: Path, key: str) -> tuple[ImageRecord, tuple[str, ...]]:
    """An image of the corpus by `<dataset>/<key>` or its file name (`<dataset>/<key>.png`)."""
    dataset, _, rest = key.removesuffix(".png").partition("/")
    for view in load_views(out, [dataset] if rest else None):
        for record in view.records:
            if record.key == rest or record.file_name.removesuffix(".png") == key.removesuffix(".png"):
                return record, view.categories
    raise CorpusError(f"no image '{key}' in {out} (give <dataset>/<key>, as in the COCO file_name)")


def write_item(out: Path, key: str, target: Path) -> Path:
    """One full-size overlay PNG, for a bug report; never written over an existing file."""
    record, categories = find_record(out, key)
    if target.is_dir():
        target = target / (record.file_name.replace("/", "__"))
    if target.exists():
        raise CorpusError(f"{target} exists: choose another path")
    write_overlay(out, record, categories, target)
    return target
