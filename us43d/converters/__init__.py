"""Per-dataset converters (one module each) and the shared readers they stand on."""

from us43d.converters.base import Item, Sample, load_converter

__all__ = ["Item", "Sample", "load_converter"]
