"""A loss-curve PNG drawn with Pillow, so training needs no plotting library."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"loss": (31, 119, 180), "focal": (255, 127, 14), "dice": (44, 160, 44), "iou": (214, 39, 40)}


def plot_losses(metrics: Path, out: Path, size: tuple[int, int] = (800, 480)) -> bool:
    """One line per loss term against the step; focal is drawn x20 as it enters the total."""
    if not metrics.is_file():
        return False
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in records if all(k in r for k in COLOURS)]  # validation records carry no losses
    if not rows:
        return False
    width, height = size
    left, right, top, bottom = 60, 20, 20, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    steps = [r["step"] for r in rows]
    series = {k: [r[k] * (20 if k == "focal" else 1) for r in rows] for k in COLOURS}
    top_value = max(max(v) for v in series.values()) or 1.0
    x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - x0) / (x1 - x0) * (width - left - right)
        y = height - bottom - value / top_value * (height - top - bottom)
        return x, y

    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black")
    draw.text((5, top), f"{top_value:.3g}", fill="black")
    draw.text((5, height - bottom - 10), "0", fill="black")
    draw.text((left, height - bottom + 10), f"step {x0}", fill="black")
    draw.text((width - right - 80, height - bottom + 10), f"step {x1}", fill="black")
    for index, (name, values) in enumerate(series.items()):
        points = [xy(s, v) for s, v in zip(steps, values)]
        if len(points) > 1:
            draw.line(points, fill=COLOURS[name], width=2)
        draw.text((width - right - 120, top + 15 * index), name + (" x20" if name == "focal" else ""), fill=COLOURS[name])
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return True
