"""OCR: short words and numbers rendered with varying fonts, sizes, colours and backgrounds."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from strcvit_bench.data.sources.builtin.render import font, jitter, scale

WORDS = (
    "cat", "dog", "sun", "map", "box", "key", "red", "sky", "car", "bus", "cup", "pen",
    "hat", "egg", "fox", "owl", "tree", "fish", "bird", "star", "moon", "rain", "lake", "book",
)
QUESTION_KINDS = ("read_all", "first_word", "second_word", "read_number")
_COLORS = ((20, 20, 20), (240, 240, 240), (200, 30, 30), (30, 60, 200), (20, 130, 40), (120, 40, 150))


def sample(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.25:
        tokens = [str(rng.randint(0, 30))]
    else:
        tokens = rng.sample(WORDS, rng.choice((1, 1, 1, 2)))
    fg = rng.choice(_COLORS)
    bg = rng.choice([c for c in _COLORS if sum(abs(a - b) for a, b in zip(c, fg, strict=True)) > 250])
    return {
        "tokens": tokens,
        "fg": fg,
        "bg": bg,
        "font": rng.choice(("vector", "vector", "bitmap")),
        "font_size": rng.uniform(15.0, 19.0),
        "bold": rng.random() < 0.3,
        "dx": rng.uniform(-3, 3),
        "dy": rng.uniform(-3, 3),
    }


def render(scene: dict[str, Any], size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), jitter(scene["bg"], rng, 10))
    draw = ImageDraw.Draw(img)
    f = font(scene["font"], scale(scene["font_size"], size))
    lines = scene["tokens"]
    line_h = size / (len(lines) + 1)
    for i, token in enumerate(lines):
        x0, y0, x1, y1 = draw.textbbox((0, 0), token, font=f)
        x = (size - (x1 - x0)) / 2 - x0 + scale(scene["dx"], size)
        y = line_h * (i + 1) - (y1 - y0) / 2 - y0 + scale(scene["dy"], size)
        draw.text((x, y), token, fill=jitter(scene["fg"], rng, 10), font=f,
                  stroke_width=1 if scene["bold"] else 0, stroke_fill=jitter(scene["fg"], rng, 10))
    return img


def ask(scene: dict[str, Any], rng: random.Random, kinds: tuple[str, ...] = QUESTION_KINDS) -> tuple[str, str]:
    tokens = scene["tokens"]
    if tokens[0].isdigit():
        if "read_number" in kinds:
            return rng.choice(("What number is shown?", "Which number is written?")), tokens[0]
        return "What is written in the image?", tokens[0]
    options = []
    if "read_all" in kinds:
        options.append((rng.choice(("What is written in the image?", "What does the text say?")),
                        " ".join(tokens)))
    if len(tokens) == 2 and "first_word" in kinds:
        options.append(("What is the first word?", tokens[0]))
    if len(tokens) == 2 and "second_word" in kinds:
        options.append(("What is the second word?", tokens[1]))
    if not options:
        options.append(("What is written in the image?", " ".join(tokens)))
    return rng.choice(options)


def describe(scene: dict[str, Any]) -> str:
    return "text " + " ".join(scene["tokens"])
