"""us43d: the US-43d ultrasound segmentation corpus and UltraSam tooling."""

__version__ = "0.1.0"
