"""Finding, parsing and indexing registry entries.

The package ships the 43 US-43d entries; users add directories of their own (private datasets)
through `US43D_REGISTRY_PATH` or `--registry`. Every entry is validated on load, and an invalid
one is refused with its file and field named rather than skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from us43d.errors import RegistryError
from us43d.registry.schema import DatasetEntry

BUILTIN_DIR = Path(__file__).parent / "datasets"
ENV_VAR = "US43D_REGISTRY_PATH"


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"invalid registry entry {path}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  field '{where}': {item['msg']}")
    return "\n".join(lines)


def parse_entry(path: Path) -> DatasetEntry:
    """Parse one YAML file; the error names the file and each offending field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RegistryError(f"invalid registry entry {path}: not valid YAML ({exc})") from exc
    except OSError as exc:
        raise RegistryError(f"cannot read registry entry {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"invalid registry entry {path}: expected a mapping at the top level")
    try:
        entry = DatasetEntry.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(_format_validation_error(path, exc)) from exc
    if path.stem.lower() != entry.id.lower():
        raise RegistryError(f"invalid registry entry {path}: field 'id': '{entry.id}' does not match the file name")
    return entry


def user_registry_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Directories named by the environment variable, then those given on the command line."""
    dirs = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return dirs + [Path(p) for p in extra]


@dataclass(frozen=True)
class Registry:
    """All known datasets, looked up case-insensitively by id."""

    entries: dict[str, DatasetEntry]
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def load(cls, extra_dirs: Sequence[Path] = (), include_builtin: bool = True) -> Registry:
        dirs = ([BUILTIN_DIR] if include_builtin else []) + user_registry_dirs(extra_dirs)
        entries: dict[str, DatasetEntry] = {}
        files: dict[str, Path] = {}
        for directory in dirs:
            if not directory.is_dir():
                raise RegistryError(f"registry directory {directory} does not exist")
            for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
                entry = parse_entry(path)
                key = entry.id.lower()
                if key in entries:
                    raise RegistryError(
                        f"invalid registry entry {path}: field 'id': '{entry.id}' is already defined in {files[key]}"
                    )
                if directory == BUILTIN_DIR and "." in entry.converter:
                    raise RegistryError(
                        f"invalid registry entry {path}: field 'converter': a built-in entry names a built-in module"
                    )
                entries[key] = entry
                files[key] = path
        ordered = dict(sorted(entries.items()))
        return cls(ordered, {k: files[k] for k in ordered})

    def __iter__(self) -> Iterator[DatasetEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, dataset_id: object) -> bool:
        return isinstance(dataset_id, str) and dataset_id.lower() in self.entries

    @property
    def ids(self) -> list[str]:
        return [entry.id for entry in self.entries.values()]

    def get(self, dataset_id: str) -> DatasetEntry:
        try:
            return self.entries[dataset_id.lower()]
        except KeyError:
            raise RegistryError(f"unknown dataset id '{dataset_id}' (see `us43d list`)") from None

    def resolve(self, dataset_ids: Iterable[str]) -> list[DatasetEntry]:
        """Entries for the given ids, in the order given, duplicates removed."""
        seen: dict[str, DatasetEntry] = {}
        for dataset_id in dataset_ids:
            entry = self.get(dataset_id)
            seen.setdefault(entry.id, entry)
        return list(seen.values())

    def organs(self) -> list[str]:
        return sorted({entry.organ for entry in self})

    def filter(self, organ: str | None = None, modality: str | None = None, access: str | None = None) -> list[DatasetEntry]:
        return [
            e
            for e in self
            if (organ is None or e.organ == organ.lower())
            and (modality is None or e.modality == modality.lower())
            and (access is None or e.access == access.lower())
        ]

    def entry_hash(self, dataset_id: str) -> str:
        return _hash_json(self.get(dataset_id).model_dump(mode="json"))

    def digest(self) -> str:
        """One hash of every entry, recorded in build.json so a corpus names its registry."""
        return _hash_json({e.id: e.model_dump(mode="json") for e in self})


def _hash_json(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
