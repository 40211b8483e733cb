"""Loss curves and click curves as PNGs drawn with Pillow, so training and evaluation need no plotting library."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
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


# matplotlib's ten default colours, cycled when a plot has more datasets than that
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def click_curves_png(curves: Mapping[str, Mapping[str, Sequence[float]]], size: tuple[int, int] = (1000, 460)) -> bytes:
    """PNG bytes of mean Dice (left) and IoU (right), in percent, against the number of
    clicks: one line per dataset ({dataset: {"dice": [...], "iou": [...]}}), the same colour
    in both panels; a dataset with one click is a dot. The y axes run 0 to 100 so runs compare.
    The legend lists the datasets below the panels, so the image grows by a line per dataset."""
    legend = 14 * len(curves)
    width, height = size[0], size[1] + legend
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    rounds = max([len(c["dice"]) for c in curves.values()] + [1])  # a dataset without instances has no values
    left, right, top, bottom = 45, 15, 30, 45 + legend
    panel = (width - left - 2 * right) // 2
    for column, metric in enumerate(("dice", "iou")):
        x_start = left + column * (panel + right + left // 2)
        x_end = x_start + panel - left // 2

        def xy(click: int, value: float, x_start: int = x_start, x_end: int = x_end) -> tuple[float, float]:
            x = x_start + (click - 1) / max(rounds - 1, 1) * (x_end - x_start)
            return x, height - bottom - value / 100 * (height - top - bottom)

        draw.line([(x_start, top), (x_start, height - bottom), (x_end, height - bottom)], fill="black")
        draw.text((x_start, 8), f"mean {'Dice' if metric == 'dice' else 'IoU'} (%)", fill="black")
        for value in (0, 50, 100):
            draw.text((x_start - 28, xy(1, value)[1] - 6), str(value), fill="black")
        for click in sorted({1, rounds}):
            draw.text((xy(click, 0)[0] - 3, height - bottom + 5), str(click), fill="black")
        draw.text(((x_start + x_end) // 2 - 20, height - bottom + 20), "clicks", fill="black")
        for index, values in enumerate(c[metric] for c in curves.values()):
            colour = PALETTE[index % len(PALETTE)]
            points = [xy(click, value) for click, value in enumerate(values, start=1)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    for index, name in enumerate(curves):
        draw.text((left, height - legend + 14 * index - 4), name, fill=PALETTE[index % len(PALETTE)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
