"""Charts: bar, line and pie charts whose values must be read off the plot."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from strcvit_bench.data.sources.builtin.render import COLOR_NAMES, PALETTE, jitter, scale

QUESTION_KINDS = ("value_of", "largest", "smallest", "count", "peak_position")
ORDINALS = ("first", "second", "third", "fourth", "fifth")


def sample(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(("bar", "bar", "line", "pie"))
    n = rng.randint(3, 4) if kind != "line" else rng.randint(4, 5)
    while True:
        values = [rng.randint(1, 9) for _ in range(n)]
        if values.count(max(values)) == 1 and values.count(min(values)) == 1:
            break
    colors = rng.sample(COLOR_NAMES, n) if kind != "line" else [rng.choice(COLOR_NAMES)] * n
    return {"kind": kind, "values": values, "colors": colors}


def render(scene: dict[str, Any], size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), jitter((245, 245, 240), rng, 8))
    draw = ImageDraw.Draw(img)
    values, colors = scene["values"], scene["colors"]
    left, bottom, top, right = scale(5, size), size - scale(4, size), scale(3, size), size - scale(2, size)
    unit = (bottom - top) / 10
    if scene["kind"] == "pie":
        box = [scale(6, size), scale(6, size), size - scale(6, size), size - scale(6, size)]
        start = rng.uniform(0, 360)
        total = sum(values)
        for v, c in zip(values, colors, strict=True):
            extent = 360 * v / total
            draw.pieslice(box, start, start + extent, fill=jitter(PALETTE[c], rng))
            start += extent
        return img
    for k in range(1, 10, 2):  # gridlines every 2 units make values readable
        y = bottom - k * unit
        draw.line([(left, y), (right, y)], fill=(215, 215, 215))
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(40, 40, 40))
    n = len(values)
    step = (right - left) / n
    if scene["kind"] == "bar":
        for i, (v, c) in enumerate(zip(values, colors, strict=True)):
            x0 = left + i * step + step * 0.18
            draw.rectangle([x0, bottom - v * unit, x0 + step * 0.64, bottom - 1], fill=jitter(PALETTE[c], rng))
    else:
        pts = [(left + (i + 0.5) * step, bottom - v * unit) for i, v in enumerate(values)]
        draw.line(pts, fill=PALETTE[colors[0]], width=max(1, scale(1.5, size)))
        for x, y in pts:
            r = scale(1.2, size)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(30, 30, 30))
    return img


def ask(scene: dict[str, Any], rng: random.Random, kinds: tuple[str, ...] = QUESTION_KINDS) -> tuple[str, str]:
    values, colors, kind = scene["values"], scene["colors"], scene["kind"]
    options: list[tuple[str, str]] = []
    noun = {"bar": "bar", "pie": "slice", "line": "point"}[kind]
    if "value_of" in kinds and kind == "bar":
        i = rng.randrange(len(values))
        options.append((f"What is the value of the {colors[i]} bar?", str(values[i])))
    if "value_of" in kinds and kind == "line":
        i = rng.randrange(len(values))
        options.append((f"What is the value of the {ORDINALS[i]} point?", str(values[i])))
    if "largest" in kinds and kind != "line":
        options.append((f"Which {noun} is the largest?", colors[values.index(max(values))]))
    if "smallest" in kinds and kind != "line":
        options.append((f"Which {noun} is the smallest?", colors[values.index(min(values))]))
    if "count" in kinds:
        options.append((f"How many {noun}s are in the chart?", str(len(values))))
    if "peak_position" in kinds and kind == "line":
        options.append(("At which point is the line highest?", ORDINALS[values.index(max(values))]))
    if not options:
        options.append((f"How many {noun}s are in the chart?", str(len(values))))
    return rng.choice(options)


def describe(scene: dict[str, Any]) -> str:
    parts = " ".join(f"{c} {v}" for c, v in zip(scene["colors"], scene["values"], strict=True))
    return f"{scene['kind']} chart {parts}"
