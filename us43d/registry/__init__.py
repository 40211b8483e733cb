"""Dataset registry: one validated YAML entry per dataset."""

from us43d.registry.loader import Registry, parse_entry
from us43d.registry.schema import DatasetEntry

__all__ = ["DatasetEntry", "Registry", "parse_entry"]
