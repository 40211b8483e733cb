"""Downloading, verifying and extracting the registry's sources."""
