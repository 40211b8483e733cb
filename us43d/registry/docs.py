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

"""


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _test(entry: DatasetEntry) -> str:
    return entry.test_split.how or "" if entry.test_split.kind == "official" else "none"


def _expected(entry: DatasetEntry) -> str:
    return f"{entry.expected.images:,}" if entry.expected.images is not None else "?"


def render_datasets_md(registry: Registry) -> str:
    entries = list(registry)
    lines = [HEADER]
    organs = sorted({e.organ for e in entries})
    lines.append(f"{len(entries)} datasets, {len(organs)} organ groups ({', '.join(organs)}).\n\n")
    lines.append("| id | organ | application | modality | access | categories | official test split | images | licence |\n")
    lines.append("|---|---|---|---|---|---|---|---|---|\n")
    for e in entries:
        lines.append(
            f"| [{e.id}](#{e.id.lower()}) | {e.organ} | {_cell(e.application)} | {e.modality} | {e.access} | "
            f"{_cell(', '.join(e.categories))} | {_cell(_test(e))} | {_expected(e)} | {_cell(e.licence)} |\n"
        )
    for e in entries:
        lines.append(f"\n## {e.id}\n\n**{_cell(e.name)}**\n\n{e.description.strip()}\n\n")
        if e.homepage:
            lines.append(f"- homepage: <{e.homepage}>\n")
        if e.citation.doi:
            lines.append(f"- DOI: [{e.citation.doi}](https://doi.org/{e.citation.doi})\n")
        lines.append(f"- groups (kept on one side of every split): {e.group_by or 'each image'}\n")
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
    return "".join(lines)
