"""Captions and generic questions over the other families' visual worlds, for pre-training.

A LoRA method adapts a *pre-trained* model; a randomly initialised tiny base would learn
perception and the task at once, which hides forgetting. This generator describes scenes of
every family ("red circle, blue square", "text cat dog") and asks generic questions that no
stream task asks (what kind of image it is, what the description of one part is), so
pre-training on it teaches seeing and answering, not the benchmark's tasks.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

QUESTION_KINDS = ("describe", "kind")
_PROMPTS = ("Describe the image.", "What do you see?", "Give a short description of the picture.")
_KIND_PROMPTS = ("What kind of image is this?", "What type of picture is this?")
_KIND = {"scenes": "shapes", "ocr": "text", "charts": "chart", "remote_sensing": "aerial"}


def _families():
    from strcvit_bench.data.sources.builtin import charts, ocr, remote_sensing, scenes

    return {"scenes": scenes, "ocr": ocr, "charts": charts, "remote_sensing": remote_sensing}


# text is drawn twice as often: glyphs are what a small vision transformer learns last
_WEIGHTS = {"charts": 1, "ocr": 2, "remote_sensing": 1, "scenes": 1}


def sample(rng: random.Random) -> dict[str, Any]:
    family = rng.choices(sorted(_WEIGHTS), weights=[_WEIGHTS[k] for k in sorted(_WEIGHTS)])[0]
    return {"family": family, "inner": _families()[family].sample(rng)}


def render(scene: dict[str, Any], size: int, rng: random.Random) -> Image.Image:
    return _families()[scene["family"]].render(scene["inner"], size, rng)


def ask(scene: dict[str, Any], rng: random.Random, kinds: tuple[str, ...] = QUESTION_KINDS) -> tuple[str, str]:
    if "kind" in kinds and (rng.random() < 0.2 or "describe" not in kinds):
        return rng.choice(_KIND_PROMPTS), _KIND[scene["family"]]
    return rng.choice(_PROMPTS), describe(scene)


def describe(scene: dict[str, Any]) -> str:
    return _families()[scene["family"]].describe(scene["inner"])
