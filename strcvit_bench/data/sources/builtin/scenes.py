"""VQA over composed scenes: coloured circles, squares and triangles on a plain background."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from strcvit_bench.data.sources.builtin.render import COLOR_NAMES, PALETTE, background, jitter, scale

SHAPES = ("circle", "square", "triangle")
QUESTION_KINDS = ("count_all", "count_color", "count_shape", "color_of", "shape_of", "exists", "position")


def sample(rng: random.Random) -> dict[str, Any]:
    n = rng.randint(1, 5)
    objects = []
    cells = rng.sample(range(9), n)  # 3x3 grid cells, so objects never overlap
    for cell in cells:
        objects.append({
            "shape": rng.choice(SHAPES),
            "color": rng.choice(COLOR_NAMES),
            "cx": (cell % 3) * 16 + 8 + rng.uniform(-2.5, 2.5),
            "cy": (cell // 3) * 16 + 8 + rng.uniform(-2.5, 2.5),
            "r": rng.uniform(4.0, 6.5),
        })
    return {"objects": objects}


def render(scene: dict[str, Any], size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), background(rng))
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        cx, cy, r = scale(o["cx"], size), scale(o["cy"], size), scale(o["r"], size)
        fill = jitter(PALETTE[o["color"]], rng)
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o["shape"] == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def _unique(objects: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    values = [o[key] for o in objects]
    return [o for o in objects if values.count(o[key]) == 1]


def ask(scene: dict[str, Any], rng: random.Random, kinds: tuple[str, ...] = QUESTION_KINDS) -> tuple[str, str]:
    objs = scene["objects"]
    kinds = list(kinds)
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "count_all":
            return "How many shapes are there?", str(len(objs))
        if kind == "count_color":
            color = rng.choice(objs)["color"] if rng.random() < 0.7 else rng.choice(COLOR_NAMES)
            return f"How many {color} shapes are there?", str(sum(o["color"] == color for o in objs))
        if kind == "count_shape":
            shape = rng.choice(objs)["shape"] if rng.random() < 0.7 else rng.choice(SHAPES)
            return f"How many {shape}s are there?", str(sum(o["shape"] == shape for o in objs))
        if kind == "color_of" and _unique(objs, "shape"):
            o = rng.choice(_unique(objs, "shape"))
            return f"What color is the {o['shape']}?", o["color"]
        if kind == "shape_of" and _unique(objs, "color"):
            o = rng.choice(_unique(objs, "color"))
            return f"What shape is the {o['color']} object?", o["shape"]
        if kind == "exists":
            if rng.random() < 0.5:
                o = rng.choice(objs)
                color, shape = o["color"], o["shape"]
            else:
                color, shape = rng.choice(COLOR_NAMES), rng.choice(SHAPES)
            present = any(o["color"] == color and o["shape"] == shape for o in objs)
            return f"Is there a {color} {shape}?", "yes" if present else "no"
        if kind == "position":
            singles = [o for o in objs if sum(p["color"] == o["color"] and p["shape"] == o["shape"]
                                              for p in objs) == 1 and abs(o["cx"] - 24) > 6]
            if singles:
                o = rng.choice(singles)
                side = "left" if o["cx"] < 24 else "right"
                return f"Is the {o['color']} {o['shape']} on the left or the right?", side
    return "How many shapes are there?", str(len(objs))


def describe(scene: dict[str, Any]) -> str:
    return ", ".join(f"{o['color']} {o['shape']}" for o in scene["objects"])
