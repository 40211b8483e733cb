"""Training and evaluation of SAM-style promptable segmenters on a built corpus (needs torch)."""
