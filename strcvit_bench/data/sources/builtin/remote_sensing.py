"""Remote sensing: aerial-like top-down scenes of land cover, roads, buildings and water."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from strcvit_bench.data.sources.builtin.render import jitter, scale

COVERS: dict[str, tuple[int, int, int]] = {
    "cropland": (190, 160, 90),
    "forest": (35, 90, 40),
    "grassland": (120, 180, 80),
    "bare": (210, 195, 160),
    "water": (50, 90, 170),
}
QUESTION_KINDS = ("road", "water", "buildings", "cover", "building_presence")


def sample(rng: random.Random) -> dict[str, Any]:
    main = rng.choice(tuple(COVERS))
    others = [c for c in COVERS if c not in (main, "water")]
    # a 4x4 grid of patches: the main cover takes a clear majority
    cells = [main] * 16
    for idx in rng.sample(range(16), rng.randint(0, 6)):
        cells[idx] = rng.choice(others)
    lake = main != "water" and rng.random() < 0.4
    roads = []
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        if rng.random() < 0.5:
            roads.append(("h", rng.uniform(8, 40)))
        else:
            roads.append(("v", rng.uniform(8, 40)))
    n_buildings = 0 if main == "water" else rng.choice((0, 0, 1, 2, 3, 4, 5))
    buildings = [(rng.uniform(4, 42), rng.uniform(4, 42)) for _ in range(n_buildings)]
    return {"cells": cells, "main": main, "lake": lake, "roads": roads, "buildings": buildings}


def render(scene: dict[str, Any], size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    cell = size / 4
    for i, cover in enumerate(scene["cells"]):
        x, y = (i % 4) * cell, (i // 4) * cell
        draw.rectangle([x, y, x + cell, y + cell], fill=jitter(COVERS[cover], rng, 14))
        if cover == "cropland":  # furrows
            for k in range(1, 4):
                draw.line([(x, y + k * cell / 4), (x + cell, y + k * cell / 4)], fill=jitter((160, 130, 70), rng))
        elif cover == "forest":  # canopy dots
            for _ in range(3):
                px, py = x + rng.uniform(0, cell), y + rng.uniform(0, cell)
                r = scale(1.5, size)
                draw.ellipse([px - r, py - r, px + r, py + r], fill=jitter((20, 60, 25), rng))
    if scene["lake"]:
        cx, cy, r = scale(rng.uniform(14, 34), size), scale(rng.uniform(14, 34), size), scale(7, size)
        draw.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=jitter(COVERS["water"], rng, 10))
    for direction, pos in scene["roads"]:
        p, w = scale(pos, size), max(1, scale(2, size))
        line = [(0, p), (size, p)] if direction == "h" else [(p, 0), (p, size)]
        draw.line(line, fill=jitter((115, 115, 115), rng, 8), width=w)
    for bx, by in scene["buildings"]:
        x, y, s = scale(bx, size), scale(by, size), scale(2.5, size)
        draw.rectangle([x - s, y - s, x + s, y + s], fill=jitter((150, 45, 40), rng, 15))
    return img


def ask(scene: dict[str, Any], rng: random.Random, kinds: tuple[str, ...] = QUESTION_KINDS) -> tuple[str, str]:
    options: list[tuple[str, str]] = []
    has_water = scene["lake"] or scene["main"] == "water" or "water" in scene["cells"]
    if "road" in kinds:
        options.append(("Is there a road in the image?", "yes" if scene["roads"] else "no"))
    if "water" in kinds:
        options.append(("Is there water in the image?", "yes" if has_water else "no"))
    if "buildings" in kinds:
        options.append(("How many buildings are there?", str(len(scene["buildings"]))))
    if "building_presence" in kinds:
        options.append(("Are there buildings in this area?", "yes" if scene["buildings"] else "no"))
    if "cover" in kinds:
        options.append(("What is the main land cover?", scene["main"]))
    if not options:
        options.append(("What is the main land cover?", scene["main"]))
    return rng.choice(options)


def describe(scene: dict[str, Any]) -> str:
    parts = [f"aerial view of {scene['main']}"]
    if scene["roads"]:
        parts.append(f"{len(scene['roads'])} road")
    if scene["buildings"]:
        parts.append(f"{len(scene['buildings'])} buildings")
    if scene["lake"]:
        parts.append("lake")
    return " ".join(parts)
