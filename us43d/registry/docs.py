"""DATASETS.md, generated from the registry so the two can never disagree."""

from __future__ import annotations

from us43d.registry.loader import Registry
from us43d.registry.schema import DatasetEntry

HEADER = """# US-43d datasets

Generated from the registry by `us43d docs` — do not edit by hand; edit the YAML entries in
`us43d/registry/datasets/` and regenerate. A test fails when this file is stale.

Access: **open** downloads without an account; **credentials** needs an account token (Kaggle);
**manual** needs a person (a form, an agreement, a cloud-drive page), after which
`us43d fetch ID --from FILE` imports the file.

Verified: **real files** when the converter was checked on real files of the release,
**partly** when some of it still rests on documentation, **documentation** when nothing has met
a real file yet. Each section below says what was checked and what was not. Cleaning: whether
annotation pixels outside the scan's field of view are removed (see the README).

"""


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _test(entry: DatasetEntry) -> str:
    return entry.test_split.how or "" if entry.test_split.kind == "official" else "none"


def _expected(entry: DatasetEntry) -> str:
    if entry.expected.images is not None:
        return f"{entry.expected.images:,}"
    return f"{entry.expected.sequences:,} sequences" if entry.expected.sequences is not None else "?"


def _cleaning(entry: DatasetEntry) -> str:
    state = "on" if entry.cleans_background else "off"
    origin = f"the {entry.modality} default" if entry.cleaning.background_overlap is None else "set by the entry"
    note = f" {entry.cleaning.note.strip()}" if entry.cleaning.note else ""
    return f"{state} ({origin}).{note}"


def render_datasets_md(registry: Registry) -> str:
    entries = list(registry)
    lines = [HEADER]
    organs = sorted({e.organ for e in entries})
    lines.append(f"{len(entries)} datasets, {len(organs)} organ groups ({', '.join(organs)}).\n\n")
    lines.append(
        "| id | organ | application | modality | access | categories | official test split | images | licence "
        "| verified | cleaning |\n"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|\n")
    for e in entries:
        lines.append(
            f"| [{e.id}](#{e.id.lower()}) | {e.organ} | {_cell(e.application)} | {e.modality} | {e.access} | "
            f"{_cell(', '.join(e.categories))} | {_cell(_test(e))} | {_expected(e)} | {_cell(e.licence)} "
            f"| {e.verified.level} | {'on' if e.cleans_background else 'off'} |\n"
        )
    for e in entries:
        lines.append(f"\n## {e.id}\n\n**{_cell(e.name)}**\n\n{e.description.strip()}\n\n")
        if e.homepage:
            lines.append(f"- homepage: <{e.homepage}>\n")
        if e.citation.doi:
            lines.append(f"- DOI: [{e.citation.doi}](https://doi.org/{e.citation.doi})\n")
        lines.append(f"- groups (kept on one side of every split): {e.group_by or 'each image'}\n")
        if e.classes:
            lines.append(f"- image-level classes (the corpus's `label`, `us43d classify`): {_cell(', '.join(e.classes))}\n")
        if e.slicing_axis:
            lines.append(f"- slicing: {e.slicing_axis}. {e.slicing_note or ''}\n")
        if e.expected.note:
            lines.append(f"- counts: {e.expected.note}\n")
        for source in e.sources:
            where = f"{source.kind} `{source.location}`" + (f" @ `{source.ref}`" if source.ref else "")
            files = ", ".join(f"`{f.name}`" for f in source.files)
            lines.append(f"- source: {where}{' — ' + files if files else ''}\n")
            if source.instructions:
                lines.append(f"  - what to do: {source.instructions}\n")
            if source.note:
                lines.append(f"  - note: {source.note}\n")
        if e.notes:
            lines.append(f"- notes: {e.notes.strip()}\n")
        lines.append(f"- cleaning: {_cleaning(e)}\n")
        if e.verified.real_files:
            lines.append(f"- verified on real files: {e.verified.real_files.strip()}\n")
        if e.verified.documentation_only:
            lines.append(f"- from documentation only: {e.verified.documentation_only.strip()}\n")
    return "".join(lines)
