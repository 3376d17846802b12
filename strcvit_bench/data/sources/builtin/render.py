"""Drawing helpers shared by the generators: a fixed palette and Pillow's bundled fonts.

Only fonts that ship inside Pillow are used so that the same seed renders the same pixels on
every machine (system fonts differ between machines).
"""

from __future__ import annotations

import functools
import random

from PIL import ImageFont

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 80, 215),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 175),
    "orange": (240, 135, 25),
}
COLOR_NAMES = tuple(PALETTE)


def jitter(color: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    """Shade variation so a colour name covers a range of pixel values, not one RGB triple.

    One 24-bit draw gives the three offsets (this runs tens of times per image, and three
    `randint` calls per colour were a quarter of the build time); each byte is looked up in
    the colour's table of shades, the clamped sum a byte gives, made once per colour."""
    bits = rng.getrandbits(24)
    r, g, b = _shades(color, amount)
    return r[bits & 0xFF], g[(bits >> 8) & 0xFF], b[bits >> 16]


@functools.lru_cache(maxsize=256)
def _shades(color: tuple[int, int, int], amount: int) -> tuple[tuple[int, ...], ...]:
    """For each channel c and byte v: min(255, max(0, c + v·(2·amount + 1) // 256 − amount))."""
    span = 2 * amount + 1
    return tuple(tuple(min(255, max(0, c + (v * span >> 8) - amount)) for v in range(256)) for c in color)


def background(rng: random.Random) -> tuple[int, int, int]:
    base = rng.choice([(235, 235, 230), (205, 205, 200), (60, 60, 65), (240, 225, 200), (200, 220, 235)])
    return jitter(base, rng, 12)


@functools.lru_cache(maxsize=64)
def font(kind: str, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if kind == "bitmap":
        return ImageFont.load_default_imagefont()
    return ImageFont.load_default(size=size)


def scale(value: float, size: int) -> int:
    """Lengths are designed for a 48 px canvas and scaled to the configured size."""
    return max(1, round(value * size / 48))
